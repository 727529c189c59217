#!/usr/bin/env python3
"""Writes step_parity.safetensors: a few BYOL training steps (and one SimCLR and one MoCo v2 step)
computed by PyTorch from a stored initial state on stored views, for tests/parity.rs.

The model is the reference ResNet-18 (CIFAR stem) and MLP of shared/reference/byol_torch.py at a
small base width; the step is written here from the paper (Grill et al. 2020, Algorithm 1 and
Appendix C): both views through the online network (encoder, projector, predictor) and the target
(encoder, projector) separately, BatchNorm in training mode in both, the symmetrised loss
mean(2 − 2cos(p1, z2')) + mean(2 − 2cos(p2, z1')), LARS (weight decay, then the trust ratio
η‖w‖/‖g‖, both skipped for biases and BatchNorm parameters; heavy-ball momentum), a linear warm-up
then cosine learning rate, and the EMA ξ ← τξ + (1 − τ)θ with the cosine τ schedule.

One convention is set to the official code's rather than PyTorch's: BatchNorm running variances
are averaged from the biased batch variance (haiku's `BatchNorm`), not from the unbiased one.

The trajectory is computed twice, in float64 (the reference the test compares with) and in
float32; the largest float32-vs-float64 deviation of every quantity is stored too, as the scale of
what f32 rounding alone does to this trajectory.

Usage: python3 make_fixture.py [--out step_parity.safetensors]   (needs torch, safetensors)
"""
import argparse, copy, importlib.util, json, math, os
import torch, torch.nn as nn, torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "..", "..", "..", "..", "..", "shared", "reference", "byol_torch.py")

# The recipe (tests/parity.rs builds the same config).
WIDTH, HIDDEN, PROJ = 4, 32, 16
B, S, STEPS, WARMUP = 8, 16, 4, 1
PEAK_LR, WD, MOMENTUM, ETA = 0.05, 1e-4, 0.9, 0.02
TAU_BASE = 0.9
SIMCLR_T, MOCO_T, QUEUE = 0.5, 0.2, 32


def load_reference():
    spec = importlib.util.spec_from_file_location("bt", os.environ.get("BYOL_REFERENCE", REF))
    bt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bt)
    return bt


def haiku_bn_forward(self, x):
    """Training-mode BatchNorm with batch statistics; running averages of the biased variance."""
    dims = [0, 2, 3] if x.dim() == 4 else [0]
    with torch.no_grad():
        m = self.momentum
        self.running_mean.mul_(1 - m).add_(x.mean(dims), alpha=m)
        self.running_var.mul_(1 - m).add_(x.var(dims, unbiased=False), alpha=m)
    return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def build(bt):
    enc = bt.ResNet(bt.Basic, [2, 2, 2, 2], True, width=WIDTH)
    online = bt.Net(enc, HIDDEN, PROJ)
    pred = bt.mlp(PROJ, HIDDEN, PROJ)
    for m in list(online.modules()) + list(pred.modules()):
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.forward = haiku_bn_forward.__get__(m)
            # Random γ, β, running statistics: a parity test must not hide a term behind 1s and 0s.
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5); m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1); m.running_var.uniform_(0.5, 1.5)
    return online, pred


def our_names(online, pred, with_pred=True):
    """PyTorch parameter → (our path, needs transpose). Our Linear weights are [in, out]."""
    out = {}
    def bn(tp, op):
        out[tp + ".weight"] = (op + ".gamma", False); out[tp + ".bias"] = (op + ".beta", False)
        out[tp + ".running_mean"] = (op + ".running_mean", False); out[tp + ".running_var"] = (op + ".running_var", False)
    out["enc.stem.0.weight"] = ("encoder.conv1.weight", False); bn("enc.stem.1", "encoder.bn1")
    for i in range(4):
        for j in range(2):
            t, o = f"enc.stages.{i}.{j}", f"encoder.layer{i + 1}.{j}"
            out[t + ".c1.weight"] = (o + ".conv1.weight", False); bn(t + ".b1", o + ".bn1")
            out[t + ".c2.weight"] = (o + ".conv2.weight", False); bn(t + ".b2", o + ".bn2")
            if online.enc.stages[i][j].sc is not None:
                out[t + ".sc.0.weight"] = (o + ".downsample.conv.weight", False); bn(t + ".sc.1", o + ".downsample.bn")
    def mlp(tp, op):
        out[tp + ".0.weight"] = (op + ".fc1.weight", True); out[tp + ".0.bias"] = (op + ".fc1.bias", False)
        bn(tp + ".1", op + ".bn")
        out[tp + ".3.weight"] = (op + ".fc2.weight", True); out[tp + ".3.bias"] = (op + ".fc2.bias", False)
    mlp("proj", "projector")
    if with_pred:
        mlp("pred", "predictor")
    return out


