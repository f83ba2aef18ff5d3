#!/usr/bin/env python3
"""The PyTorch (eager) + timm side of `cargo xtask bench`: the same model, recipe and MaskSub
step as `masksub bench train`, timed the same way.

It reads the JSON report `masksub bench train --json` wrote (model spec, recipe, batch size,
sub-model), builds the same architecture with timm, and runs the MaskSub step of the paper:
main pass, teacher = softmax(z).detach(), backward of 0.5*main, sub pass on the masked batch
(ViT: kept tokens per sample, cls kept, after the position embedding; ResNet: zeroed pixel
patches; Swin: hidden units replaced by a mask token after patch_embed), backward of 0.5*sub,
optional clipping of the summed gradient, one AdamW step. Synthetic N(0,1) inputs, as masksub.

    python3 bench/pytorch_step.py --masksub-report r.json --threads 2 --json out.json

Needs torch and timm (tools/parity/requirements.txt); CI never runs it.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

from pathlib import Path

import torch
import torch.nn.functional as F

# The sub pass's token drop is the one the parity fixtures check masksub against.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "parity"))
from make_fixtures import masked_forward  # noqa: E402


def random_unit_mask(b: int, g: int, ratio: float) -> torch.Tensor:
    """(b, g, g) float mask, 1 = hidden: per sample, all but floor(g*g*(1-ratio)) units hidden."""
    n = g * g
    hidden = n - int(n * (1.0 - ratio))
    order = torch.argsort(torch.rand(b, n), dim=1)
    m = torch.zeros(b, n)
    m.scatter_(1, order[:, :hidden], 1.0)
    return m.view(b, g, g)


def upsample(mask: torch.Tensor, u: int) -> torch.Tensor:
    return mask.repeat_interleave(u, 1).repeat_interleave(u, 2)


class MaskedSwin(torch.nn.Module):
    """timm's SwinTransformer plus masksub's mask token (replaces hidden units after patch_embed)."""

    def __init__(self, arch: dict):
        super().__init__()
        from timm.models.swin_transformer import SwinTransformer

        self.unit = arch.pop("mask_unit")
        eps = arch.pop("layer_norm_eps")
        assert eps == 1e-5, eps  # timm's LayerNorm default
        self.swin = SwinTransformer(**arch)
        self.mask_token = torch.nn.Parameter(torch.zeros(1, 1, 1, arch["embed_dim"]))

    def no_weight_decay(self):
        return {"swin." + n for n in self.swin.no_weight_decay()} | {"mask_token"}

    def forward(self, x, unit_mask=None):
        t = self.swin.patch_embed(x)  # (B, H, W, C)
        if unit_mask is not None:
            w = upsample(unit_mask, self.unit).unsqueeze(-1)
            t = t * (1.0 - w) + w * self.mask_token
        return self.swin.forward_head(self.swin.norm(self.swin.layers(t)))


def build(spec: dict, ratio: float):
    """The timm model of masksub's spec and its sub-pass forward `sub(model, x)` at `ratio`."""
    arch = dict(spec["arch"])
    family = arch.pop("family")
    if family == "vit":
        from timm.models.vision_transformer import VisionTransformer
        from functools import partial

        eps = arch.pop("layer_norm_eps")
        model = VisionTransformer(norm_layer=partial(torch.nn.LayerNorm, eps=eps), **arch)
        n_tokens = (arch["img_size"] // arch["patch_size"]) ** 2
        keep_n = int(n_tokens * (1.0 - ratio))

        def sub(m, x):
            keep = torch.argsort(torch.rand(x.shape[0], n_tokens), dim=1)[:, :keep_n]
            return masked_forward(m, x, keep)
        return model, sub
    if family == "resnet":
        from timm.models.resnet import ResNet, BasicBlock, Bottleneck

        block = {"basic": BasicBlock, "bottleneck": Bottleneck}[arch["block"]]
        model = ResNet(block=block, layers=arch["layers"], channels=arch["channels"],
                       in_chans=arch["in_chans"], num_classes=arch["num_classes"],
                       drop_path_rate=arch["drop_path_rate"], zero_init_last=arch["zero_init_last"])
        p = arch["mask_patch_size"]
        g = arch["img_size"] // p

        def sub(m, x):  # zero hidden pixel patches, BatchNorm stays in train mode
            pix = upsample(random_unit_mask(x.shape[0], g, ratio), p).unsqueeze(1)
            return m(x * (1.0 - pix))
        return model, sub
    if family == "swin":
        model = MaskedSwin(arch)
        g = arch["img_size"] // arch["patch_size"] // model.unit

        def sub(m, x):
            return m(x, random_unit_mask(x.shape[0], g, ratio))
        return model, sub
    raise SystemExit(f"pytorch_step.py: family `{family}` is not mapped")


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


def param_groups(model, weight_decay: float):
    no_wd = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or n in no_wd else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--masksub-report", required=True, help="JSON from `masksub bench train --json`")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", help="write the report here")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rep = json.load(open(a.masksub_report))
    recipe, spec = rep["recipe"], rep["spec"]
    if recipe["opt"] != "adamw" or recipe["loss"] != "soft_ce":
        raise SystemExit("pytorch_step.py runs the AdamW + soft-target CE recipe only")
    sub = rep["sub"]
    model, sub_forward = build(spec, sub.get("ratio", 0.5))
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != rep["params"]:
        raise SystemExit(f"timm model has {n_params} parameters, masksub's {rep['params']}: configs differ")
    b = rep["batch_size"]
    arch = spec["arch"]
    c, s, k = arch["in_chans"], arch["img_size"], arch["num_classes"]
    x = torch.randn(b, c, s, s)
    y = torch.arange(b) % k
    sm = recipe["smoothing"]
    target = torch.full((b, k), sm / k)
    target[torch.arange(b), y] += 1.0 - sm
    opt = torch.optim.AdamW(
        param_groups(model, recipe["weight_decay"]),
        lr=recipe["lr"],
        betas=(recipe["beta1"], recipe["beta2"]),
        eps=recipe["eps"] if recipe["eps"] is not None else 1e-8,
    )
    clip = recipe["clip_grad"]

    phases = {k: [] for k in ("main_forward", "main_backward", "sub_forward", "sub_backward", "optimizer")}
    walls = []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        z = model(x)
        main = soft_ce(z, target)
        main_v = main.item()
        t1 = time.perf_counter()
        if sub["kind"] == "masking":
            teacher = F.softmax(z.detach(), dim=-1)
            (0.5 * main).backward()
            del z
            t2 = time.perf_counter()
            zs = sub_forward(model, x)
            sub_loss = soft_ce(zs, teacher)
            sub_loss.item()
            t3 = time.perf_counter()
            (0.5 * sub_loss).backward()
            t4 = time.perf_counter()
        else:
            main.backward()
            t2 = t3 = t4 = time.perf_counter()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t5 = time.perf_counter()
        if step >= a.warmup:
            walls.append(t5 - t0)
            for name, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                phases[name].append(dt)
        if not torch.isfinite(torch.tensor(main_v)):
            raise SystemExit(f"non-finite loss at step {step}")

    ms = 1e3 * statistics.median(walls)
    out = {
        "kind": "train",
        "impl": f"pytorch {torch.__version__} eager",
        "model": rep["model"],
        "batch_size": b,
        "threads": torch.get_num_threads(),
        "img_per_s": b / (ms / 1e3),
        "ms_per_step": ms,
        "phases_ms": {k: 1e3 * statistics.median(v) for k, v in phases.items()},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    text = json.dumps(out, indent=2)
    if a.json:
        open(a.json, "w").write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
