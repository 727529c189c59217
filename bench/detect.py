#!/usr/bin/env python3
"""Object detection through the torchvision-layout export: the path a user takes to the paper's
Table 4 detection column (VOC07+12, Faster R-CNN, AP50).

The encoder that `byol export` (or `byol eval finetune --save-encoder`) wrote is loaded, by its
torchvision names, into a PyTorch ResNet of the architecture the file records (torchvision's
`BasicBlock`/`Bottleneck` layout at any base width, CIFAR or ImageNet stem), and becomes the
backbone of torchvision's `FasterRCNN`. Deviation from the paper's R50-C4: the encoder's last
stage is the single feature map (no C4 split, no FPN), with three anchor sizes and a small box
head (256 wide); the whole network is fine-tuned with SGD. Scored by VOC's AP at IoU 0.5 (all
points of the precision-recall curve, as VOC2010+), the mean over classes.

Data: a folder in PASCAL VOC's detection layout (`JPEGImages/<id>.jpg`, `Annotations/<id>.xml`,
`ImageSets/Main/{train,val}.txt`). `--make-data DIR --cifar PATH` writes a small one that fits a
CPU: 1-3 CIFAR-10 images per picture, scaled, pasted on a background made of
another CIFAR image blurred and enlarged, each box labelled with its image's class; training
pictures from the training split, validation ones from the test split. Pictures are `--size`
px square (default 96) with objects of 3/16 to 3/8 of that side, anchors of 1/8, 1/4 and 1/2.

    python bench/detect.py --make-data /tmp/voc-det --cifar ../shared/data/cifar10
    python bench/detect.py --data /tmp/voc-det --encoder encoder.safetensors [--random-init]

Prints one JSON line: AP50 (mean and per class), settings and seconds.
"""

import argparse
import json
import math
import os
import random
import time
import xml.etree.ElementTree as ET

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageFilter

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None


# --- the encoder, with torchvision's names ---------------------------------------------------

def shortcut(cin, cout, stride):
    """torchvision's projection shortcut, where a block changes the shape; else None."""
    if stride != 1 or cin != cout:
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    return None


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(cin, cout, stride)

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        h = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(h)) + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(cin, cout, stride)

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        return self.relu(self.bn3(self.conv3(h)) + idt)


LAYOUT = {
    "resnet18": ([2, 2, 2, 2], BasicBlock),
    "resnet34": ([3, 4, 6, 3], BasicBlock),
    "resnet50": ([3, 4, 6, 3], Bottleneck),
    "resnet101": ([3, 4, 23, 3], Bottleneck),
    "resnet152": ([3, 8, 36, 3], Bottleneck),
    "resnet200": ([3, 24, 36, 3], Bottleneck),
}


