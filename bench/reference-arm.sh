#!/usr/bin/env bash
# The long run's fifth arm: the shared PyTorch reference BYOL (shared/reference/byol_cifar_torch.py)
# on the same 10,000 training images as our arms and the long run's recipe (`cifar10-cpu`'s until
# 0c957d0), 200 epochs (15,600 steps), kNN every 20 epochs, through bench/reference_arm.py, which
# checkpoints every epoch so that the run continues across sessions.
#
#   bench/reference-arm.sh check [BYOL_BINARY]   # the runner against the reference script itself
#   bench/reference-arm.sh run   [BYOL_BINARY]   # start or continue the arm in the background
#
# `check`: the reference script for 2 epochs of a 1,000-image subset against the runner for
# 1 epoch, a resume and 1 epoch; every JSON line must be the same but for the wall time.
# `run`: the subset is the one our arms trained on, read from `byol embed`'s index of the BYOL arm's
# run (its training split is that subset) and laid out as links; the recipe is the long run's,
# cifar10-cpu's until 0c957d0 (CIFAR stem, base width 8, γ = 0 on each block's last BatchNorm, heads
# 512 → 128, batch 128, LARS at 1.0 × 128/256 with η = 0.02 and weight decay 1.5e-6, 0.5 warm-up
# epochs then cosine, τ_base 0.99 cosine, the target initialised on its own, solarisation 0.2 on
# view 2), one thread at the lowest priority; log `reference.log` and records
# `long/reference/seed-0/records.jsonl` in $RUNS.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: bench/reference-arm.sh check|run [BYOL_BINARY]}
BIN=$(realpath "${2:-target/release/byol}")
VENV=${BYOL_BENCH_VENV:-$HOME/.cache/byol/bench-venv}
REF=$(realpath "${BYOL_REFERENCE:-../shared/reference/byol_cifar_torch.py}")
DATA=$(realpath "${BYOL_CIFAR10:-../shared/data/cifar10}")
RUNS=${RUNS:-$HOME/.cache/byol/runs}
PY="$VENV/bin/python"
if [ ! -x "$PY" ] || ! "$PY" -c 'import torch, PIL, numpy' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch pillow numpy
fi
RECIPE=(--batch 128 --width 8 --proj-hidden 512 --proj-out 128 --lr 1.0 --eta 0.02 --wd 1.5e-6
  --tau 0.99 --warmup 0.5 --target-init independent --residual-gamma zero --seed 0 --threads 1)

case "$MODE" in
check)
  OUT=$(mktemp -d)
  trap 'rm -rf "$OUT"' EXIT
  SMALL=(--limit 1000 --epochs 2 --knn-every 1)
  "$PY" "$REF" "$DATA" --minutes 100000 "${SMALL[@]}" "${RECIPE[@]}" > "$OUT/reference.jsonl"
  "$PY" bench/reference_arm.py "$DATA" --reference "$REF" --out "$OUT/arm" --stop-after-epochs 1 \
    "${SMALL[@]}" "${RECIPE[@]}" > /dev/null
  "$PY" bench/reference_arm.py "$DATA" --reference "$REF" --out "$OUT/arm" \
    "${SMALL[@]}" "${RECIPE[@]}" > /dev/null
  "$PY" - "$OUT/reference.jsonl" "$OUT/arm/records.jsonl" <<'PY'
import json, sys
drop = {"train_s", "load_s", "device"}
read = lambda p: [{k: v for k, v in json.loads(l).items() if k not in drop}
                  for l in open(p) if l.startswith("{")]
ref, arm = read(sys.argv[1]), read(sys.argv[2])
for r, a in zip(ref, arm):
    print(("same " if r == a else "DIFFERENT ") + json.dumps(r) + ("" if r == a else "\n     runner: " + json.dumps(a)))
if ref != arm or len(ref) != 3:
    sys.exit("the runner does not reproduce the reference script")
print("the runner reproduces the reference script (2 epochs = 1 + resume + 1)")
PY
  ;;
run)
  SUB="$RUNS/reference-subset"
  if [ ! -d "$SUB/train" ]; then
    # Every arm of the grid trains on the same subset (one seed, one data config): the index is
    # read off the first arm's run folder that holds a checkpoint (`embed` loads the run's config
    # from one; a folder restored from docs/runs/ holds the finished BYOL arm's records alone).
    ARM=$(ls -d "$RUNS"/long/*/seed-0 | while read -r d; do
      ls "$d"/checkpoint-*.safetensors > /dev/null 2>&1 && echo "$d" && break; done)
    [ -n "$ARM" ] || { echo "reference arm: no arm of $RUNS/long holds a checkpoint yet" >&2; exit 1; }
    mkdir -p "$SUB"
    "$BIN" embed --checkpoint "$ARM" --random-init --out "$SUB/index.safetensors" >&2
    "$PY" - "$SUB/index.safetensors" "$DATA" "$SUB" <<'PY'
import json, os, struct, sys
index, data, sub = sys.argv[1:]
with open(index, "rb") as f:
    meta = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))["__metadata__"]
rows = [r for r in json.loads(meta["index"]) if r["split"] == "train"]
for r in rows:
    src = os.path.join(data, "train", r["class"], os.path.basename(r["name"]))
    if not os.path.exists(src):
        sys.exit(f"{src}: named by the index, not in the data")
    os.makedirs(os.path.join(sub, "train", r["class"]), exist_ok=True)
    os.symlink(src, os.path.join(sub, "train", r["class"], os.path.basename(r["name"])))
os.symlink(os.path.join(data, "test"), os.path.join(sub, "test"))
print(f"{len(rows)} training images linked under {sub}/train", file=sys.stderr)
PY
  fi
  OUT="$RUNS/long/reference/seed-0"
  mkdir -p "$OUT"
  nohup nice -n 19 "$PY" bench/reference_arm.py "$SUB" --reference "$REF" --out "$OUT" \
    --epochs 200 --knn-every 20 "${RECIPE[@]}" >> "$RUNS/reference.log" 2>&1 &
  echo "reference arm: pid $!, log $RUNS/reference.log, records $OUT/records.jsonl"
  ;;
*)
  echo "usage: bench/reference-arm.sh check|run [BYOL_BINARY]" >&2
  exit 2
  ;;
esac
