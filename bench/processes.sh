#!/usr/bin/env bash
# The main job (preset `small-cpu`, 230 steps of a global batch of 128) on one process, on two
# thread replicas (`--devices flex:0,flex:1`), and on two MPI processes (`mpirun -np 2`, one core
# each), each seed in turn, with the same binary (built with `--features mpi`); optionally a
# second binary for the two-thread rows (`BEFORE=path`: a build before the gradient buckets) to
# measure what bucketing does. Writes a Markdown table (images/s: the median of the logged values
# after the first 5 steps; kNN top-1 on the held-out images) to stdout and the runs to OUT.
#
#   bench/processes.sh target/release/byol [seeds]     # BEFORE=old-byol OUT=dir optional
set -euo pipefail
BIN=$(realpath "$1")
SEEDS=${2:-"0 1"}
OUT=${OUT:-$(mktemp -d)}
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to core --mca btl self,vader,tcp --mca btl_tcp_if_include lo -x RAYON_NUM_THREADS=1)
row() { # name dir
  python3 - "$1" "$2" <<'EOF'
import json, statistics, sys
name, d = sys.argv[1], sys.argv[2]
m = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
ips = statistics.median(r["images_per_sec"] for r in m if r["step"] > 5)
e = json.load(open(f"{d}/eval.json"))
print(f"| {name} | {ips:.1f} | {e['train_seconds']:.1f} | {e['final_loss']:.4f} | {100 * e['knn']['top1']:.2f} % |")
EOF
}
echo "| run | images/s | training (s) | final loss | kNN top-1 |"
echo "|---|---|---|---|---|"
for s in $SEEDS; do
  "$BIN" pretrain --seed "$s" --no-baseline --run-dir "$OUT/one-$s" >/dev/null 2>&1
  row "seed $s, 1 process" "$OUT/one-$s"
  if [ -n "${BEFORE:-}" ]; then
    "$BEFORE" pretrain --seed "$s" --no-baseline --devices flex:0,flex:1 --run-dir "$OUT/threads-before-$s" >/dev/null 2>&1
    row "seed $s, 2 threads, a gradient all-reduce per parameter" "$OUT/threads-before-$s"
  fi
  "$BIN" pretrain --seed "$s" --no-baseline --devices flex:0,flex:1 --run-dir "$OUT/threads-$s" >/dev/null 2>&1
  row "seed $s, 2 threads, bucketed gradients" "$OUT/threads-$s"
  "${MPIRUN[@]}" -np 2 "$BIN" pretrain --seed "$s" --no-baseline --run-dir "$OUT/mpi-$s" >/dev/null 2>&1
  row "seed $s, 2 MPI processes, one core each" "$OUT/mpi-$s"
done