class Encoder(nn.Module):
    """byol's ResNet v1 (torchvision's layout and names) up to the last stage's feature map."""

    def __init__(self, arch, base_width, width_multiplier, stem):
        super().__init__()
        blocks, block = LAYOUT[arch]
        w0 = base_width * width_multiplier
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, w0, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(3, w0, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(w0)
        self.relu = nn.ReLU(inplace=True)
        cin = w0
        for i, n in enumerate(blocks):
            width = w0 * 2**i
            layer = []
            for b in range(n):
                layer.append(block(cin, width, 2 if b == 0 and i > 0 else 1))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.out_channels = cin

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def load_encoder(path, random_init):
    from safetensors import safe_open
    from safetensors.torch import load_file

    meta = safe_open(path, "pt").metadata() or {}
    if "encoder" not in meta:
        raise SystemExit(f"{path}: no `encoder` metadata; write it with `byol export`")
    if tomllib is None:
        raise SystemExit("Python 3.11 or later is needed to read the encoder's TOML metadata")
    cfg = tomllib.loads(meta["encoder"])
    enc = Encoder(cfg["arch"], cfg.get("base-width", 64), cfg.get("width-multiplier", 1), cfg["stem"])
    if not random_init:
        state = {k: v for k, v in load_file(path).items() if not k.startswith(("fc.", "projector."))}
        missing, unexpected = enc.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise SystemExit(f"{path}: missing {missing}, unexpected {unexpected}")
    return enc, cfg


# --- the data ---------------------------------------------------------------------------------

def cifar_files(root, split):
    d = os.path.join(root, split)
    classes = sorted(os.listdir(d))
    files = [(os.path.join(d, c, f), k) for k, c in enumerate(classes) for f in sorted(os.listdir(os.path.join(d, c)))]
    return classes, files


def make_data(out, cifar, n_train, n_val, size, seed):
    for sub in ["JPEGImages", "Annotations", "ImageSets/Main"]:
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    for split, count in [("train", n_train), ("val", n_val)]:
        classes, files = cifar_files(cifar, "train" if split == "train" else "test")
        rng = random.Random(f"{seed}-{split}")
        ids = []
        for i in range(count):
            bg = Image.open(rng.choice(files)[0]).convert("RGB").resize((size, size), Image.BILINEAR)
            bg = bg.filter(ImageFilter.GaussianBlur(6))
            objects = []
            for _ in range(rng.randint(1, 3)):
                path, k = rng.choice(files)
                s = rng.randint(3 * size // 16, 3 * size // 8)
                for _try in range(20):
                    x, y = rng.randint(0, size - s), rng.randint(0, size - s)
                    if all(iou((x, y, x + s, y + s), o[1]) < 0.3 for o in objects):
                        break
                bg.paste(Image.open(path).convert("RGB").resize((s, s), Image.BILINEAR), (x, y))
                objects.append((classes[k], (x, y, x + s, y + s)))
            id_ = f"{split}-{i:06d}"
            bg.save(os.path.join(out, "JPEGImages", id_ + ".jpg"), quality=95)
            ann = ET.Element("annotation")
            sz = ET.SubElement(ann, "size")
            for tag, v in [("width", size), ("height", size), ("depth", 3)]:
                ET.SubElement(sz, tag).text = str(v)
            for name, (x0, y0, x1, y1) in objects:
                o = ET.SubElement(ann, "object")
                ET.SubElement(o, "name").text = name
                ET.SubElement(o, "difficult").text = "0"
                bb = ET.SubElement(o, "bndbox")
                # VOC's boxes are 1-based and inclusive.
                for tag, v in [("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)]:
                    ET.SubElement(bb, tag).text = str(v)
            ET.ElementTree(ann).write(os.path.join(out, "Annotations", id_ + ".xml"))
            ids.append(id_)
        with open(os.path.join(out, "ImageSets/Main", split + ".txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
    print(f"wrote {n_train} training and {n_val} validation pictures to {out}")


def read_split(root, split):
    list_path = os.path.join(root, "ImageSets/Main", split + ".txt")
    if not os.path.exists(list_path):
        raise SystemExit(f"{list_path}: no such file (the split list of a VOC detection layout)")
    samples = []
    for id_ in open(list_path).read().split():
        ann = ET.parse(os.path.join(root, "Annotations", id_ + ".xml")).getroot()
        boxes, names, difficult = [], [], []
        for o in ann.findall("object"):
            bb = o.find("bndbox")
            x0, y0, x1, y1 = (float(bb.find(t).text) for t in ["xmin", "ymin", "xmax", "ymax"])
            boxes.append([x0 - 1, y0 - 1, x1, y1])
            names.append(o.find("name").text)
            difficult.append(int((o.find("difficult").text if o.find("difficult") is not None else "0") or 0))
        samples.append((os.path.join(root, "JPEGImages", id_ + ".jpg"), boxes, names, difficult))
    return samples


# --- scoring ----------------------------------------------------------------------------------

def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def voc_ap50(detections, truths, classes):
    """VOC's AP at IoU 0.5 per class (all points, VOC2010+), difficult boxes neither counted
    nor penalised. detections: [(image, class, score, box)]; truths: {image: [(class, box, difficult)]}."""
    aps = {}
    for c in classes:
        gts = {i: [(b, d) for (k, b, d) in t if k == c] for i, t in truths.items()}
        n_pos = sum(1 for t in gts.values() for (_, d) in t if not d)
        if n_pos == 0:
            continue
        used = {i: [False] * len(t) for i, t in gts.items()}
        dets = sorted([d for d in detections if d[1] == c], key=lambda d: -d[2])
        tp, fp = [], []
        for img, _, _, box in dets:
            best, j_best = 0.0, -1
            for j, (b, _) in enumerate(gts.get(img, [])):
                o = iou(box, b)
                if o > best:
                    best, j_best = o, j
            if best >= 0.5:
                if gts[img][j_best][1]:
                    continue
                if not used[img][j_best]:
                    used[img][j_best] = True
                    tp.append(1), fp.append(0)
                    continue
            tp.append(0), fp.append(1)
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / n_pos if len(tp) else np.zeros(0)
        precision = tp / np.maximum(tp + fp, 1e-9) if len(tp) else np.zeros(0)
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        idx = np.where(mrec[1:] != mrec[:-1])[0]
        aps[c] = float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))
    return aps


def self_check():
    """AP50 by hand: one class, two truths; detections (0.9 hit, 0.8 miss, 0.7 hit) give
    precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: AP = 1/2·1 + 1/2·2/3 = 5/6."""
    truths = {"a": [("x", (0, 0, 10, 10), 0)], "b": [("x", (0, 0, 10, 10), 0)]}
    dets = [("a", "x", 0.9, (0, 0, 10, 10)), ("a", "x", 0.8, (20, 20, 30, 30)), ("b", "x", 0.7, (1, 1, 10, 10))]
    ap = voc_ap50(dets, truths, ["x"])["x"]
    assert abs(ap - 5 / 6) < 1e-9, ap


# --- training ---------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--make-data")
    p.add_argument("--cifar", default="../shared/data/cifar10")
    p.add_argument("--train", type=int, default=400)
    p.add_argument("--val", type=int, default=150)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--data")
    p.add_argument("--encoder")
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    self_check()
    if a.make_data:
        make_data(a.make_data, a.cifar, a.train, a.val, a.size, a.seed)
        return
    if not (a.data and a.encoder):
        raise SystemExit("--data and --encoder are needed (or --make-data)")
    if a.threads:
        torch.set_num_threads(a.threads)
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(a.seed)
    random.seed(a.seed)
    train, val = read_split(a.data, "train"), read_split(a.data, "val")
    classes = sorted({n for s in train + val for n in s[2]})
    backbone, cfg = load_encoder(a.encoder, a.random_init)
    # FasterRCNN takes a backbone that returns one tensor as the feature map "0".
    model = FasterRCNN(
        backbone,
        rpn_anchor_generator=AnchorGenerator(sizes=((a.size // 8, a.size // 4, a.size // 2),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(backbone.out_channels * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, len(classes) + 1),
        min_size=a.size,
        max_size=a.size,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        # Few objects per small picture: fewer proposals and sampled boxes than torchvision's
        # defaults for COCO (2,000 proposals, 512 boxes), so that a CPU trains it in minutes.
        rpn_pre_nms_top_n_train=300,
        rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=64,
        box_batch_size_per_image=64,
    )
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.SGD(params, lr=a.lr, momentum=0.9, weight_decay=1e-4)
    steps = a.epochs * math.ceil(len(train) / a.batch)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.7 * steps), int(0.9 * steps)], 0.1)

    def load(sample, flip):
        path, boxes, names, _ = sample
        img = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        if flip:
            w = img.shape[2]
            img = img.flip(2)
            b = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
        return img, {"boxes": b, "labels": torch.tensor([classes.index(n) + 1 for n in names], dtype=torch.int64)}

    started = time.time()
    losses = []
    for epoch in range(a.epochs):
        model.train()
        order = list(range(len(train)))
        random.shuffle(order)
        total = 0.0
        for s in range(0, len(order), a.batch):
            batch = [load(train[i], random.random() < 0.5) for i in order[s : s + a.batch]]
            loss = sum(model([b[0] for b in batch], [b[1] for b in batch]).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        losses.append(total / math.ceil(len(order) / a.batch))
    model.eval()
    detections, truths = [], {}
    with torch.no_grad():
        for i, sample in enumerate(val):
            img, _ = load(sample, False)
            out = model([img])[0]
            for box, label, score in zip(out["boxes"].tolist(), out["labels"].tolist(), out["scores"].tolist()):
                detections.append((i, classes[label - 1], score, box))
            truths[i] = [(n, b, d) for b, n, d in zip(sample[1], sample[2], sample[3])]
    aps = voc_ap50(detections, truths, classes)
    print(json.dumps({
        "ap50": sum(aps.values()) / len(aps),
        "per_class": aps,
        "encoder": "random-init" if a.random_init else a.encoder,
        "architecture": cfg,
        "train_images": len(train),
        "val_images": len(val),
        "epochs": a.epochs,
        "epoch_losses": losses,
        "seed": a.seed,
        "seconds": time.time() - started,
    }))


if __name__ == "__main__":
    main()
