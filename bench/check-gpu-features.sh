#!/usr/bin/env bash
# Fails when a GPU build of `byol` would not be burn's fast path: for each of the `cuda` and
# `wgpu` features, burn's CubeCL backend must be compiled with `autotune` (tuned convolution and
# matmul kernels instead of the direct convolution), `fusion` (fused element-wise kernels) and
# `persistence` (tuned choices and compiled kernels kept between processes), and its fusion
# crate with `autotune`. Reads the resolved features with `cargo tree`; builds nothing.
# Run by .ci/run; `bench/check-gpu-features.sh` by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
# features PACKAGE CARGO_FEATURE: the enabled features of PACKAGE in the build with CARGO_FEATURE.
features() {
  cargo tree -q -p byol-cli --features "$2" --prefix none -e normal --format '{p} [{f}]' \
    | sed -n "s/^$1 v[^ ]* \[\([^]]*\)\].*/\1/p" | head -1
}
for backend in cuda wgpu; do
  for want in "burn-cubecl autotune" "burn-cubecl fusion" "burn-cubecl persistence" \
              "burn-cubecl-fusion autotune" "cubecl-runtime persistence"; do
    set -- $want
    have=$(features "$1" "$backend")
    if [[ ",$have," != *",$2,"* ]]; then
      echo "check-gpu-features: the \`$backend\` build compiles $1 without \`$2\` (it has: ${have:-nothing});" \
           "add burn/$2 to the gpu-fast-path feature in crates/byol/Cargo.toml" >&2
      status=1
    fi
  done
done
[ "$status" -eq 0 ] && echo "check-gpu-features: the cuda and wgpu builds have burn's autotune, fusion and persistence"
exit "$status"
