#!/usr/bin/env bash
# Prepare what bench/gpu.sh needs on a GPU machine, here (offline build, no GPU needed):
# dist/byol-cuda.xz (the CUDA build, stripped and compressed), dist/cuda/include (the CUDA
# 13.0 headers NVRTC compiles against, unpacked from NVIDIA's PyPI wheels) and
# dist/cifar10-subset.xz (10,000 training and 2,000 test images of ../shared/data/cifar10 for
# the time-to-accuracy run, ~28 MB; needs Pillow and NumPy: PYTHON, default the environment
# bench/cpu.sh makes). Carry `dist` (under the device tool's 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
cargo build --release -p byol-cli --features cuda >&2
strip -o dist/byol-cuda target/release/byol
xz -T0 -9 -f dist/byol-cuda
if [ ! -f dist/cuda/include/cuda_fp16.h ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$tmp" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*"
  mkdir -p dist/cuda/include
  for w in "$tmp"/*.whl; do
    python3 - "$w" dist/cuda/include <<'PY'
import sys, zipfile, os
w, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(w) as z:
    for n in z.namelist():
        if "/include/" in n and not n.endswith("/"):
            rel = n.split("/include/", 1)[1]
            os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
            with open(os.path.join(dest, rel), "wb") as f:
                f.write(z.read(n))
PY
  done
fi
PY=${PYTHON:-$HOME/.cache/byol/bench-venv/bin/python}
if [ ! -f dist/cifar10-subset.xz ]; then
  "$PY" bench/cifar-subset.py pack ../shared/data/cifar10 10000 2000 | xz -T0 -9 > dist/cifar10-subset.xz.tmp
  mv dist/cifar10-subset.xz.tmp dist/cifar10-subset.xz
fi
ls -la dist/byol-cuda.xz dist/cifar10-subset.xz
du -sh dist/cuda
