#!/usr/bin/env python3
"""The shared PyTorch reference BYOL (shared/reference/byol_cifar_torch.py), resumable.

The reference trains in one process from start to end; the long run's reference arm (15,600
steps, hours on 2 cores) does not fit one session. This runner takes the reference's own pieces
(its data loading, views, networks, LARS and kNN, imported from the file, not copied) and runs
its training loop with a checkpoint at the end of every epoch: the networks, the optimiser's
state, the view generator's state and the step, written atomically. Run again with the same
arguments, it continues from the checkpoint; the records of epochs past it (written before an
interruption reached the checkpoint) are dropped, so that each epoch has one line. `bench/reference-arm.sh check`
compares it with the reference script itself (2 epochs in one go against 1 + resume + 1: the
same JSON lines, loss and kNN to the last digit).

The loop below is the reference's `main()` with the wall-clock budget left out (the run is
planned in epochs) and the checkpoint added; its schedules, order of operations and records are
the reference's. CPU only (the reference's bf16 autocast on a GPU is not needed here).

Usage: reference_arm.py DATA_DIR --out DIR [the reference's recipe flags] [--stop-after-epochs N]
Prints the reference's JSON lines and appends them to DIR/records.jsonl.
"""
import argparse
import copy
import fcntl
import importlib.util
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn


def reference_module(path):
    spec = importlib.util.spec_from_file_location("byol_cifar_torch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def arguments():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--out", required=True, help="checkpoint and records folder")
    ap.add_argument("--reference", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                        "shared", "reference", "byol_cifar_torch.py"))
    ap.add_argument("--stop-after-epochs", type=int, default=0,
                    help="stop (as if interrupted) once this many epochs are done; 0: run to the end")
    # The reference's recipe flags, under its names and defaults.
    ap.add_argument("--batch", type=int, default=512); ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1.0); ap.add_argument("--wd", type=float, default=1e-5)
    ap.add_argument("--tau", type=float, default=0.99); ap.add_argument("--warmup", type=float, default=10)
    ap.add_argument("--limit", type=int, default=None); ap.add_argument("--knn-every", type=int, default=0)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--proj-hidden", type=int, default=4096); ap.add_argument("--proj-out", type=int, default=256)
    ap.add_argument("--eta", type=float, default=1e-3); ap.add_argument("--optim", choices=["lars", "sgd"], default="lars")
    ap.add_argument("--full-test", action="store_true")
    ap.add_argument("--solarize2", type=float, default=0.2); ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--target-init", choices=["copy", "independent"], default="copy")
    ap.add_argument("--residual-gamma", choices=["one", "zero"], default="one")
    return ap.parse_args()


def networks(ref, a):
    """The reference's networks, built in its order from its seed (so the random draws match)."""
    bt = ref.load_reference_models()

    def network():
        enc = bt.ResNet(bt.Basic, [2, 2, 2, 2], True, width=a.width)
        for m in enc.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight); nn.init.zeros_(m.bias)
        if a.residual_gamma == "zero":
            for m in enc.modules():
                if isinstance(m, bt.Basic):
                    nn.init.zeros_(m.b2.weight)
        return bt.Net(enc, a.proj_hidden, a.proj_out).to(memory_format=torch.channels_last)

    online = network()
    pred = bt.mlp(a.proj_out, a.proj_hidden, a.proj_out)
    target = (copy.deepcopy(online) if a.target_init == "copy" else network()).requires_grad_(False)
    rnd_enc = copy.deepcopy(online.enc)
    return bt, online, pred, target, rnd_enc


def recipe(args):
    """The arguments a resumed run must share with the run that wrote the checkpoint: all but
    where things are (the folders may move between machines) and when to stop."""
    return {k: v for k, v in args.items() if k not in ("data", "out", "reference", "stop_after_epochs")}