def state_of(online, pred, with_pred=True):
    """Our path → float32 tensor, for the online network (+ predictor) or a target."""
    names = our_names(online, pred, with_pred)
    sd = dict(online.state_dict())
    if with_pred:
        sd.update({"pred." + k: v for k, v in pred.state_dict().items()})
    res = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        path, transpose = names[k]
        res[path] = (v.t() if transpose else v).detach().to(torch.float32).contiguous()
    return res


def regression(p, z):
    return 2 - 2 * F.cosine_similarity(p, z, dim=-1, eps=1e-12)


def lars_(params, grads, bufs, lr):
    with torch.no_grad():
        for i, (p, g) in enumerate(zip(params, grads)):
            if p.ndim > 1:
                g = g + WD * p
                pn, gn = p.norm(), g.norm()
                g = g * (ETA * pn / gn if (pn > 0 and gn > 0) else 1.0)
            bufs[i] = g.clone() if bufs[i] is None else bufs[i] * MOMENTUM + g
            p -= lr * bufs[i]


def ema_(target, online, tau):
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters()):
            t.mul_(tau).add_(o, alpha=1 - tau)


def lr_at(k):
    if k < WARMUP:
        return PEAK_LR * k / WARMUP
    return PEAK_LR * 0.5 * (1 + math.cos(math.pi * (k - WARMUP) / (STEPS - WARMUP)))


def tau_at(k):
    return 1 - (1 - TAU_BASE) * (math.cos(math.pi * k / STEPS) + 1) / 2


def run_byol(online, pred, target, views, dtype):
    online, pred, target = (m.to(dtype) for m in (online, pred, target))
    params = list(online.parameters()) + list(pred.parameters())
    bufs, losses = [None] * len(params), []
    for k, (v1, v2) in enumerate(views):
        v1, v2 = v1.to(dtype), v2.to(dtype)
        p1, p2 = pred(online(v1)), pred(online(v2))
        with torch.no_grad():
            z1, z2 = target(v1), target(v2)
        loss = regression(p1, z2).mean() + regression(p2, z1).mean()
        grads = torch.autograd.grad(loss, params)
        lars_(params, grads, bufs, lr_at(k))
        ema_(target, online, tau_at(k))
        losses.append(loss.item())
    return losses


def nt_xent(z1, z2, t):
    z = F.normalize(torch.cat([z1, z2]), dim=1, eps=1e-12)
    n = z.shape[0] // 2
    sim = z @ z.t() / t
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, labels)


def moco(q, k, queue, t):
    q, k = F.normalize(q, dim=1, eps=1e-12), F.normalize(k, dim=1, eps=1e-12)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.t()], 1) / t
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))


def run_simclr(online, v1, v2, dtype):
    online = online.to(dtype)
    params = list(online.parameters())
    loss = nt_xent(online(v1.to(dtype)), online(v2.to(dtype)), SIMCLR_T)
    lars_(params, torch.autograd.grad(loss, params), [None] * len(params), lr_at(WARMUP))
    return loss.item()


def run_moco(online, target, queue, v1, v2, dtype):
    online, target, queue = online.to(dtype), target.to(dtype), queue.to(dtype)
    params = list(online.parameters())
    q1, q2 = online(v1.to(dtype)), online(v2.to(dtype))
    with torch.no_grad():
        k1, k2 = target(v1.to(dtype)), target(v2.to(dtype))
    loss = moco(q1, k2, queue, MOCO_T) + moco(q2, k1, queue, MOCO_T)
    lars_(params, torch.autograd.grad(loss, params), [None] * len(params), lr_at(WARMUP))
    ema_(target, online, tau_at(WARMUP))
    new_queue = torch.cat([F.normalize(torch.cat([k1, k2]), dim=1, eps=1e-12), queue[2 * B:]])
    return loss.item(), new_queue


