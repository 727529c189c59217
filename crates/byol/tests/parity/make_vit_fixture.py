#!/usr/bin/env python3
"""Writes vit_step_parity.safetensors: a few BYOL training steps of a tiny Vision Transformer
computed by PyTorch from a stored initial state on stored views, for tests/parity.rs.

The ViT is written here in plain PyTorch from MoCo v3's (Chen, Xie & He 2021) and timm's
definitions: a convolution with kernel and stride the patch size, a class token, fixed 2-D
sine-cosine position embeddings (MoCo v3's `build_2d_sincos_position_embedding`), pre-norm blocks
(LayerNorm ε 1e-6 → multi-head self-attention with one fused qkv projection → residual;
LayerNorm → Linear(D, 4D) → exact GELU → Linear(4D, D) → residual), a final LayerNorm; the
representation is the mean of the patch tokens (the class token barely varies across a batch at
initialisation, and the heads' BatchNorm would magnify f32 rounding beyond any honest bound).
Projector and predictor: Linear → BatchNorm (training mode, running averages of the biased
variance, as the official BYOL code) → ReLU → Linear. The step: both views through the online
network and the target (a copy), the symmetrised 2 − 2cos loss, AdamW as MoCo v3 trains ViTs
(bias-corrected moments, decoupled weight decay skipped for biases, norms and the class token), a
linear warm-up then cosine learning rate, and the EMA with the cosine τ schedule.

As make_fixture.py: the trajectory in float64 (the reference) and in float32, and the f64
trajectory again from initial states perturbed by 2 ulps of f32, store the scale of what f32
rounding does to every quantity.

Usage: python3 make_vit_fixture.py [--out vit_step_parity.safetensors]   (needs torch, safetensors)
"""
import argparse, copy, json, math, os, sys
import torch, torch.nn as nn, torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixture import deviation, haiku_bn_forward, regression  # noqa: E402  (the ResNet fixture's)

# The recipe (tests/parity.rs builds the same config).
WIDTH, DEPTH, HEADS, PATCH, HIDDEN, PROJ = 16, 2, 2, 4, 32, 16
B, S, STEPS, WARMUP = 8, 16, 4, 1
PEAK_LR, WD, BETA1, BETA2, EPS = 1e-3, 0.1, 0.9, 0.95, 1e-8
TAU_BASE = 0.9


