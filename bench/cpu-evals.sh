#!/usr/bin/env bash
# Reproduces the CPU rows of docs/BENCHMARKS.md: the default main job, then the evaluation
# protocols on the CIFAR-10 run made by
#   byol pretrain --config cifar10-cpu --data ../shared/data/cifar10 --run-dir runs/bench-cifar10
# for the trained encoder and for the random-init encoder of the same architecture and seed.
# Prints one line per measurement with its wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p byol-cli
BYOL=target/release/byol
RUN=${1:-runs/bench-cifar10}
t() { local s; s=$(date +%s); "$@"; echo "  (wall $(( $(date +%s) - s )) s: $*)"; }
rm -rf runs/bench-default
t $BYOL pretrain --run-dir runs/bench-default
for enc in "" --random-init; do
  t $BYOL eval linear --checkpoint "$RUN" $enc
  t $BYOL eval finetune --checkpoint "$RUN" --labels 10% $enc
done
