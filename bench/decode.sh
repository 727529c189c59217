#!/usr/bin/env bash
# The input path, ours against PyTorch's DataLoader, on the same ImageNet-like JPEGs (CIFAR-10
# images upscaled to 500×375, JPEG quality 90, made here): read, decode, and the two random
# resized crops of the views at 224 px, images per second with 1 and 2 cores (each side pinned
# to the same cores with taskset). Ours also reads the same images from tar shards.
# PyTorch and torchvision are installed into a virtual environment outside the repository the
# first time ($BYOL_BENCH_VENV, default ~/.cache/byol/bench-venv).
#
#   bench/decode.sh                     # 1,000 images, 1 and 2 cores, 3 timed passes
#   PER_CLASS=200 CORES="1 2 4" bench/decode.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BYOL_BENCH_VENV:-$HOME/.cache/byol/bench-venv}
DATA=${DATA:-../shared/data/cifar10}
PER_CLASS=${PER_CLASS:-100}
CORES=${CORES:-1 2}
PASSES=${PASSES:-3}
SIZE=${SIZE:-224}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch, torchvision' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch torchvision
fi
cargo build --release -p byol-cli >&2
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$VENV/bin/python" bench/imagenet-like.py "$DATA/train" "$OUT/images" "$PER_CLASS"
./target/release/byol shard --input "$OUT/images" --out "$OUT/shards" --holdout-fraction 0.01 >&2
: > "$OUT/rows.jsonl"
for n in $CORES; do
  cpus="0-$((n - 1))"
  ours=$(taskset -c "$cpus" ./target/release/byol bench decode --data "$OUT/images" --threads "$n" --passes "$PASSES" --size "$SIZE")
  shards=$(taskset -c "$cpus" ./target/release/byol bench decode --data "shards:$OUT/shards" --threads "$n" --passes "$PASSES" --size "$SIZE")
  pil=$(taskset -c "$cpus" "$VENV/bin/python" bench/decode_torch.py "$OUT/images" --workers "$n" --passes "$PASSES" --size "$SIZE")
  tensor=$(taskset -c "$cpus" "$VENV/bin/python" bench/decode_torch.py "$OUT/images" --workers "$n" --passes "$PASSES" --size "$SIZE" --tensor)
  echo "{\"cores\": $n, \"ours\": $ours, \"ours_shards\": $shards, \"torch_pil\": $pil, \"torch_tensor\": $tensor}" | tee -a "$OUT/rows.jsonl" >&2
done
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
python3 - "$OUT/rows.jsonl" "$CPU" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
r0 = rows[0]
print(f"\n{sys.argv[2]}; {r0['torch_pil']['images']} images of {r0['ours']['first_image_pixels']:.0f} px → 2 crops of {r0['ours']['size']} px; "
      f"torch {r0['torch_pil']['torch']}, torchvision {r0['torch_pil']['torchvision']}, Pillow {r0['torch_pil']['pillow']}")
print("\n| cores | ours, files (img/s) | ours, streamed shards (img/s) | PyTorch, crop on PIL (img/s) | PyTorch, crop on tensor (img/s) | ours / best PyTorch | ours per core |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    best = max(r["torch_pil"]["images_per_sec"], r["torch_tensor"]["images_per_sec"])
    o = r["ours"]["images_per_sec"]
    print(f"| {r['cores']} | {o:.0f} | {r['ours_shards']['images_per_sec']:.0f} | {r['torch_pil']['images_per_sec']:.0f} | "
          f"{r['torch_tensor']['images_per_sec']:.0f} | {o / best:.2f} | {o / r['cores']:.0f} |")
if len(rows) > 1:
    a, b = rows[0], rows[-1]
    s = b["ours"]["images_per_sec"] / a["ours"]["images_per_sec"]
    print(f"\nours: {b['cores']} cores / {a['cores']} = {s:.2f}×")
PY