def deviation(a, b):
    """Largest |a − b| over a tensor, relative to the tensor's largest |b|."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "step_parity.safetensors"))
    a = ap.parse_args()
    torch.manual_seed(0)
    bt = load_reference()
    online, pred = build(bt)
    # Round the initial state to f32 once: both runs and our test start from these exact values.
    init = {k: v.clone() for k, v in state_of(online, pred).items()}
    views = [(torch.randn(B, 3, S, S), torch.randn(B, 3, S, S)) for _ in range(STEPS)]
    queue0 = F.normalize(torch.randn(QUEUE, PROJ), dim=1)

    results = {}
    for dtype in (torch.float64, torch.float32):
        on, pr = copy.deepcopy(online), copy.deepcopy(pred)
        tg = copy.deepcopy(online)  # target.init = copy
        losses = run_byol(on, pr, tg, views, dtype)
        r = {"byol_loss": torch.tensor(losses, dtype=torch.float64)}
        r.update({"byol/online/" + k: v for k, v in state_of(on, pr).items()})
        r.update({"byol/target/" + k: v for k, v in state_of(tg, None, False).items()})
        on = copy.deepcopy(online)
        r["simclr_loss"] = torch.tensor([run_simclr(on, *views[0], dtype)], dtype=torch.float64)
        r.update({"simclr/online/" + k: v for k, v in state_of(on, None, False).items()})
        on, tg = copy.deepcopy(online), copy.deepcopy(online)
        loss, q = run_moco(on, tg, queue0.clone(), *views[0], dtype)
        r["moco_loss"] = torch.tensor([loss], dtype=torch.float64)
        r.update({"moco/online/" + k: v for k, v in state_of(on, None, False).items()})
        r.update({"moco/target/" + k: v for k, v in state_of(tg, None, False).items()})
        r["moco/queue"] = q.to(torch.float32)
        results[dtype] = r

    ref, f32 = results[torch.float64], results[torch.float32]
    # How far f32-sized perturbations move each quantity: the f64 trajectory again from initial
    # states with every parameter multiplied by (1 + 2⁻²²·N(0, 1)), about 2 ulps of f32.
    gen = torch.Generator().manual_seed(1)
    sensitivity = {k: 0.0 for k in ref if k.startswith("byol")}
    for _ in range(4):
        on, pr = copy.deepcopy(online).double(), copy.deepcopy(pred).double()
        with torch.no_grad():
            for p in list(on.parameters()) + list(pr.parameters()):
                p.mul_(1 + 2.0 ** -22 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        tg = copy.deepcopy(on)
        r = {"byol_loss": torch.tensor(run_byol(on, pr, tg, views, torch.float64), dtype=torch.float64)}
        r.update({"byol/online/" + k: v for k, v in state_of(on, pr).items()})
        r.update({"byol/target/" + k: v for k, v in state_of(tg, None, False).items()})
        for k in sensitivity:
            sensitivity[k] = max(sensitivity[k], deviation(r[k], ref[k]))
    # Losses are kept in f64; the states are stored as f32 (rounding the f64 trajectory adds
    # ≤ 6e-8 relative, far below the deviations measured here).
    f32_dev = {k: deviation(f32[k], ref[k]) for k in ref}
    tensors = {"init/" + k: v for k, v in init.items()}
    for k in range(STEPS):
        tensors[f"views/{k}/1"], tensors[f"views/{k}/2"] = views[k][0].contiguous(), views[k][1].contiguous()
    tensors["moco/queue0"] = queue0.contiguous()
    tensors["lr"] = torch.tensor([lr_at(k) for k in range(STEPS)], dtype=torch.float64)
    tensors["tau"] = torch.tensor([tau_at(k) for k in range(STEPS)], dtype=torch.float64)
    tensors.update({k: v.contiguous() for k, v in ref.items()})
    meta = dict(width=WIDTH, hidden=HIDDEN, proj=PROJ, batch=B, size=S, steps=STEPS, warmup=WARMUP, peak_lr=PEAK_LR,
                weight_decay=WD, momentum=MOMENTUM, eta=ETA, tau_base=TAU_BASE, simclr_t=SIMCLR_T, moco_t=MOCO_T,
                queue=QUEUE, torch=torch.__version__)
    save_file(tensors, a.out, metadata={"recipe": json.dumps(meta), "f32_deviation": json.dumps(f32_dev),
                                         "sensitivity": json.dumps(sensitivity)})
    print(f"wrote {a.out}: {len(tensors)} tensors; losses {ref['byol_loss'].tolist()}")
    print("largest f32-vs-f64 deviations:", sorted(f32_dev.items(), key=lambda kv: -kv[1])[:4])
    print("largest sensitivities to 2-ulp perturbations:", sorted(sensitivity.items(), key=lambda kv: -kv[1])[:4])


if __name__ == "__main__":
    main()
