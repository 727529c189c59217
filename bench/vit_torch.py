#!/usr/bin/env python3
"""The BYOL training step of the `vit-cifar10-cpu` preset in eager PyTorch, for the `vitc32` row of
`byol bench step`: the same ViT (4 px patches of a 32 × 32 view, width 64, 4 pre-norm blocks of 2
heads, MLP ratio 4, LayerNorm ε 1e-6, fixed 2-D sine-cosine positions, the class token as the
representation), projector and predictor Linear(·, 512) → BatchNorm → ReLU → Linear(512, 128), a
target copy of encoder and projector, and one step = online forward on both views, target
forward without gradient, symmetric 2 − 2cos loss, backward, AdamW (lr 1.5e-4 · B/256, β 0.9 /
0.95, weight decay 0.1 except biases, norms and the class token), EMA update at τ 0.99.
Attention is PyTorch's `scaled_dot_product_attention`. Prints one JSON line in the fields of
`byol bench step`.

On a GPU (`--device cuda`, bench/gpu.sh's ViT row) the step is timed between CUDA
synchronisations, and `--precision bf16` runs the encoders under autocast (the heads, loss,
optimiser and EMA in float32), as `byol bench step --precision bf16` does.

Usage: vit_torch.py [--batch 128] [--steps 20] [--warm 3] [--device cpu|cuda] [--precision f32|bf16]
"""
import argparse, copy, json, math, time
import torch, torch.nn as nn, torch.nn.functional as F

WIDTH, DEPTH, HEADS, PATCH, SIZE, HIDDEN, OUT = 64, 4, 2, 4, 32, 512, 128


def sincos(grid, d):
    q = d // 4
    omega = 1.0 / (10000 ** (torch.arange(q, dtype=torch.float64) / q))
    k = torch.arange(grid * grid)
    row, col = (k // grid).double()[:, None] * omega, (k % grid).double()[:, None] * omega
    pe = torch.cat([row.sin(), row.cos(), col.sin(), col.cos()], 1)
    return torch.cat([torch.zeros(1, d, dtype=torch.float64), pe]).float()[None]


class Block(nn.Module):
    def __init__(s, d, h):
        super().__init__()
        s.h = h
        s.norm1, s.norm2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        s.qkv, s.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        s.fc1, s.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(s, x):
        b, n, d = x.shape
        q, k, v = s.qkv(s.norm1(x)).reshape(b, n, 3, s.h, d // s.h).permute(2, 0, 3, 1, 4)
        x = x + s.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        return x + s.fc2(F.gelu(s.fc1(s.norm2(x))))


class Vit(nn.Module):
    def __init__(s):
        super().__init__()
        s.patch = nn.Conv2d(3, WIDTH, PATCH, PATCH)
        s.cls_token = nn.Parameter(torch.randn(1, 1, WIDTH) * 0.02)
        s.register_buffer("pos", sincos(SIZE // PATCH, WIDTH))
        s.blocks = nn.ModuleList(Block(WIDTH, HEADS) for _ in range(DEPTH))
        s.norm = nn.LayerNorm(WIDTH, eps=1e-6)

    def forward(s, x):
        x = s.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([s.cls_token.expand(x.shape[0], -1, -1), x], 1) + s.pos
        for blk in s.blocks:
            x = blk(x)
        return s.norm(x)[:, 0]


def mlp(i):
    return nn.Sequential(nn.Linear(i, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    a = ap.parse_args()
    dev = torch.device(a.device)
    low = a.precision == "bf16"
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    online = nn.ModuleDict(dict(encoder=Vit(), projector=mlp(WIDTH), predictor=mlp(OUT))).to(dev)
    target = nn.ModuleDict(dict(encoder=copy.deepcopy(online.encoder), projector=copy.deepcopy(online.projector)))
    for p in target.parameters():
        p.requires_grad_(False)
    decay = [p for n, p in online.named_parameters() if p.ndim > 1 and not n.endswith("cls_token")]
    rest = [p for n, p in online.named_parameters() if not (p.ndim > 1 and not n.endswith("cls_token"))]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=0.1), dict(params=rest, weight_decay=0.0)],
                            lr=1.5e-4 * a.batch / 256, betas=(0.9, 0.95))

    def loss_fn(p, z):
        return (2 - 2 * F.cosine_similarity(p, z, dim=-1)).mean()

    def encode(net, v):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=low):
            y = net.encoder(v)
        return y.float()

    def step(v1, v2, tau):
        p1 = online.predictor(online.projector(encode(online, v1)))
        p2 = online.predictor(online.projector(encode(online, v2)))
        with torch.no_grad():
            z1 = target.projector(encode(target, v1))
            z2 = target.projector(encode(target, v2))
        loss = loss_fn(p1, z2) + loss_fn(p2, z1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for name in ("encoder", "projector"):
                for t, o in zip(target[name].parameters(), online[name].parameters()):
                    t.mul_(tau).add_(o, alpha=1 - tau)
        return loss

    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(a.batch, 3, SIZE, SIZE, generator=gen).to(dev) for _ in range(4)]
    t0 = time.time()
    for i in range(a.warm):
        loss = step(xs[i % 4], xs[(i + 1) % 4], 0.99)
    sync()
    warm_s = time.time() - t0
    times = []
    for i in range(a.steps):
        sync()
        t = time.time()
        loss = step(xs[i % 4], xs[(i + 1) % 4], 0.99)
        sync()
        times.append(time.time() - t)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps(dict(cfg="vitc32", device=a.device, torch=torch.__version__, batch=a.batch,
                          dtype="bfloat16" if low else "float32",
                          step_ms_median=round(med * 1e3, 3), samples_per_s=round(a.batch / med, 1),
                          warmup_s=round(warm_s, 1), loss=float(loss.detach()),
                          threads=torch.get_num_threads())), flush=True)


if __name__ == "__main__":
    main()
