#!/usr/bin/env bash
# The detection path end to end, as a benchmark with its own check (not a test: it needs PyTorch,
# which CI does not install): a tiny `byol pretrain` on the built-in data, `byol export`, then
# bench/detect.py makes a few VOC-layout pictures from plain-coloured images, loads the exported
# encoder by its torchvision names as the backbone of torchvision's Faster R-CNN, trains an epoch
# and prints AP50 (detect.py first checks its AP against a hand-worked value). Fails, saying
# why, when any step fails, when the AP is outside [0, 1], or when the file's architecture or the
# number of pictures scored is not what was asked. Installs torch, torchvision and safetensors
# into $BYOL_BENCH_VENV (default ~/.cache/byol/bench-venv) when missing.
#
#   bench/detect-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BYOL_BENCH_VENV:-$HOME/.cache/byol/bench-venv}
if ! "$VENV/bin/python" -c 'import torch, torchvision, safetensors' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch torchvision safetensors pillow numpy
fi
cargo build --release -p byol-cli >&2
BYOL=./target/release/byol
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
$BYOL pretrain --run-dir "$DIR/run" --max-steps 2 --no-baseline --batch-size 16 --epochs 2 \
  --set model.encoder.base-width=4 --set model.projector.hidden=32 --set model.predictor.hidden=32 \
  --set data.image-size=16 --set data.synthetic.train-per-class=8 --set data.synthetic.test-per-class=4 \
  --set eval.knn.k=5 >&2
$BYOL export --checkpoint "$DIR/run" --out "$DIR/enc.safetensors" >&2
# Plain red and blue pictures in a CIFAR-like folder: 6 training and 3 test images per class.
"$VENV/bin/python" - "$DIR/images" <<'PY'
import os, sys
from PIL import Image
for split, n in (("train", 6), ("test", 3)):
    for name, colour in (("red", lambda i: (200, 20 + 10 * i, 20)), ("blue", lambda i: (20, 20 + 10 * i, 200))):
        d = os.path.join(sys.argv[1], split, name)
        os.makedirs(d)
        for i in range(n):
            Image.new("RGB", (32, 32), colour(i)).save(os.path.join(d, f"{i}.png"))
PY
"$VENV/bin/python" bench/detect.py --make-data "$DIR/voc" --cifar "$DIR/images" --train 8 --val 4 --size 64 >&2
"$VENV/bin/python" bench/detect.py --data "$DIR/voc" --encoder "$DIR/enc.safetensors" --epochs 1 --batch 4 --size 64 > "$DIR/out.json"
"$VENV/bin/python" - "$DIR/out.json" <<'PY'
import json, sys
line = json.load(open(sys.argv[1]))
ok = 0.0 <= line["ap50"] <= 1.0 and line["architecture"]["base-width"] == 4 and line["val_images"] == 4
print(json.dumps(line))
print("detect-check:", "ok" if ok else "FAILED", file=sys.stderr)
sys.exit(0 if ok else 1)
PY
