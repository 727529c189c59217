#!/usr/bin/env bash
# The background runs of bench/long-run.sh outlive a machine only through the repository: a
# session's machine may be new, with an empty ~/.cache. `save` copies every run of $RUNS's groups
# into docs/runs/<group>/ (the records a reader checks the tables against; and, for a run not yet
# finished, its newest checkpoint, so that the next machine continues it instead of starting
# over); `restore` copies back what $RUNS lacks. bench/long-run.sh restores before it starts.
#
#   bench/run-state.sh save       # then commit docs/runs/
#   bench/run-state.sh restore
#
# Kept of a run of `byol ablate`: its config, final report, step logs, evaluations, run record and
# ablation row (`ablate` reads a finished run back from them, without its checkpoint); while it
# has no ablation row (unfinished), also its newest `checkpoint-<step>.safetensors` (4.4 MB at the
# preset's width; each save of an unfinished run adds one to the history). Of the reference arm
# (long/reference/seed-0): its records, and its `checkpoint.pt` until the final record. Not kept:
# locks, TensorBoard's event files, older checkpoints. A group's reports (`ablation.md`,
# `ablation.json`, `ablation.png`) are kept too.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: bench/run-state.sh save|restore}
RUNS=${RUNS:-$HOME/.cache/byol/runs}
DOCS=docs/runs
GROUPS_=(long recipe-screen recipe-screen-seed-1 fig3a-accumulate)
RECORDS=(config.toml eval.json evals.jsonl metrics.jsonl probe.jsonl run.json invocations.jsonl ablation-row.json
  skipped.json skipped-steps.jsonl records.jsonl)
REPORTS=(ablation.md ablation.json ablation.png)

# save_run FROM TO: the records of the run in FROM, and its checkpoint while unfinished, into TO.
save_run() {
  local from=$1 to=$2 checkpoints
  mkdir -p "$to"
  for f in "${RECORDS[@]}"; do
    [ -f "$from/$f" ] && cp "$from/$f" "$to/$f"
  done
  rm -f "$to"/checkpoint-*.safetensors "$to/checkpoint.pt"
  if [ -f "$from/records.jsonl" ]; then
    if [ -f "$from/checkpoint.pt" ] && ! grep -q '"final": true' "$from/records.jsonl"; then
      cp "$from/checkpoint.pt" "$to/checkpoint.pt"
    fi
  elif [ ! -f "$from/ablation-row.json" ]; then
    checkpoints=("$from"/checkpoint-*.safetensors) # in step order: the steps are zero-padded
    [ -f "${checkpoints[-1]}" ] && cp "${checkpoints[-1]}" "$to/"
  fi
  return 0
}

# worth_restoring RUN: whether RUN is finished or holds a checkpoint to continue from.
worth_restoring() {
  local f
  for f in "$1"/checkpoint-*.safetensors "$1"/checkpoint.pt "$1"/ablation-row.json "$1"/eval.json; do
    [ -f "$f" ] && return 0
  done
  grep -qs '"final": true' "$1/records.jsonl"
}

case "$MODE" in
save)
  for g in "${GROUPS_[@]}"; do
    [ -d "$RUNS/$g" ] || continue
    for f in "${REPORTS[@]}"; do
      [ -f "$RUNS/$g/$f" ] && mkdir -p "$DOCS/$g" && cp "$RUNS/$g/$f" "$DOCS/$g/$f"
    done
    for run in "$RUNS/$g"/*/seed-*; do
      [ -d "$run" ] || continue
      save_run "$run" "$DOCS/$g/${run#"$RUNS/$g/"}"
      echo "saved $run"
    done
  done
  du -sh "$DOCS"
  ;;
restore)
  for g in "${GROUPS_[@]}"; do
    for run in "$DOCS/$g"/*/seed-*; do
      [ -d "$run" ] || continue
      local_run="$RUNS/$g/${run#"$DOCS/$g/"}"
      if [ -e "$local_run" ]; then
        echo "kept $local_run (already here)"
      elif ! worth_restoring "$run"; then
        echo "not restored: $run (neither finished nor with a checkpoint to continue from)"
      else
        mkdir -p "$(dirname "$local_run")"
        cp -r "$run" "$local_run"
        echo "restored $local_run"
      fi
    done
  done
  ;;
*)
  echo "usage: bench/run-state.sh save|restore" >&2
  exit 2
  ;;
esac