def sincos(grid, d):
    q = d // 4
    omega = 1.0 / (10000 ** (torch.arange(q, dtype=torch.float64) / q))
    k = torch.arange(grid * grid)
    row, col = (k // grid).double()[:, None] * omega, (k % grid).double()[:, None] * omega
    pe = torch.cat([row.sin(), row.cos(), col.sin(), col.cos()], 1)
    return torch.cat([torch.zeros(1, d, dtype=torch.float64), pe])[None]


class Block(nn.Module):
    def __init__(s):
        super().__init__()
        s.norm1, s.norm2 = nn.LayerNorm(WIDTH, eps=1e-6), nn.LayerNorm(WIDTH, eps=1e-6)
        s.qkv, s.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
        s.fc1, s.fc2 = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)

    def forward(s, x):
        b, n, d = x.shape
        q, k, v = s.qkv(s.norm1(x)).reshape(b, n, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // HEADS), -1) @ v
        x = x + s.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + s.fc2(F.gelu(s.fc1(s.norm2(x))))


class Vit(nn.Module):
    def __init__(s):
        super().__init__()
        s.patch = nn.Conv2d(3, WIDTH, PATCH, PATCH)
        s.cls_token = nn.Parameter(torch.randn(1, 1, WIDTH) * 0.02)
        s.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        s.norm = nn.LayerNorm(WIDTH, eps=1e-6)

    def forward(s, x):
        x = s.patch(x).flatten(2).transpose(1, 2)
        pos = sincos(S // PATCH, WIDTH).to(x.dtype)
        x = torch.cat([s.cls_token.expand(x.shape[0], -1, -1), x], 1) + pos
        for blk in s.blocks:
            x = blk(x)
        return s.norm(x)[:, 1:].mean(1)


def mlp(i):
    m = nn.Sequential(nn.Linear(i, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, PROJ))
    m[1].forward = haiku_bn_forward.__get__(m[1])
    return m


def build():
    online = nn.ModuleDict(dict(encoder=Vit(), projector=mlp(WIDTH), predictor=mlp(PROJ)))
    # Random biases, norms and running statistics: a parity test must not hide a term behind 1s
    # and 0s.
    with torch.no_grad():
        for name, p in online.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.2, 0.2)
            elif p.ndim == 1:
                p.uniform_(0.5, 1.5)
        for name, b in online.named_buffers():
            if name.endswith("running_mean"):
                b.uniform_(-0.1, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    return online


def our_name(k):
    """PyTorch key → (our path, needs transpose). Our Linear weights are [in, out]."""
    parts = k.split(".")
    module, tensor = ".".join(parts[:-1]), parts[-1]
    renames = {"encoder.patch": "encoder.patch_embed.proj"}
    for head in ("projector", "predictor"):
        renames.update({f"{head}.0": f"{head}.fc1", f"{head}.1": f"{head}.bn", f"{head}.3": f"{head}.fc2"})
    if parts[1:2] == ["blocks"]:
        inner = {"qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
        module = ".".join(parts[:3] + [inner.get(parts[3], parts[3])])
    module = renames.get(module, module)
    norm = module.rsplit(".", 1)[-1] in ("norm1", "norm2", "norm", "bn")
    if norm:
        tensor = {"weight": "gamma", "bias": "beta"}.get(tensor, tensor)
    linear = tensor == "weight" and module.rsplit(".", 1)[-1] in ("qkv", "proj", "fc1", "fc2") and module != "encoder.patch_embed.proj"
    return (f"{module}.{tensor}" if module else tensor), linear


def state_of(net, keep):
    """Our path → float32 tensor, for the parts of `net` named in `keep`."""
    res = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked") or k.split(".")[0] not in keep:
            continue
        path, transpose = our_name(k)
        res[path] = (v.t() if transpose else v).detach().to(torch.float32).contiguous()
    return res


def excluded(name, p):
    return p.ndim == 1 or name.endswith("cls_token")


def adamw_(named, grads, state, lr, t):
    with torch.no_grad():
        for i, ((name, p), g) in enumerate(zip(named, grads)):
            m, v = state.get(i, (torch.zeros_like(p), torch.zeros_like(p)))
            m = BETA1 * m + (1 - BETA1) * g
            v = BETA2 * v + (1 - BETA2) * g * g
            state[i] = (m, v)
            upd = (m / (1 - BETA1 ** t)) / ((v / (1 - BETA2 ** t)).sqrt() + EPS)
            if not excluded(name, p):
                upd = upd + WD * p
            p -= lr * upd


def ema_(target, online, tau):
    with torch.no_grad():
        for name in ("encoder", "projector"):
            for t, o in zip(target[name].parameters(), online[name].parameters()):
                t.mul_(tau).add_(o, alpha=1 - tau)


def lr_at(k):
    if k < WARMUP:
        return PEAK_LR * k / WARMUP
    return PEAK_LR * 0.5 * (1 + math.cos(math.pi * (k - WARMUP) / (STEPS - WARMUP)))


def tau_at(k):
    return 1 - (1 - TAU_BASE) * (math.cos(math.pi * k / STEPS) + 1) / 2


def run_byol(online, target, views, dtype):
    online, target = online.to(dtype), target.to(dtype)
    named = list(online.named_parameters())
    state, losses = {}, []
    f = lambda x: online.predictor(online.projector(online.encoder(x)))
    g = lambda x: target.projector(target.encoder(x))
    for k, (v1, v2) in enumerate(views):
        v1, v2 = v1.to(dtype), v2.to(dtype)
        p1, p2 = f(v1), f(v2)
        with torch.no_grad():
            z1, z2 = g(v1), g(v2)
        loss = regression(p1, z2).mean() + regression(p2, z1).mean()
        grads = torch.autograd.grad(loss, [p for _, p in named])
        adamw_(named, grads, state, lr_at(k), k + 1)
        ema_(target, online, tau_at(k))
        losses.append(loss.item())
    return losses


def trajectory(online, views, dtype):
    on, tg = copy.deepcopy(online), copy.deepcopy(online)  # target.init = copy
    losses = run_byol(on, tg, views, dtype)
    r = {"byol_loss": torch.tensor(losses, dtype=torch.float64)}
    r.update({"byol/online/" + k: v for k, v in state_of(on, ("encoder", "projector", "predictor")).items()})
    r.update({"byol/target/" + k: v for k, v in state_of(tg, ("encoder", "projector")).items()})
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "vit_step_parity.safetensors"))
    a = ap.parse_args()
    torch.manual_seed(0)
    online = build()
    # Round the initial state to f32 once: both runs and our test start from these exact values.
    with torch.no_grad():
        for p in online.parameters():
            p.copy_(p.float())
    init = state_of(online, ("encoder", "projector", "predictor"))
    views = [(torch.randn(B, 3, S, S), torch.randn(B, 3, S, S)) for _ in range(STEPS)]
    ref = trajectory(online, views, torch.float64)
    f32 = trajectory(online, views, torch.float32)
    gen = torch.Generator().manual_seed(1)
    sensitivity = {k: 0.0 for k in ref}
    for _ in range(4):
        on = copy.deepcopy(online).double()
        with torch.no_grad():
            for p in on.parameters():
                p.mul_(1 + 2.0 ** -22 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        r = trajectory(on, views, torch.float64)
        for k in sensitivity:
            sensitivity[k] = max(sensitivity[k], deviation(r[k], ref[k]))
    f32_dev = {k: deviation(f32[k], ref[k]) for k in ref}
    tensors = {"init/" + k: v for k, v in init.items()}
    for k in range(STEPS):
        tensors[f"views/{k}/1"], tensors[f"views/{k}/2"] = views[k][0].contiguous(), views[k][1].contiguous()
    tensors["lr"] = torch.tensor([lr_at(k) for k in range(STEPS)], dtype=torch.float64)
    tensors["tau"] = torch.tensor([tau_at(k) for k in range(STEPS)], dtype=torch.float64)
    tensors.update({k: v.contiguous() for k, v in ref.items()})
    meta = dict(width=WIDTH, depth=DEPTH, heads=HEADS, patch=PATCH, hidden=HIDDEN, proj=PROJ, batch=B, size=S,
                steps=STEPS, warmup=WARMUP, peak_lr=PEAK_LR, weight_decay=WD, beta1=BETA1, beta2=BETA2, eps=EPS,
                tau_base=TAU_BASE, torch=torch.__version__)
    save_file(tensors, a.out, metadata={"recipe": json.dumps(meta), "f32_deviation": json.dumps(f32_dev),
                                         "sensitivity": json.dumps(sensitivity)})
    print(f"wrote {a.out}: {len(tensors)} tensors; losses {ref['byol_loss'].tolist()}")
    print("largest f32-vs-f64 deviations:", sorted(f32_dev.items(), key=lambda kv: -kv[1])[:4])
    print("largest sensitivities to 2-ulp perturbations:", sorted(sensitivity.items(), key=lambda kv: -kv[1])[:4])


if __name__ == "__main__":
    main()
