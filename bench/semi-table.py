#!/usr/bin/env python3
"""The semi-supervised table of SimCLR v2's recipe at small scale, from the run directories the
commands in docs/BENCHMARKS.md ("SimCLR v2's recipe") write under ROOT:

  ROOT/p2/seed-S              BYOL with the 2-layer projector (its evaluations.jsonl)
  ROOT/p3/seed-S              BYOL with the 3-layer projector (its evaluations.jsonl, which also
                              holds the random-init encoder's fine-tuning)
  ROOT/distill/{self,small}-F-S/distill.json

Prints one Markdown row per arm and labelled fraction: top-1 per seed and the mean.

    python3 bench/semi-table.py ROOT
"""
import json
import statistics
import sys
from pathlib import Path

root = Path(sys.argv[1])
seeds = (0, 1)


def finetunes(run):
    """(encoder label, from, fraction, lr) -> top-1, from a run's evaluations.jsonl."""
    out = {}
    path = root / run / "evaluations.jsonl"
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["protocol"] != "finetune":
            continue
        f = r["settings"]["finetune"]
        key = (r["encoder"].startswith("random"), f["from"], round(f["label-fraction"], 4), f["learning-rate"])
        out[key] = r["result"]["test"]["top1"]  # the last of a repeated evaluation
    return out


def row(name, values):
    vals = [v for v in values if v is not None]
    if len(vals) < len(values):
        return f"| {name} | " + " | ".join("–" if v is None else f"{100 * v:.2f}" for v in values) + " | (incomplete) |"
    return f"| {name} | " + " | ".join(f"{100 * v:.2f}" for v in vals) + f" | **{100 * statistics.mean(vals):.2f}** |"


for frac, pct in ((0.01, "1 %"), (0.1, "10 %")):
    print(f"\n{pct} of the labels ({int(50000 * frac)} images), top-1 on the 10,000 test images:\n")
    print("| arm | seed 0 | seed 1 | mean |")
    print("|---|---|---|---|")
    ft = {s: {"p2": finetunes(f"p2/seed-{s}"), "p3": finetunes(f"p3/seed-{s}")} for s in seeds}
    lr = 0.05
    arms = [
        ("random-init encoder, fine-tuned", "p3", (True, "encoder")),
        ("BYOL, 2-layer projector, from the encoder", "p2", (False, "encoder")),
        ("BYOL, 2-layer projector, from projector:1", "p2", (False, "projector:1")),
        ("BYOL, 3-layer projector, from the encoder", "p3", (False, "encoder")),
        ("BYOL, 3-layer projector, from projector:1 (the teacher)", "p3", (False, "projector:1")),
    ]
    for name, run, (random, start) in arms:
        print(row(name, [ft[s][run].get((random, start, frac, lr)) for s in seeds]))
    for name, kind in (("self-distilled student (base width 8)", "self"), ("distilled into base width 4", "small")):
        vals = []
        for s in seeds:
            p = root / "distill" / f"{kind}-{int(frac * 100)}-{s}" / "distill.json"
            vals.append(json.loads(p.read_text())["student"]["top1"] if p.exists() else None)
        print(row(name, vals))
