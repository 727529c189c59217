#!/usr/bin/env bash
# The `vit-cifar10-cpu` preset's training step on `flex` against the same step in eager PyTorch
# (bench/vit_torch.py) on this CPU: same ViT, heads, optimiser, batch and thread count, one after
# the other in this one run. PyTorch comes from the virtual environment of bench/cpu.sh
# ($BYOL_BENCH_VENV, default ~/.cache/byol/bench-venv, installed there when missing); the tests
# never need it.
#
#   bench/vit-cpu.sh                      # batch 128, 20 timed steps after 3
#   BYOL=target/ci/byol STEPS=10 bench/vit-cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BYOL_BENCH_VENV:-$HOME/.cache/byol/bench-venv}
STEPS=${STEPS:-20}
WARM=${WARM:-3}
BATCH=${BATCH:-128}
THREADS=${THREADS:-$(nproc)}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch   # from PyPI (its CUDA build runs on the CPU when there is no GPU)
fi
if [ -z "${BYOL:-}" ]; then
  cargo build --release -p byol-cli >&2
  BYOL=./target/release/byol
fi
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
"$VENV/bin/python" bench/vit_torch.py --batch "$BATCH" --steps "$STEPS" --warm "$WARM" | tee "$OUT/ref.jsonl" >&2
"$BYOL" bench step --arch vitc32 --backend flex --batch "$BATCH" --steps "$STEPS" --warmup "$WARM" | tee "$OUT/ours.jsonl" >&2
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
python3 bench/compare.py "$OUT/ref.jsonl" "$OUT/ours.jsonl" "$CPU, $THREADS threads, torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
