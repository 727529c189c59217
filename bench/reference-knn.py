#!/usr/bin/env python3
"""The shared PyTorch reference's kNN of one of our encoders: the same measurement by the other
implementation, to tell a difference in how the two BYOLs are evaluated from one in what they
learn.

Loads a ResNet-18 (CIFAR stem) written by `byol export` (torchvision's tensor names) into the
reference's own ResNet (`byol_torch.py`: `stem`, `stages.i.j.{c1,b1,c2,b2,sc}`), reads the
training images and the test split with the reference's `load_split`, and prints the
reference's `knn` (k = 200, T = 0.1, BatchNorm in eval mode), to be set beside
`byol eval knn --checkpoint` of the same checkpoint.

    byol export --checkpoint RUN/checkpoint-….safetensors --out enc.safetensors
    ~/.cache/byol/bench-venv/bin/python bench/reference-knn.py enc.safetensors TRAIN_DIR \\
        [--test ../shared/data/cifar10/test] [--width 8]

TRAIN_DIR: the run's training images as class folders (for the long run's 10,000-image subset,
`~/.cache/byol/runs/reference-subset/train`, which bench/reference-arm.sh links from the run's
index). Needs torch, numpy, pillow and safetensors (bench/detect-check.sh installs them into
the bench venv).
"""
import argparse
import importlib.util
import os

from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))


def reference(path):
    spec = importlib.util.spec_from_file_location("byol_cifar_torch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reference_name(name):
    """torchvision's ResNet tensor name -> the reference's."""
    for tv, ours in (("conv1.", "stem.0."), ("bn1.", "stem.1.")):
        if name.startswith(tv):
            return ours + name[len(tv):]
    if name.startswith("layer"):
        stage, block, rest = int(name[5]) - 1, *name[7:].split(".", 1)
        for tv, ours in (("conv1", "c1"), ("bn1", "b1"), ("conv2", "c2"), ("bn2", "b2"), ("downsample", "sc")):
            rest = rest.replace(tv, ours)
        return f"stages.{stage}.{block}.{rest}"
    return name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export")
    ap.add_argument("train")
    ap.add_argument("--test", default=os.path.join(HERE, "..", "..", "shared", "data", "cifar10", "test"))
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--reference", default=os.path.join(HERE, "..", "..", "shared", "reference", "byol_cifar_torch.py"))
    a = ap.parse_args()
    ref = reference(a.reference)
    bt = ref.load_reference_models()
    enc = bt.ResNet(bt.Basic, [2, 2, 2, 2], True, width=a.width)
    weights = {reference_name(k): v for k, v in load_file(a.export).items() if not k.startswith("fc.")}
    enc.load_state_dict(weights, strict=True)
    xtr, ytr = ref.load_split(a.train)
    xte, yte = ref.load_split(a.test)
    acc = ref.knn(enc, xtr, ytr, xte, yte)
    print(f"the reference's kNN (k=200, T=0.1) of {a.export}: top-1 {100 * acc:.2f}% "
          f"({len(xtr)} training images, {len(xte)} test images)")


if __name__ == "__main__":
    main()
