"""Reference values of timm's evaluation transform (PIL + torchvision) on the foolbox photos.

Writes crates/masksub-cli/tests/fixtures/eval_transform.json: for a few of the ImageNet JPEGs
(size 224, crop_pct 0.875, bicubic) and CIFAR-10 PNGs (size 32, crop_pct 0.875, bicubic), the
normalized CHW values at every 7th row and column, so the file stays small.

Usage: python tools/data/make_eval_fixture.py target/foolbox/x/foolbox/data
"""
import json
import math
import os
import sys

import torch
from PIL import Image
from torchvision import transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
STRIDE = 7


def eval_tf(size, crop_pct):
    return T.Compose([
        T.Resize(math.floor(size / crop_pct), interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])


def main(data_dir):
    out = {"stride": STRIDE, "mean": MEAN, "std": STD, "crop_pct": 0.875, "images": []}
    names = sorted(os.listdir(data_dir))
    picks = [n for n in names if n.startswith("imagenet_")][:4] + \
            [n for n in names if n.startswith("cifar10_")][:4]
    for name in picks:
        size = 224 if name.startswith("imagenet_") else 32
        img = Image.open(os.path.join(data_dir, name)).convert("RGB")
        x = eval_tf(size, 0.875)(img)
        sub = x[:, ::STRIDE, ::STRIDE]
        out["images"].append({
            "file": name,
            "size": size,
            "shape": list(sub.shape),
            "values": [round(float(v), 5) for v in sub.flatten()],
        })
    out["versions"] = {"torch": torch.__version__, "torchvision": __import__("torchvision").__version__,
                       "pillow": Image.__version__}
    dst = os.path.join(os.path.dirname(__file__), "../../crates/masksub-cli/tests/fixtures/eval_transform.json")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "w") as f:
        json.dump(out, f)
    print("wrote", os.path.normpath(dst))


if __name__ == "__main__":
    main(sys.argv[1])
