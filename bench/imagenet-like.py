"""ImageNet-like JPEGs from CIFAR-10: each 32×32 image upscaled (bicubic) to 500×375, the mean
ImageNet size, and saved as JPEG quality 90, in an ImageFolder (OUT/<class>/<image>.jpg).

Usage: imagenet-like.py CIFAR_SPLIT_FOLDER OUT PER_CLASS
"""
import os
import sys

from PIL import Image

src, dst, per = sys.argv[1], sys.argv[2], int(sys.argv[3])
for c in sorted(os.listdir(src)):
    os.makedirs(os.path.join(dst, c), exist_ok=True)
    for f in sorted(os.listdir(os.path.join(src, c)))[:per]:
        im = Image.open(os.path.join(src, c, f)).convert("RGB").resize((500, 375), Image.BICUBIC)
        im.save(os.path.join(dst, c, os.path.splitext(f)[0] + ".jpg"), quality=90)
