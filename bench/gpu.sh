#!/usr/bin/env bash
# Our training step on `cuda` against the PyTorch reference on this GPU, in one call. Builds
# nothing: it runs a `byol` built elsewhere with `--features cuda` (BYOL_BIN, or
# target/release/byol, or dist/byol-cuda.xz made by bench/pack-cuda.sh).
#
# NVRTC needs libnvrtc.so.13 (found in the PyTorch environment's `nvidia` wheels) and CUDA
# headers (CUDA_PATH; else the wheels' include folders, else dist/cuda from bench/pack-cuda.sh).
#
#   bench/gpu.sh                      # r18c32 and r50i224, f32 (TF32 allowed in the reference) and bf16
#   PYTHON=/path/to/venv/bin/python STEPS=20 bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
REF=${BYOL_REFERENCE:-../shared/reference/byol_torch.py}
[ -f "$REF" ] || REF=shared/reference/byol_torch.py
STEPS=${STEPS:-20}
WARM=${WARM:-5}
BYOL=${BYOL_BIN:-target/release/byol}
if [ ! -x "$BYOL" ] && [ -f dist/byol-cuda.xz ]; then
  BYOL=$(mktemp -d)/byol
  xz -dc dist/byol-cuda.xz > "$BYOL"
  chmod +x "$BYOL"
fi
NV=$("$PY" -c 'import nvidia, os; print(os.path.dirname(nvidia.__file__))' 2>/dev/null || true)
if [ -n "$NV" ]; then
  LIBS=$(find "$NV" -name 'libnvrtc.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd: -)
  export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [ -z "${CUDA_PATH:-}" ]; then
  H=$(find ${NV:+"$NV"} dist/cuda -name cuda_fp16.h 2>/dev/null | head -1 || true)
  [ -n "$H" ] && export CUDA_PATH=$(dirname "$(dirname "$H")")
fi
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
"$PY" "$REF" --configs r18c32,r50i224 --steps "$STEPS" --warm "$WARM" | tee "$OUT/ref.jsonl" >&2
: > "$OUT/ours.jsonl"
for cfg in r18c32 r50i224; do
  for prec in f32 bf16; do
    "$BYOL" bench step --arch "$cfg" --backend cuda --precision "$prec" --steps "$STEPS" --warmup "$WARM" | tee -a "$OUT/ours.jsonl" >&2
  done
done
"$BYOL" bench augment --backend cuda --sizes 32,224 --batch 256 | tee "$OUT/augment.txt" >&2
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo "GPU")
python3 bench/compare.py "$OUT/ref.jsonl" "$OUT/ours.jsonl" "$GPU"
# The view pipeline against what the ResNet-50 step consumes (issue target: at least 3×).
python3 - "$OUT/augment.txt" "$OUT/ours.jsonl" <<'PY'
import json, sys
aug = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
steps = [json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")]
a = next(r for r in aug if r["size"] == 224)
for s in (s for s in steps if s["cfg"] == "r50i224"):
    need = 2 * s["samples_per_s"]
    print(f"224 px: batched pipeline {a['device_views_per_sec']:.0f} views/s; ResNet-50 step ({s['dtype']}) consumes {need:.0f} views/s: {a['device_views_per_sec'] / need:.1f}x")
PY
