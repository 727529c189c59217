#!/usr/bin/env bash
# Learning parity at equal budget: our BYOL and the independent PyTorch BYOL
# (shared/reference/byol_cifar_torch.py) trained with the same recipe, architecture, data subset
# and number of steps on this CPU, for several seeds; prints kNN top-1 (k = 200, T = 0.1, cosine,
# all 10,000 test images) of both trained encoders and of both random-init encoders.
#
# The recipe (both sides): CIFAR-10 ResNet-18 with the CIFAR stem at base width $WIDTH (each
# residual block's last BatchNorm γ starting at $GAMMA: `zero` is torchvision's
# `zero_init_residual`, `one` its default; every other γ starts at 1), projector and predictor 512 →
# 128, batch 128, LARS lr 1.0 × 128/256 with trust coefficient $ETA (0.02, cifar10-cpu's until
# 0c957d0, where BENCHMARKS' parity rows were measured) and weight decay 1.5e-6, 0.5 warm-up epochs
# then cosine, τ 0.99 cosine, target initialised as a copy, views without blur and with solarisation
# 0.2 on view 2, $EPOCHS epochs (78 steps each at 10,000 images) of the same class-balanced
# $LIMIT-image subset of the training set (chosen by the reference's rule for the seed).
#
#   bench/learning-parity.sh                  # seeds 0 1, 24 epochs: about 40 min per seed here
#   SEEDS="0" EPOCHS=8 bench/learning-parity.sh
#   GAMMA=one bench/learning-parity.sh        # the γ = 1 initialisation (default: zero)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BYOL_BENCH_VENV:-$HOME/.cache/byol/bench-venv}
REF=${BYOL_REFERENCE:-../shared/reference/byol_cifar_torch.py}
DATA=${BYOL_CIFAR10:-../shared/data/cifar10}
SEEDS=${SEEDS:-0 1}
EPOCHS=${EPOCHS:-24}
LIMIT=${LIMIT:-10000}
WIDTH=${WIDTH:-8}
GAMMA=${GAMMA:-zero}
ETA=${ETA:-0.02}
case "$GAMMA" in zero|one) ;; *) echo "GAMMA must be zero or one, not $GAMMA" >&2; exit 2 ;; esac
THREADS=${THREADS:-$(nproc)}
OUT=${OUT:-runs/learning-parity-$(date +%s)}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch, PIL, numpy' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch pillow numpy
fi
cargo build --release -p byol-cli >&2
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
mkdir -p "$OUT"
DATA=$(realpath "$DATA")
for s in $SEEDS; do
  # The subset both train on: the reference's own rule (per class, the first LIMIT/10 of a numpy
  # permutation seeded by the seed), as a folder of links; the test split is all of it.
  SUB="$OUT/subset-$s"
  rm -rf "$SUB"; mkdir -p "$SUB/train"; ln -s "$DATA/test" "$SUB/test"
  "$VENV/bin/python" - "$DATA/train" "$SUB/train" "$LIMIT" "$s" <<'PY'
import glob, os, sys, numpy as np
src, dst, limit, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
classes = sorted(os.listdir(src)); rng = np.random.default_rng(seed)
for c in classes:
    fs = sorted(glob.glob(os.path.join(src, c, "*")))
    os.makedirs(os.path.join(dst, c))
    for j in sorted(rng.permutation(len(fs))[: limit // len(classes)]):
        os.symlink(fs[j], os.path.join(dst, c, os.path.basename(fs[j])))
PY
  "$VENV/bin/python" "$REF" "$SUB" --minutes 100000 --epochs "$EPOCHS" --batch 128 --full-test \
    --width "$WIDTH" --proj-hidden 512 --proj-out 128 --lr 1.0 --eta "$ETA" --wd 1.5e-6 --tau 0.99 --warmup 0.5 \
    --target-init copy --residual-gamma "$GAMMA" --seed "$s" --threads "$THREADS" | tee "$OUT/reference-$s.jsonl" >&2
  ./target/release/byol pretrain --config cifar10-cpu --data "$SUB" --run-dir "$OUT/ours-$s" \
    --set model.encoder.base-width="$WIDTH" --set model.encoder.residual-gamma="\"$GAMMA\"" --set train.epochs="$EPOCHS" \
    --set seed="$s" --set target.init='"copy"' --set train.knn-every-epochs=0 \
    --set optim.trust-coefficient="$ETA" >&2
done
python3 - "$OUT" $SEEDS <<'PY'
import json, statistics, sys, pathlib
out, seeds = pathlib.Path(sys.argv[1]), sys.argv[2:]
rows = []
for s in seeds:
    ref = [json.loads(l) for l in (out / f"reference-{s}.jsonl").read_text().splitlines() if l.startswith("{")][-1]
    ours = json.loads((out / f"ours-{s}" / "eval.json").read_text())
    steps = json.loads((out / f"ours-{s}" / "run.json").read_text())["total_steps"]
    rows.append((s, steps, ref["knn_top1"], ref["knn_top1_random_init"], ours["knn"]["top1"], ours["random_init_knn"]["top1"], ref["train_s"], ours["wall_seconds"]))
print("| seed | steps | reference kNN % | reference random-init % | reference gain | ours kNN % | ours random-init % | ours gain |")
print("|---|---|---|---|---|---|---|---|")
for s, n, a, a0, b, b0, *_ in rows:
    print(f"| {s} | {n} | {100*a:.2f} | {100*a0:.2f} | {100*(a-a0):+.2f} | {100*b:.2f} | {100*b0:.2f} | {100*(b-b0):+.2f} |")
m = lambda i: 100 * statistics.mean(r[i] for r in rows)
print(f"| mean | | {m(2):.2f} | {m(3):.2f} | {m(2)-m(3):+.2f} | {m(4):.2f} | {m(5):.2f} | {m(4)-m(5):+.2f} |")
print(f"ours − reference (mean): {m(4) - m(2):+.2f} points; gains over random init: reference {m(2) - m(3):+.2f}, ours {m(4) - m(5):+.2f}")
PY
