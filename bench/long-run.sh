#!/usr/bin/env bash
# The background experiments of "BYOL's own advantage": the four-arm long run
# (ablations/long-four-arms.toml: BYOL, SimCLR, the constant random target and random init over
# 15,600 steps, kNN every 20 epochs, linear evaluation at the end); beside it one queue of the
# grids at 1,872 steps (the rest of the recipe screen, ablations/recipe-screen.toml; its second
# seed, ablations/recipe-screen-second-seed.toml) and, once the reference arm below has
# ended, Figure 3(a) by the paper's protocol (ablations/fig3a-accumulate.toml) in a lane of its
# own; each through `byol ablate`, which reads finished runs back
# and resumes an interrupted one from its last checkpoint: run this script again, with a binary of
# the same training code, to continue. They run at the lowest CPU priority on one thread each
# (which still slows a test beside them by nearly half: stop them with `kill -STOP` for a timing,
# `kill -CONT` after); their logs are `long.log`, `screen.log` and `fig3a.log`
# in $RUNS. First, whatever $RUNS lacks is restored from docs/runs/ (bench/run-state.sh): on a new
# machine the runs continue from the checkpoints the last session saved there; at the end of a
# session, `bench/run-state.sh save` and a commit of docs/runs/ keep them for the next. The shared PyTorch reference BYOL, the long run's fifth arm, is started too
# (bench/reference-arm.sh run: it trains on the BYOL arm's subset, so it starts once that arm's
# run folder exists; it checkpoints every epoch and continues the same way).
#
#   bench/long-run.sh [BYOL_BINARY]      # default target/release/byol
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/byol}")
RUNS=${RUNS:-$HOME/.cache/byol/runs}
DATA=$(realpath "${BYOL_CIFAR10:-../shared/data/cifar10}")
mkdir -p "$RUNS"
RUNS="$RUNS" bench/run-state.sh restore
export RAYON_NUM_THREADS=1
renice -n 19 $$ > /dev/null
# The grids started before the presets' trust coefficient became the paper's 1e-3 (2026-12-07)
# keep the 0.02 they started with, so that any binary continues them (a run resumes only with
# the config it started with); Figure 3(a) by accumulation runs at the presets' 1e-3, named here
# so that its runs too are the same whichever binary makes them.
ETA_BEFORE=(--set optim.trust-coefficient=0.02)
nohup nice -n 19 "$BIN" ablate --config cifar10-cpu --data "$DATA" --grid ablations/long-four-arms.toml \
  --seeds 0 --set data.max-train=10000 --epochs 200 --set train.knn-every-epochs=20 --linear \
  "${ETA_BEFORE[@]}" --run-dir "$RUNS/long" >> "$RUNS/long.log" 2>&1 &
echo "long run: pid $!, log $RUNS/long.log"
# One queue for the grids at Figure 3(b)'s budget, one after the other (each grid's finished runs
# are read back): the rest of the screen at seed 0 (its trials not yet run: the predictor's rate,
# η at 20× the rate, twice the width, weight decay 5e-4), then the screen's second seed (its rows
# that could change the presets, the bases and η = 1e-3 for both methods, ran first and are
# done; what it has left confirms the τ and double-rate rows, which change nothing).
SHORT=(--config cifar10-cpu --data "$DATA" --set data.max-train=10000 --epochs 24)
queue() {
  set +e # a grid that stops does not stop the ones after it
  "$BIN" ablate "${SHORT[@]}" "${ETA_BEFORE[@]}" --grid ablations/recipe-screen.toml --seeds 0 \
    --run-dir "$RUNS/recipe-screen"
  "$BIN" ablate "${SHORT[@]}" "${ETA_BEFORE[@]}" --grid ablations/recipe-screen-second-seed.toml \
    --seeds 1 --run-dir "$RUNS/recipe-screen-seed-1"
}
(trap '' HUP; queue) >> "$RUNS/screen.log" 2>&1 < /dev/null &
echo "recipe screen and its second seed: pid $!, log $RUNS/screen.log"
# Figure 3(a) by the paper's protocol takes the core the reference arm leaves when it ends: a
# lane of its own that waits for the reference's final record (a third process beside the two
# above, as the reference was).
REF_RECORDS="$RUNS/long/reference/seed-0/records.jsonl"
fig3a() {
  until grep -qs '"final": true' "$REF_RECORDS"; do sleep 300; done
  "$BIN" ablate "${SHORT[@]}" --set optim.trust-coefficient=1e-3 \
    --grid ablations/fig3a-accumulate.toml --seeds 0,1 --run-dir "$RUNS/fig3a-accumulate"
}
(trap '' HUP; fig3a) >> "$RUNS/fig3a.log" 2>&1 < /dev/null &
echo "Figure 3(a) by accumulation, once the reference arm has ended: pid $!, log $RUNS/fig3a.log"
if [ -d "$RUNS/long/byol/seed-0" ]; then
  bench/reference-arm.sh run "$BIN"
else
  echo "reference arm: not started (it needs the BYOL arm's run folder; run this script again later)"
fi
