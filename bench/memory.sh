#!/usr/bin/env bash
# Resident memory of pre-training on a large set of tar shards: COUNT (default 200,000) small
# JPEGs from CIFAR-10 in shards of 10,000 written by Python's tarfile (bench/make-shards.py),
# one epoch of the small CPU preset streamed from them, the process's resident set sampled every
# second. Prints the peak, and the spread over the training phase (flat: it does not grow with
# the images read).
#
#   bench/memory.sh                  # 200,000 images, 1 epoch
#   COUNT=50000 bench/memory.sh
#   bench/memory.sh --no-baseline    # flags after the script go to `byol pretrain`
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10}
COUNT=${COUNT:-200000}
CONFIG=${CONFIG:-small-cpu}
VENV=${BYOL_BENCH_VENV:-$HOME/.cache/byol/bench-venv}
[ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV"; "$VENV/bin/pip" install -q pillow; }
cargo build --release -p byol-cli >&2
OUT=${OUT:-$(mktemp -d)}
[ -d "$OUT/shards/train" ] || "$VENV/bin/python" bench/make-shards.py "$DATA" "$OUT/shards" "$COUNT"
rm -rf "$OUT/run"
./target/release/byol pretrain --config "$CONFIG" --data "shards:$OUT/shards" --epochs 1 --run-dir "$OUT/run" "$@" > "$OUT/pretrain.log" 2>&1 &
pid=$!
: > "$OUT/rss.tsv"
start=$(date +%s.%N)
while kill -0 "$pid" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  steps=0
  [ -f "$OUT/run/metrics.jsonl" ] && steps=$(wc -l < "$OUT/run/metrics.jsonl")
  [ -n "$rss" ] && printf '%s\t%s\t%s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$rss" "$steps" >> "$OUT/rss.tsv"
  sleep 1
done
wait "$pid"
tail -3 "$OUT/pretrain.log"
python3 - "$OUT/rss.tsv" "$COUNT" <<'PY'
import sys
rows = [tuple(float(x) for x in l.split()) for l in open(sys.argv[1]) if l.strip()]
last = max(r[2] for r in rows)
train = [r for r in rows if 0 < r[2] < last]  # metrics lines written, the last not yet
evals = [r for r in rows if r[2] == last]     # after the last step: the kNN evaluations
mib = lambda v: v / 1024
steady = train[len(train) // 10:]
print(f"{int(sys.argv[2])} images, {len(rows)} samples (1 s apart):")
print(f"  training, {len(train)} s: {mib(min(r[1] for r in train)):.0f}–{mib(max(r[1] for r in train)):.0f} MiB; "
      f"after its first 10 % (step {steady[0][2]:.0f} of {last:.0f}): {mib(min(r[1] for r in steady)):.0f}–{mib(max(r[1] for r in steady)):.0f} MiB")
for f in (0.1, 0.5, 0.9):
    r = train[int(f * (len(train) - 1))]
    print(f"    at {r[0]:.0f} s, step {r[2]:.0f}: {mib(r[1]):.0f} MiB")
print(f"  evaluations after training (kNN of the trained and the random-init encoder over every image), {len(evals)} s: "
      f"peak {mib(max(r[1] for r in evals)):.0f} MiB")
print(f"  peak of the whole run: {mib(max(r[1] for r in rows)):.0f} MiB")
PY
