"""Small synthetic progressive JPEGs (libjpeg-turbo via Pillow, with its successive-approximation
refinement scans) for crates/masksub-data/tests/progressive_decode.rs, which checks that the
patched zune-jpeg decodes them exactly like upstream zune-jpeg (the `image` crate's decoder).

Covers 4:4:4, 4:2:2, 4:2:0 and grayscale, odd sizes, qualities 30-95 and restart intervals.
The pictures are generated (gradients, discs, noise), so the files carry no third-party content.

Usage: python tools/data/make_progressive_fixtures.py crates/masksub-data/tests/fixtures/progressive
"""
import os
import sys

import numpy as np
from PIL import Image

CASES = [
    # (width, height, mode, subsampling, quality, restart interval in MCUs or 0)
    (64, 48, "RGB", 0, 95, 0),
    (97, 61, "RGB", 1, 80, 0),
    (120, 90, "RGB", 2, 75, 0),
    (33, 129, "RGB", 2, 30, 0),
    (150, 100, "RGB", 2, 90, 4),
    (71, 53, "L", 0, 85, 0),
    (200, 150, "RGB", 2, 60, 0),
    (17, 9, "RGB", 1, 50, 1),
]


def picture(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], axis=-1)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(3, max(w, h) / 3)
        inside = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        img[inside] = rng.uniform(0, 255, size=3)
    img += rng.normal(0, 12, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def main(out):
    os.makedirs(out, exist_ok=True)
    for i, (w, h, mode, sub, q, rst) in enumerate(CASES):
        img = Image.fromarray(picture(w, h, i), "RGB").convert(mode)
        name = f"p{i}_{w}x{h}_{mode.lower()}_s{sub}_q{q}_r{rst}.jpg"
        kw = dict(quality=q, progressive=True, optimize=True)
        if mode == "RGB":
            kw["subsampling"] = sub
        if rst:
            kw["restart_marker_blocks"] = rst
        img.save(os.path.join(out, name), **kw)
        print(name, os.path.getsize(os.path.join(out, name)), "bytes")


if __name__ == "__main__":
    main(sys.argv[1])
