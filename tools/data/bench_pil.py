"""PIL + torchvision side of `cargo xtask bench-data`: decode + RandomResizedCrop(224) +
horizontal flip + ToTensor + Normalize on the same image files, per thread count, as JSON.

Each thread count runs that many processes (torch DataLoader workers are processes too), each
with torch limited to one intra-op thread.

Usage: python tools/data/bench_pil.py IMAGES_DIR COUNT THREADS(,..) OUT.json
       python tools/data/bench_pil.py --baseline SRC_DIR DST_DIR   (re-encode as baseline q90)
"""
import json
import multiprocessing as mp
import os
import sys
import time


def work(args):
    files, count, k = args
    import torch
    from PIL import Image
    from torchvision import transforms as T
    torch.set_num_threads(1)
    tf = T.Compose([
        T.RandomResizedCrop(224),  # bilinear, scale 0.08-1, ratio 3/4-4/3
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    blobs = [open(f, "rb").read() for f in files]
    import io
    acc = 0.0
    for i in range(count):
        img = Image.open(io.BytesIO(blobs[(k * count + i) % len(blobs)])).convert("RGB")
        acc += float(tf(img)[0, 0, 0])
    return acc


def main(images, count, threads, out):
    files = sorted(os.path.join(images, f) for f in os.listdir(images)
                   if f.endswith((".jpg", ".jpeg", ".png")))
    rows = []
    for t in [int(x) for x in threads.split(",")]:
        per = -(-count // t)
        with mp.get_context("fork").Pool(t) as pool:
            pool.map(work, [(files, 2, k) for k in range(t)])  # warm-up: imports
            t0 = time.perf_counter()
            pool.map(work, [(files, per, k) for k in range(t)])
            secs = time.perf_counter() - t0
        rows.append({"threads": t, "images": per * t, "seconds": secs, "img_per_s": per * t / secs})
        print(f"{t} thread(s): {per * t / secs:.1f} img/s")
    import PIL, torch, torchvision
    with open(out, "w") as f:
        json.dump({"rows": rows, "versions": {"pillow": PIL.__version__, "torch": torch.__version__,
                                              "torchvision": torchvision.__version__}}, f)


def baseline(src, dst):
    from PIL import Image
    os.makedirs(dst, exist_ok=True)
    for f in sorted(os.listdir(src)):
        if f.endswith(".jpg"):
            Image.open(os.path.join(src, f)).convert("RGB").save(
                os.path.join(dst, f), quality=90, progressive=False)


if __name__ == "__main__":
    if sys.argv[1] == "--baseline":
        baseline(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
