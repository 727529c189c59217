#!/usr/bin/env python3
"""A class-balanced CIFAR-10 subset as one stream, small enough to carry to a GPU machine.

  cifar-subset.py pack SRC TRAIN TEST > subset      # SRC: ImageFolder with train/ and test/
  cifar-subset.py unpack DEST < subset              # DEST/{train,test}/<class>/<n>.png

The stream: one JSON line (classes, image size, counts per split), then per image one label
byte and its 32×32×3 RGB bytes (the raw pixels are smaller than CIFAR's JPEG files, and xz
compresses them further). The first TRAIN/10 (TEST/10) files of each class in name order;
unpacked as PNG, so both programs read the same pixels.
"""
import json, os, sys
import numpy as np
from PIL import Image


def pack(src, n_train, n_test):
    out = sys.stdout.buffer
    classes = sorted(os.listdir(os.path.join(src, "train")))
    counts = {"train": n_train, "test": n_test}
    out.write((json.dumps({"classes": classes, "size": 32, "counts": counts}) + "\n").encode())
    for split, n in counts.items():
        per = n // len(classes)
        for label, c in enumerate(classes):
            files = sorted(os.listdir(os.path.join(src, split, c)))[:per]
            if len(files) < per:
                raise SystemExit(f"{src}/{split}/{c}: {len(files)} images, {per} wanted")
            for f in files:
                a = np.asarray(Image.open(os.path.join(src, split, c, f)).convert("RGB"), dtype=np.uint8)
                if a.shape != (32, 32, 3):
                    raise SystemExit(f"{src}/{split}/{c}/{f}: {a.shape}, 32×32 RGB expected")
                out.write(bytes([label]) + a.tobytes())


def unpack(dest):
    inp = sys.stdin.buffer
    head = json.loads(inp.readline())
    s = head["size"]
    for split, n in head["counts"].items():
        per = n // len(head["classes"])
        for c in head["classes"]:
            os.makedirs(os.path.join(dest, split, c), exist_ok=True)
        for i in range(per * len(head["classes"])):
            rec = inp.read(1 + s * s * 3)
            if len(rec) != 1 + s * s * 3:
                raise SystemExit(f"the stream ends at image {i} of {split}")
            img = Image.fromarray(np.frombuffer(rec[1:], dtype=np.uint8).reshape(s, s, 3))
            img.save(os.path.join(dest, split, head["classes"][rec[0]], f"{i:05d}.png"))


if __name__ == "__main__":
    if sys.argv[1:2] == ["pack"] and len(sys.argv) == 5:
        pack(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1:2] == ["unpack"] and len(sys.argv) == 3:
        unpack(sys.argv[2])
    else:
        raise SystemExit(__doc__)
