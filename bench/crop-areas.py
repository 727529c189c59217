"""The crop boxes of the two BYOLs of the long run, drawn many times: the share of the image each
view keeps (area fraction) under our random resized crop and under the shared PyTorch reference's.

Ours (`crates/byol/src/augment/ops.rs`, `sample_crop`; torchvision's algorithm, as BYOL's official
code): area fraction ~ U[0.08, 1], log aspect ~ U[log 3/4, log 4/3], width and height rounded to
whole pixels, up to 10 tries until the box fits the image, else the whole (square) image.
The reference (`../shared/reference/byol_cifar_torch.py`, `views`): the same two draws once, the
box's width and height each clamped to the image instead of drawn again, so a large box of
another shape than the image's is kept, smaller, rather than rejected.

    python3 bench/crop-areas.py [DRAWS]     # default 200,000; prints one line per method
"""

import math
import random
import sys

LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))


def ours(side=32):
    area = side * side
    for _ in range(10):
        target = area * random.uniform(0.08, 1.0)
        r = math.exp(random.uniform(*LOG_RATIO))
        w, h = round(math.sqrt(target * r)), round(math.sqrt(target / r))
        if 1 <= w <= side and 1 <= h <= side:
            return w * h / area
    return 1.0


def reference():
    a = 0.08 + 0.92 * random.random()
    r = math.exp(LOG_RATIO[0] + (LOG_RATIO[1] - LOG_RATIO[0]) * random.random())
    return min(math.sqrt(a * r), 1.0) * min(math.sqrt(a / r), 1.0)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    random.seed(0)
    for name, draw in (("ours", ours), ("reference", reference)):
        a = sorted(draw() for _ in range(n))
        print(
            f"{name:9s}  mean area {sum(a) / n:.3f}  median {a[n // 2]:.3f}  "
            f"P(area > 0.8) {sum(x > 0.8 for x in a) / n:.3f}  "
            f"P(area < 0.2) {sum(x < 0.2 for x in a) / n:.3f}"
        )


if __name__ == "__main__":
    main()
