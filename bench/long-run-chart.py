#!/usr/bin/env python3
"""The long run's chart and table: kNN top-1 against the step for every arm, finished or not.

Reads the arms where they are written while they run: our BYOL, SimCLR and constant random
target from `long/<arm>/seed-0/evals.jsonl` (`byol ablate`'s runs, ablations/long-four-arms.toml),
the random-init encoder from `long/random-init/seed-0/eval.json` once it is evaluated, and the
shared PyTorch reference from `long/reference/seed-0/records.jsonl` (bench/reference-arm.sh; its
final record holds its own random-init encoder's reading). Draws one chart (each random-init
level as a horizontal line) and prints a Markdown table with a
column per evaluated step; an arm not started yet is left out, a reading not taken yet is "–".

The readings of arms whose first runs were lost with their machine before they finished
(`--earlier`, default docs/runs/long-first-machine/: SimCLR to step 6,240 and the reference to
4,680, started again from step 0 on 2026-12-07) are drawn dashed beside them and get rows of
their own.

Usage: long-run-chart.py [RUNS] [--out docs/figures/long-run.png]   # RUNS: ~/.cache/byol/runs
Needs matplotlib (bench/long-run.sh's venv: pip install matplotlib).
"""
import argparse
import json
import os

ARMS = [  # (label, folder, colour): one colour per method
    ("BYOL (ours)", "byol", "#1f77b4"),
    ("SimCLR (ours)", "simclr", "#d62728"),
    ("constant random target, τ = 1 (ours)", "constant-random-target", "#2ca02c"),
    ("BYOL (PyTorch reference)", "reference", "#9467bd"),
]


def arm(runs, folder, group="long"):
    """(step, kNN top-1 %) of one arm in step order (empty if it has not been evaluated yet), and
    whether it has finished: our runs write `eval.json` at the end, the reference a final line."""
    seed = os.path.join(runs, group, folder, "seed-0")
    reference = folder == "reference"
    path = os.path.join(seed, "records.jsonl" if reference else "evals.jsonl")
    recs = [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []
    if reference:
        points = [(r["step"], 100 * r["knn"]) for r in recs if "knn" in r]
        done = any(r.get("final") for r in recs)
    else:
        points = [(r["step"], 100 * r["knn"]["top1"]) for r in recs if r.get("knn")]
        done = os.path.exists(os.path.join(seed, "eval.json"))
    return sorted(dict(points).items()), done


def random_init(runs):
    """kNN top-1 % of our random-init encoder and of the reference's (its final record's, the
    encoder as the reference's own initialisation draws it), each None until evaluated."""
    path = os.path.join(runs, "long", "random-init", "seed-0", "eval.json")
    ours = 100 * json.load(open(path))["knn"]["top1"] if os.path.exists(path) else None
    path = os.path.join(runs, "long", "reference", "seed-0", "records.jsonl")
    final = [json.loads(l) for l in open(path) if '"final"' in l] if os.path.exists(path) else []
    return ours, (100 * final[-1]["knn_top1_random_init"] if final else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="?", default=os.path.expanduser("~/.cache/byol/runs"))
    ap.add_argument("--out", default="docs/figures/long-run.png")
    ap.add_argument("--earlier", default="docs/runs/long-first-machine")
    a = ap.parse_args()
    curves = []  # (label, colour, points, line style)
    for label, folder, colour in ARMS:
        points, done = arm(a.runs, folder)
        curves.append((label + ("" if done else " — running"), colour, points, "-o"))
        lost, _ = arm(os.path.dirname(a.earlier), folder, os.path.basename(a.earlier))
        if lost:
            curves.append((f"{label}, first run (lost after its reading at step {lost[-1][0]:,})", colour, lost, "--x"))
    curves = [c for c in curves if c[2]]
    floor, ref_floor = random_init(a.runs)
    steps = sorted({s for _, _, pts, _ in curves for s, _ in pts})
    print("| arm | " + " | ".join(f"{s:,}" for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for label, _, pts, _ in curves:
        at = dict(pts)
        print(f"| {label} | " + " | ".join(f"{at[s]:.2f} %" if s in at else "–" for s in steps) + " |")
    for label, level in (("random-init encoder (ours)", floor),
                         ("random-init encoder (PyTorch reference)", ref_floor)):
        print(f"| {label} | {level:.2f} % at every step |" if level is not None
              else f"| {label} | not evaluated yet |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(11, 5), dpi=120)
    for label, colour, pts, style in curves:
        ax.plot([s for s, _ in pts], [v for _, v in pts], style, color=colour, label=label, markersize=4,
                alpha=0.5 if style.startswith("--") else 1.0)
    if floor is not None:
        ax.axhline(floor, color="grey", linestyle="--", label=f"random-init encoder, ours ({floor:.2f} %)")
    if ref_floor is not None:
        ax.axhline(ref_floor, color="#9467bd", linestyle=":",
                   label=f"random-init encoder, reference ({ref_floor:.2f} %)")
    ax.set_xlabel("step (batch 128; 78 steps an epoch of the 10,000-image subset)")
    ax.set_ylabel("kNN top-1 on the 10,000 test images (%)")
    ax.set_title("CIFAR-10, cifar10-cpu recipe (η 0.02), seed 0: kNN (k = 200) during the 15,600-step run")
    ax.set_xlim(0, 15600)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)  # clear of the lines
    fig.tight_layout()
    fig.savefig(a.out, bbox_inches="tight")
    print(f"\nchart: {a.out}")


if __name__ == "__main__":
    main()
