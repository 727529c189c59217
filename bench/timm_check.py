"""Does timm load a ViT that `byol export` wrote, and give our features?

    timm_check.py images DATA OUT            # a small ImageFolder of lossless PNGs from DATA
    timm_check.py compare EXPORT EMBED IMAGES CONSTRUCTOR MEAN STD

`images` copies 4 images of each of 3 classes of DATA's test split into OUT/{train,test}/<class>/
as PNG (lossless, so both sides decode the same pixels). `compare` builds the model with the
`timm.models.vision_transformer.VisionTransformer(...)` call `byol export` printed, loads EXPORT
with `strict=True`, runs it in eval mode on each image of EMBED's index (read from IMAGES,
scaled to [0, 1] and normalised by MEAN and STD, comma-separated) and prints the largest
difference from the features `byol embed` wrote; it exits 1 above 1e-4 of their scale.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file
from safetensors.torch import load_file as load_torch


def images(data, out):
    for split in ("train", "test"):
        for cls in sorted(p.name for p in (Path(data) / "test").iterdir())[:3]:
            files = sorted((Path(data) / "test" / cls).iterdir())[:4]
            dest = Path(out) / split / cls
            dest.mkdir(parents=True, exist_ok=True)
            for f in files:
                Image.open(f).convert("RGB").save(dest / (f.stem + ".png"))


def compare(export, embed, folder, constructor, mean, std):
    import timm  # noqa: F401  (the constructor names it)

    model = eval(constructor, {"timm": timm})
    model.load_state_dict(load_torch(export), strict=True)
    model.eval()
    with safe_open(embed, "np") as f:
        index = json.loads(f.metadata()["index"])
    ours = load_file(embed)["features"]
    mean = torch.tensor([float(x) for x in mean.split(",")]).view(3, 1, 1)
    std = torch.tensor([float(x) for x in std.split(",")]).view(3, 1, 1)
    batch = []
    for entry in index:
        path = Path(entry["name"])  # absolute for a folder source
        if not path.is_absolute():
            path = Path(folder) / entry["split"] / entry["class"] / entry["name"]
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        batch.append((torch.from_numpy(pixels).permute(2, 0, 1) - mean) / std)
    with torch.no_grad():
        theirs = model(torch.stack(batch)).numpy()
    if theirs.shape != ours.shape:
        print(f"shapes differ: timm {theirs.shape}, ours {ours.shape}")
        sys.exit(1)
    scale = float(np.abs(ours).max())
    worst = float(np.abs(theirs - ours).max())
    print(f"{len(index)} images, features {ours.shape[1]} wide: largest difference {worst:.2e} "
          f"(features up to {scale:.2f}; relative {worst / scale:.2e})")
    sys.exit(0 if worst <= 1e-4 * scale else 1)


if __name__ == "__main__":
    if sys.argv[1] == "images":
        images(*sys.argv[2:4])
    else:
        compare(*sys.argv[2:8])
