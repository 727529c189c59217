"""PyTorch's input path on the same files as `byol bench decode`: a DataLoader whose workers
read each JPEG with PIL, decode it, and make the two random resized crops of BYOL's views with
torchvision.transforms.v2 (RandomResizedCrop(size, scale=(0.08, 1)), as uint8 tensors), batches
of 64 collated in the main process. Prints one JSON line: images per second (median of the timed
passes, after one untimed pass that also starts the workers and fills the page cache).

Usage: decode_torch.py FOLDER --workers N [--size 224] [--passes 3]
"""
import argparse
import json
import os
import statistics
import time

import torch
import torchvision

TENSOR = False
from PIL import Image
from torchvision.transforms import v2


class TwoViews(torch.utils.data.Dataset):
    def __init__(self, files, size):
        self.files = files
        rrc = v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True)
        # On the PIL image (PIL's resize), as torchvision's ImageNet recipes do; `--tensor` crops
        # the uint8 tensor instead (torch's resize kernels).
        self.crop = v2.Compose([v2.PILToTensor(), rrc] if TENSOR else [rrc, v2.PILToTensor()])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as im:
            img = im.convert("RGB")
        return self.crop(img), self.crop(img)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--tensor", action="store_true")
    a = ap.parse_args()
    global TENSOR
    TENSOR = a.tensor
    root = os.path.join(a.folder, "train") if os.path.isdir(os.path.join(a.folder, "train")) else a.folder
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.lower().endswith((".jpg", ".jpeg", ".png")))
    torch.set_num_threads(1)
    loader = torch.utils.data.DataLoader(
        TwoViews(files, a.size), batch_size=64, num_workers=a.workers, persistent_workers=a.workers > 0, shuffle=True
    )

    def one_pass():
        n = 0
        for v1, v2_ in loader:
            n += v1.shape[0]
        return n

    one_pass()
    times = []
    for _ in range(a.passes):
        t = time.perf_counter()
        n = one_pass()
        times.append(time.perf_counter() - t)
    s = statistics.median(times)
    print(json.dumps({
        "images": n, "workers": a.workers, "crop_on": "tensor" if a.tensor else "pil", "size": a.size, "passes": a.passes, "seconds": s,
        "images_per_sec": n / s, "images_per_sec_per_worker": n / s / max(a.workers, 1),
        "torch": torch.__version__, "torchvision": torchvision.__version__, "pillow": Image.__version__,
    }))


if __name__ == "__main__":
    main()
