#!/usr/bin/env bash
# Does timm load what `byol export` writes for a ViT, and give our features? Two tiny runs of the
# `vit-cifar10-cpu` encoder (3 steps on 12 PNG images of CIFAR-10's test split: the fixed
# sine-cosine position embedding with the class token, and a learned one with the mean of the
# patch tokens), each exported, embedded by `byol embed` and run through
# timm.models.vision_transformer.VisionTransformer built by the call the export printed, loaded
# with strict=True (bench/timm_check.py). Needs a Python with torch and timm (PYTHON, default
# the bench environment of bench/cpu.sh, `pip install timm` in it); without one it says so and
# stops, it does not pass.
#
#   bench/timm-check.sh [BYOL_BINARY]      # default target/release/byol
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/byol}")
PY=${PYTHON:-$HOME/.cache/byol/bench-venv/bin/python}
DATA=$(realpath "${BYOL_CIFAR10:-../shared/data/cifar10}")
if ! "$PY" -c "import timm, torch, PIL" 2>/dev/null; then
  echo "NOT RUN: no Python with timm, torch and Pillow at $PY (set PYTHON)" >&2
  exit 2
fi
"$PY" -c "import timm, torch; print(f'timm {timm.__version__}, torch {torch.__version__}')"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$PY" bench/timm_check.py images "$DATA" "$T/images"
MEAN=0.4914,0.4822,0.4465  # vit-cifar10-cpu's [augment] mean and std
STD=0.2470,0.2435,0.2616
for variant in "sincos class-token" "learned mean"; do
  set -- $variant
  echo "== pos-embed $1, pool $2"
  RAYON_NUM_THREADS=1 "$BIN" pretrain --config vit-cifar10-cpu --data "$T/images" --epochs 1 \
    --batch-size 4 --set "model.encoder.pos-embed=\"$1\"" --set "model.encoder.pool=\"$2\"" \
    --set eval.knn.k=3 --set train.knn-every-epochs=0 --run-dir "$T/run-$1" > "$T/pretrain-$1.log" 2>&1
  "$BIN" export --checkpoint "$T/run-$1" --out "$T/$1.safetensors" | tee "$T/export-$1.txt"
  CALL=$(grep -o 'timm\.models\.vision_transformer\.VisionTransformer(.*)' "$T/export-$1.txt")
  "$BIN" embed --checkpoint "$T/run-$1" --data "$T/images" --out "$T/$1.embed.safetensors" > /dev/null
  "$PY" bench/timm_check.py compare "$T/$1.safetensors" "$T/$1.embed.safetensors" "$T/images" "$CALL" "$MEAN" "$STD"
done
