#!/usr/bin/env python3
"""Print a Markdown table of ours / reference from two JSON-lines files of step benchmarks
(`byol bench step` and shared/reference/byol_torch.py print the same fields)."""
import json, sys

def load(path):
    rows = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows

ref, ours = load(sys.argv[1]), load(sys.argv[2])
machine = sys.argv[3] if len(sys.argv) > 3 else ""
print(f"| configuration | batch | precision | reference samples/s | ours samples/s | ours / reference | machine |")
print("|---|---|---|---|---|---|---|")
for o in ours:
    match = [r for r in ref if r["cfg"] == o["cfg"] and r["dtype"] == o["dtype"] and r["batch"] == o["batch"] and not r.get("compile")]
    if not match:
        print(f"| {o['cfg']} | {o['batch']} | {o['dtype']} | – | {o['samples_per_s']} | – | {machine} |")
        continue
    r = match[0]
    print(f"| {o['cfg']} | {o['batch']} | {o['dtype']} | {r['samples_per_s']} | {o['samples_per_s']} | {o['samples_per_s'] / r['samples_per_s']:.2f} | {machine} |")
