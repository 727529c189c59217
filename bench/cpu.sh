#!/usr/bin/env bash
# Our training step on `flex` against the PyTorch reference (shared/reference/byol_torch.py) on
# this CPU: same model, same batch, same thread count, one after the other in this one run.
# PyTorch is installed into a virtual environment outside the repository the first
# time ($BYOL_BENCH_VENV, default ~/.cache/byol/bench-venv); the tests never need it.
#
#   bench/cpu.sh                 # both configurations, 20 timed steps each
#   CONFIGS=r18c32 STEPS=20 bench/cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BYOL_BENCH_VENV:-$HOME/.cache/byol/bench-venv}
REF=${BYOL_REFERENCE:-../shared/reference/byol_torch.py}
[ -f "$REF" ] || REF=shared/reference/byol_torch.py
CONFIGS=${CONFIGS:-r18c32,r50i224}
STEPS=${STEPS:-20}
WARM=${WARM:-3}
THREADS=${THREADS:-$(nproc)}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch   # from PyPI (its CUDA build runs on the CPU when there is no GPU)
fi
cargo build --release -p byol-cli >&2
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
: > "$OUT/ref.jsonl"; : > "$OUT/ours.jsonl"
for cfg in ${CONFIGS//,/ }; do
  "$VENV/bin/python" "$REF" --configs "$cfg" --steps "$STEPS" --warm "$WARM" | tee -a "$OUT/ref.jsonl" >&2
  ./target/release/byol bench step --arch "$cfg" --backend flex --steps "$STEPS" --warmup "$WARM" | tee -a "$OUT/ours.jsonl" >&2
done
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
python3 bench/compare.py "$OUT/ref.jsonl" "$OUT/ours.jsonl" "$CPU, $THREADS threads, torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