def save(path, state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def keep_records_to(path, epoch):
    """Rewrite the records at `path` with one line for each epoch up to `epoch`: the lines of
    later epochs were written before an interruption reached their checkpoint, and the resumed
    run writes them again; of an epoch recorded twice (by a runner without this rewrite) the last
    line is the one whose checkpoint was written."""
    if not os.path.exists(path):
        return
    by_epoch = {}
    for line in open(path):
        rec = json.loads(line)
        if rec.get("epoch", epoch + 1) <= epoch:
            by_epoch[rec["epoch"]] = line
    with open(path + ".tmp", "w") as f:
        f.writelines(by_epoch[e] for e in sorted(by_epoch))
    os.replace(path + ".tmp", path)


def invocation(epoch, step):
    """Which software on which CPU continues the run from `epoch` (one line of invocations.jsonl
    per start or resume): PyTorch's CPU kernels, and Pillow's JPEG decoder, differ between
    versions and instruction sets, so a run continued on another machine is not bit-identical to
    an uninterrupted one."""
    import platform
    import numpy
    from PIL import Image
    flags, model = set(), None
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            if key.strip() == "flags":
                flags = set(value.split())
    return dict(start_epoch=epoch, start_step=step, started_at=int(time.time()), python=platform.python_version(),
                torch=torch.__version__, numpy=numpy.__version__, pillow=Image.__version__, cpu=model,
                avx512f="avx512f" in flags, avx2="avx2" in flags, torch_cpu_capability=torch.backends.cpu.get_cpu_capability())


def main():
    a = arguments()
    ref = reference_module(a.reference)
    torch.manual_seed(a.seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    lock = open(os.path.join(a.out, "lock"), "w")
    try:  # two processes never write one run folder
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"{a.out} is being written by another process")
    ckpt_path, rec_path = os.path.join(a.out, "checkpoint.pt"), os.path.join(a.out, "records.jsonl")
    if os.path.exists(rec_path) and any('"final": true' in line for line in open(rec_path)):
        print(f"{rec_path}: finished already", file=sys.stderr)
        return
    xtr, ytr = ref.load_split(os.path.join(a.data, "train"), a.limit, a.seed)
    xte, yte = ref.load_split(os.path.join(a.data, "test"), None if a.full_test else (a.limit and max(a.limit // 5, 200)))
    bt, online, pred, target, rnd_enc = networks(ref, a)
    params = list(online.parameters()) + list(pred.parameters())
    B = a.batch; steps_per_epoch = len(xtr) // B; K = steps_per_epoch * a.epochs
    opt = (ref.LARS(params, lr=a.lr * B / 256, weight_decay=a.wd, eta=a.eta) if a.optim == "lars"
           else torch.optim.SGD(params, lr=a.lr * B / 256, momentum=0.9, weight_decay=a.wd))
    gen = torch.Generator().manual_seed(a.seed)
    step, first_epoch, train_s = 0, 0, 0.0
    if os.path.exists(ckpt_path):
        st = torch.load(ckpt_path, weights_only=False)
        if recipe(st["args"]) != recipe(vars(a)):
            sys.exit(f"{ckpt_path} was written with another recipe: {recipe(st['args'])}")
        for m, k in [(online, "online"), (pred, "pred"), (target, "target"), (rnd_enc, "rnd_enc"), (opt, "opt")]:
            m.load_state_dict(st[k])
        gen.set_state(st["gen"]); torch.set_rng_state(st["torch_rng"])
        step, first_epoch, train_s = st["step"], st["epoch"], st["train_s"]
        print(f"resuming {ckpt_path} at epoch {first_epoch}, step {step}", file=sys.stderr)
        keep_records_to(rec_path, first_epoch)
    with open(os.path.join(a.out, "invocations.jsonl"), "a") as f:
        f.write(json.dumps(invocation(first_epoch, step)) + "\n")
    o_p, t_p = list(online.parameters()), list(target.parameters())
    for ep in range(first_epoch, a.epochs):
        t_epoch = time.time()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(steps_per_epoch):
            k = step
            lr = a.lr * B / 256 * (k / max(1, a.warmup * steps_per_epoch) if k < a.warmup * steps_per_epoch
                                   else 0.5 * (1 + math.cos(math.pi * (k - a.warmup * steps_per_epoch) / max(1, K - a.warmup * steps_per_epoch))))
            for g in opt.param_groups:
                g["lr"] = lr
            tau = 1 - (1 - a.tau) * (math.cos(math.pi * k / K) + 1) / 2
            xb = xtr[perm[i * B:(i + 1) * B]]
            v1 = ref.views(xb, 32, 0.0, gen).contiguous(memory_format=torch.channels_last)
            v2 = ref.views(xb, 32, a.solarize2, gen).contiguous(memory_format=torch.channels_last)
            p1, p2 = pred(online(v1)), pred(online(v2))
            with torch.no_grad():
                z1, z2 = target(v1), target(v2)
            loss = bt.loss_fn(p1.float(), z2.float()) + bt.loss_fn(p2.float(), z1.float())
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
            with torch.no_grad():
                torch._foreach_mul_(t_p, tau); torch._foreach_add_(t_p, o_p, alpha=1 - tau)
            step += 1
        train_s += time.time() - t_epoch
        rec = dict(epoch=ep + 1, step=step, loss=float(loss.detach()), lr=lr, tau=tau, train_s=round(train_s, 1))
        if a.knn_every and (ep + 1) % a.knn_every == 0:
            rec["knn"] = ref.knn(online.enc, xtr, ytr, xte, yte)
        print(json.dumps(rec), flush=True)
        with open(rec_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        save(ckpt_path, dict(args={k: v for k, v in vars(a).items() if k != "stop_after_epochs"},
                             online=online.state_dict(), pred=pred.state_dict(), target=target.state_dict(),
                             rnd_enc=rnd_enc.state_dict(), opt=opt.state_dict(), gen=gen.get_state(),
                             torch_rng=torch.get_rng_state(), step=step, epoch=ep + 1, train_s=train_s))
        if a.stop_after_epochs and ep + 1 - first_epoch >= a.stop_after_epochs:
            return
    acc = ref.knn(online.enc, xtr, ytr, xte, yte); acc0 = ref.knn(rnd_enc, xtr, ytr, xte, yte)
    final = dict(final=True, device="cpu", torch=torch.__version__, batch=B, epochs_done=round(step / steps_per_epoch, 2),
                 planned_epochs=a.epochs, train_s=round(train_s, 1), knn_top1=round(acc, 4), knn_top1_random_init=round(acc0, 4))
    print(json.dumps(final), flush=True)
    with open(rec_path, "a") as f:
        f.write(json.dumps(final) + "\n")


if __name__ == "__main__":
    main()
