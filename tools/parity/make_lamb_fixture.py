#!/usr/bin/env python3
"""Golden fixture for masksub-core's LAMB: timm's `Lamb` on two parameter groups.

Three steps with fixed gradients that are large enough to trigger the built-in global
clip (max_grad_norm 1.0); a decayed 2-D group (trust ratio applies) and a 1-D group without
weight decay at half the lr (no trust ratio, as timm's default `always_adapt=False`).
Writes crates/masksub-core/tests/fixtures/lamb_timm.json.

Run:  /work/venv-parity/bin/python tools/parity/make_lamb_fixture.py
"""

import json
from pathlib import Path

import timm
import torch
from timm.optim import Lamb

OUT = Path(__file__).resolve().parents[2] / "crates/masksub-core/tests/fixtures/lamb_timm.json"
LR, WD, STEPS = 0.01, 0.05, 3


def main() -> None:
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)
    w = torch.nn.Parameter(torch.randn(3, 4))
    b = torch.nn.Parameter(torch.randn(4))
    init = {"w": w.detach().flatten().tolist(), "b": b.detach().flatten().tolist()}
    opt = Lamb(
        [
            {"params": [w], "weight_decay": WD, "lr": LR},
            {"params": [b], "weight_decay": 0.0, "lr": LR * 0.5},
        ],
        lr=LR,
    )
    grads, after = [], []
    for _ in range(STEPS):
        gw, gb = torch.randn(3, 4) * 2.0, torch.randn(4) * 2.0
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        grads.append({"w": gw.flatten().tolist(), "b": gb.flatten().tolist()})
        after.append({"w": w.detach().flatten().tolist(), "b": b.detach().flatten().tolist()})
    fixture = {
        "timm": timm.__version__,
        "torch": torch.__version__,
        "lr": LR,
        "weight_decay": WD,
        "b_lr_scale": 0.5,
        "shapes": {"w": [3, 4], "b": [4]},
        "init": init,
        "grads": grads,
        "after": after,
    }
    OUT.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
