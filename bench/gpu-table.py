#!/usr/bin/env python3
"""The one table of bench/gpu.sh, from the files it left in its output folder.

  gpu-table.py OUT MACHINE TTA_SECONDS
"""
import json, os, sys

out, machine, tta_s = sys.argv[1], sys.argv[2], sys.argv[3]


def lines(name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip().startswith("{")]


def fmt(x, d=1):
    return "–" if x is None else f"{x:,.{d}f}"


ref, ours = lines("ref.jsonl"), lines("ours.jsonl")
mem = {m["label"]: m["peak_mib"] - m["before_mib"] for m in lines("memory.jsonl")}
rows = []  # (measurement, configuration, reference, ours, ours / reference)
ref = [r for r in ref if not r.get("compile")]
keys = []
for r in ref + ours:
    if (r["cfg"], r["dtype"], r["batch"]) not in keys:
        keys.append((r["cfg"], r["dtype"], r["batch"]))
for key in keys:
    r = next((r for r in ref if (r["cfg"], r["dtype"], r["batch"]) == key), None)
    o = next((o for o in ours if (o["cfg"], o["dtype"], o["batch"]) == key), None)
    ratio = f"{o['samples_per_s'] / r['samples_per_s']:.2f}" if r and o else "–"
    cfg = f"{key[0]} batch {key[2]} {key[1]}"
    rows.append(("training step, samples/s", cfg, fmt(r and r["samples_per_s"]), fmt(o and o["samples_per_s"]), ratio))
    if o and "first_step_s" in o:
        # The reference's warm-up includes cuDNN's benchmark mode; ours, compilation and autotune
        # (in its first step, unless the kernel cache had them).
        rows.append(("  warm-up before timing, s (ours: first step = compile + tune)", cfg, fmt(r and r.get("warmup_s")),
                     f"{o['first_step_s'] + o['warmup_s']:.1f} (first {o['first_step_s']:.1f})", "–"))
    label = f"{key[0]}-{'f32' if key[1] == 'float32' else 'bf16'}"
    ours_gib = mem[label] / 1024 if label in mem else o and o.get("peak_mem_gib")
    if ours_gib is not None or (r and r.get("peak_mem_gib") is not None):
        rows.append(("  peak GPU memory, GiB (reference: allocated; ours: device used)", cfg,
                     fmt(r and r.get("peak_mem_gib"), 2), fmt(ours_gib, 2), "–"))
aug = lines("augment.jsonl")
r50 = {o["dtype"]: o["samples_per_s"] for o in ours if o["cfg"] == "r50i224"}
for a in aug:
    rows.append(("view pipeline, views/s", f"{a['size']} px, batch {a.get('batch', '')}", "–", fmt(a["device_views_per_sec"], 0), "–"))
    if a["size"] == 224:
        for dtype, sps in r50.items():
            need = 2 * sps
            rows.append(("view pipeline ÷ views the ResNet-50 step consumes", f"224 px, step {dtype}", "–",
                         f"{a['device_views_per_sec']:,.0f} / {need:,.0f}", f"{a['device_views_per_sec'] / need:.1f}×"))
tta_ref = next((l for l in lines("tta-ref.jsonl") if l.get("final")), None)
tta_ours = None
p = os.path.join(out, "tta-ours", "eval.json")
if os.path.exists(p):
    tta_ours = json.load(open(p))
if tta_ref or tta_ours:
    cfg = f"CIFAR-10 ResNet-18, {tta_s} s of training"
    o_top1 = tta_ours and tta_ours["knn"] and 100 * tta_ours["knn"]["top1"]
    r_top1 = tta_ref and 100 * tta_ref["knn_top1"]
    rows.append(("time to accuracy: kNN top-1 %", cfg, fmt(r_top1, 2), fmt(o_top1, 2),
                 f"{o_top1 - r_top1:+.2f} points" if o_top1 is not None and r_top1 is not None else "–"))
    o_rand = tta_ours and tta_ours.get("random_init_knn") and 100 * tta_ours["random_init_knn"]["top1"]
    r_rand = tta_ref and 100 * tta_ref["knn_top1_random_init"]
    rows.append(("  random-init encoder, kNN top-1 %", cfg, fmt(r_rand, 2), fmt(o_rand, 2), "–"))
    steps_per_epoch = tta_ours and max(1, tta_ours["train_images"] // int(os.environ.get("TTA_BATCH", "512")))
    o_ep = tta_ours and tta_ours["steps"] / steps_per_epoch
    rows.append(("  epochs trained in the budget", cfg, fmt(tta_ref and tta_ref["epochs_done"], 2), fmt(o_ep, 2),
                 f"{o_ep / tta_ref['epochs_done']:.2f}" if o_ep and tta_ref and tta_ref["epochs_done"] else "–"))
    if "tta" in mem:
        rows.append(("  peak GPU memory of ours, GiB (device used)", cfg, "–", fmt(mem["tta"] / 1024, 2), "–"))
dp = os.path.join(out, "dp.json")
if os.path.exists(dp):
    dp = json.load(open(dp))

    def rate(n):
        # images/s over the logged steps after the first 5 (compilation, warm-up)
        m = lines(os.path.join(f"dp-{n}", "metrics.jsonl"))[5:]
        return sum(l["images_per_sec"] for l in m) / len(m) if m else None

    one, many = rate(1), rate(dp["gpus"])
    cfg = f"ResNet-18 CIFAR, {dp['per_gpu_batch']} images per GPU"
    rows.append(("data parallel, samples/s (the reference column: 1 GPU)", f"{cfg}, N = {dp['gpus']}", fmt(one), fmt(many),
                 f"{many / one:.2f}× ({100 * many / (one * dp['gpus']):.0f} % efficiency)" if one and many else "–"))
for s in lines("skipped.jsonl"):
    what = s.get("skipped") or s.get("failed")
    why = f"{s['left_s']} s left" if "left_s" in s else s.get("why") or f"exit status {s.get('status')}"
    rows.append((f"not measured: {what}", why, "–", "–", "–"))

build = next((o for o in ours if "autotune" in o), None)
if build:
    on = lambda x: "on" if x else "OFF"
    machine += f"; byol built with burn autotune {on(build['autotune'])}, fusion {on(build['fusion'])}"
print(f"\n{machine}")
print("| measurement | configuration | reference (PyTorch) | ours | ours / reference |")
print("|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
