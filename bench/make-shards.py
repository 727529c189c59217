"""A large image set as WebDataset tar shards, written by Python's tarfile (not by `byol shard`):
COUNT small JPEGs made from the CIFAR-10 training images, each a random crop of the 4-px padded
image, flipped half the time, re-encoded at quality 90, with its class in `<key>.cls`; 10,000
samples per shard. Also the CIFAR-10 test images as the test split. No manifest is written.

Usage: make-shards.py CIFAR10_FOLDER OUT COUNT
"""
import io
import os
import random
import sys
import tarfile

from PIL import Image, ImageOps

src, out, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
classes = sorted(os.listdir(os.path.join(src, "train")))


def files(split):
    return [(os.path.join(src, split, c, f), i) for i, c in enumerate(classes) for f in sorted(os.listdir(os.path.join(src, split, c)))]


def add(tar, key, data, cls):
    for name, payload in ((f"{key}.jpg", data), (f"{key}.cls", str(cls).encode())):
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))


def write(split, items, per_shard, jitter):
    os.makedirs(os.path.join(out, split), exist_ok=True)
    rng = random.Random(0)
    for s in range(0, len(items), per_shard):
        path = os.path.join(out, split, f"shard-{s // per_shard:06d}.tar")
        with tarfile.open(path + ".part", "w") as tar:
            for k, (f, cls) in enumerate(items[s:s + per_shard], start=s):
                im = Image.open(f).convert("RGB")
                if jitter:
                    im = ImageOps.expand(im, 4, fill=(0, 0, 0))
                    x, y = rng.randrange(9), rng.randrange(9)
                    im = im.crop((x, y, x + 32, y + 32))
                    if rng.random() < 0.5:
                        im = ImageOps.mirror(im)
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=90)
                add(tar, f"{k:08d}", buf.getvalue(), cls)
        os.replace(path + ".part", path)


train = files("train")
rng = random.Random(1)
items = [train[rng.randrange(len(train))] for _ in range(count)]
write("train", items, 10_000, True)
write("test", files("test"), 10_000, False)
