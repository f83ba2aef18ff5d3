#!/usr/bin/env python3
"""Golden fixtures for the Rust Swin Transformer (masksub-models, src/swin.rs).

Builds two tiny timm SwinTransformers with random weights, runs the plain forward and the
MaskSub masked forward (random u x u units of stage-1 tokens replaced by a learnable mask token
right after patch_embed; timm's Swin has no mask token, so it is added here as in SimMIM), one
MaskSub step per objective (CE, BCE, CE + clipping) and one AdamW step, and writes everything
into crates/masksub-models/tests/fixtures/swin_*.safetensors. Called by make_fixtures.py; can
also be run on its own. See tools/parity/README.md ("Swin fixtures").
"""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import numpy as np
import safetensors
import timm
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (shared serializer, losses, optimizer settings)

SEED = mf.SEED + 100
BATCH = 4
NUM_CLASSES = 10
MASK_RATIO = 0.5
LN_EPS = 1e-5  # torch nn.LayerNorm, timm Swin's norm_layer; asserted below

CONFIGS = {
    # 32 px, window 4: stage grids 16/8/4 -> shifted windows with masks in stages 1 and 2,
    # one window (no shift, window clamped to the grid) in stage 3; one head in stage 1.
    "swin_w4": dict(
        model=dict(img_size=32, patch_size=2, in_chans=3, num_classes=NUM_CLASSES, embed_dim=8,
                   depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=4, mlp_ratio=4.0,
                   qkv_bias=True, drop_path_rate=0.0),
        mask_unit=2,
    ),
    # swin_fmnist_small's geometry at a smaller width: 28 px, 1 channel, patch 2 -> 14x14,
    # window 7 (shift 3, 2x2 windows), then 7x7 = one window; units of 2x2 tokens (7x7 grid).
    "swin_fmnist": dict(
        model=dict(img_size=28, patch_size=2, in_chans=1, num_classes=NUM_CLASSES, embed_dim=16,
                   depths=(2, 2), num_heads=(2, 4), window_size=7, mlp_ratio=4.0,
                   qkv_bias=True, drop_path_rate=0.0),
        mask_unit=2,
    ),
}


class MaskedSwin(torch.nn.Module):
    """timm's SwinTransformer plus a mask token used only by the masked forward."""

    def __init__(self, cfg: dict, mask_unit: int):
        super().__init__()
        self.swin = SwinTransformer(**cfg)
        self.mask_unit = mask_unit
        self.mask_token = torch.nn.Parameter(torch.zeros(1, 1, cfg["embed_dim"]))

    def forward(self, x, unit_mask=None):
        t = self.swin.patch_embed(x)  # (B, H, W, C), after proj and norm
        if unit_mask is not None:
            u = self.mask_unit
            w = unit_mask.repeat_interleave(u, 1).repeat_interleave(u, 2).unsqueeze(-1)
            t = t * (1.0 - w) + w * self.mask_token.view(1, 1, 1, -1)
        t = self.swin.layers(t)
        t = self.swin.norm(t)
        return self.swin.forward_head(t)

    def state(self):
        """timm's state_dict keys plus `mask_token`."""
        sd = {k: v for k, v in self.swin.state_dict().items()}
        sd["mask_token"] = self.mask_token.detach()
        return {k: v.detach().clone() for k, v in sd.items()}

    def named(self):
        out = [(n, p) for n, p in self.swin.named_parameters()]
        return out + [("mask_token", self.mask_token)]


def build_model(spec: dict) -> MaskedSwin:
    torch.manual_seed(SEED)
    model = MaskedSwin(spec["model"], spec["mask_unit"]).float()
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in model.named():
            # As the ViT fixtures: std 0.02 noise on weight matrices, 0.1 on everything else
            # (biases, norms, relative position tables) so no parameter sits at a trivial value;
            # the mask token gets a clearly non-token value.
            is_matrix = p.ndim > 1 and "relative_position_bias_table" not in name and name != "mask_token"
            std = 0.02 if is_matrix else (0.5 if name == "mask_token" else 0.1)
            p.add_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            assert m.eps == LN_EPS, m.eps
        if isinstance(m, torch.nn.GELU):
            assert m.approximate == "none", m.approximate
        if hasattr(m, "fused_attn"):
            assert not m.fused_attn, "expected timm's explicit (q * scale) @ k^T + bias path"
    sd_keys = set(model.swin.state_dict().keys())
    assert not any("relative_position_index" in k or "attn_mask" in k for k in sd_keys), \
        "index / mask buffers are expected to be non-persistent"
    return model


def make_data(spec: dict) -> dict:
    cfg = spec["model"]
    gen = torch.Generator().manual_seed(SEED + 2)
    grid = cfg["img_size"] // cfg["patch_size"] // spec["mask_unit"]
    units = grid * grid
    n_masked = units - int(math.floor(units * (1 - MASK_RATIO)))
    x = torch.randn(BATCH, cfg["in_chans"], cfg["img_size"], cfg["img_size"], generator=gen)
    unit_mask = torch.zeros(BATCH, units)
    for b in range(BATCH):
        unit_mask[b, torch.randperm(units, generator=gen)[:n_masked]] = 1.0
    unit_mask = unit_mask.view(BATCH, grid, grid)
    y1 = torch.randint(0, NUM_CLASSES, (BATCH,), generator=gen)
    y2 = y1.flip(0)
    lam = float(0.3 + 0.4 * torch.rand((), generator=gen))
    off = mf.LABEL_SMOOTHING / NUM_CLASSES
    on = 1.0 - mf.LABEL_SMOOTHING + off

    def smooth(y):
        return torch.full((BATCH, NUM_CLASSES), off).scatter_(1, y.unsqueeze(1), on)
    targets = (lam * smooth(y1) + (1.0 - lam) * smooth(y2)).float()
    return dict(input=x, unit_mask=unit_mask, targets_soft=targets, grid=grid, n_masked=n_masked,
                y1=y1.tolist(), y2=y2.tolist(), lam=lam)


def is_no_decay(name: str, p: torch.Tensor) -> bool:
    # timm's SwinTransformer.no_weight_decay (relative position tables) + 1-D + the mask token.
    return p.ndim <= 1 or "relative_position_bias_table" in name or name == "mask_token"


def train_step(model: MaskedSwin, state0: dict, data: dict, objective: str, clip) -> dict:
    load(model, state0)
    model.train()  # no dropout / drop-path configured
    model.zero_grad(set_to_none=True)
    z = model(data["input"])
    z_s = model(data["input"], data["unit_mask"])
    main, sub = mf.masksub_losses(objective, z, z_s, data["targets_soft"])
    total = mf.MAIN_WEIGHT * main + mf.SUB_WEIGHT * sub
    total.backward()
    named = model.named()
    out = dict(loss_main=main.detach().clone(), loss_sub=sub.detach().clone(),
               loss_total=total.detach().clone(),
               grads={n: p.grad.detach().clone() for n, p in named})
    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in named], max_norm=clip, foreach=False)
        out["grad_norm"] = norm.detach().clone()
        out["clip_coef"] = torch.clamp(clip / (norm + 1e-6), max=1.0).detach().clone()
        assert float(norm) > clip, "clip fixture would not exercise clipping"
    groups = [
        dict(params=[p for n, p in named if not is_no_decay(n, p)], weight_decay=mf.OPT["weight_decay"]),
        dict(params=[p for n, p in named if is_no_decay(n, p)], weight_decay=0.0),
    ]
    opt = torch.optim.AdamW(groups, lr=mf.OPT["lr"], betas=mf.OPT["betas"], eps=mf.OPT["eps"],
                            foreach=False, fused=False)
    opt.step()
    out["param_after"] = {n: p.detach().clone() for n, p in named}
    return out


def load(model: MaskedSwin, state: dict) -> None:
    timm_sd = {k: v for k, v in state.items() if k != "mask_token"}
    model.swin.load_state_dict(timm_sd, strict=True)
    with torch.no_grad():
        model.mask_token.copy_(state["mask_token"])


def float64_gap(model, state0, data, results32, logits32) -> dict:
    """How far the float32 results lie from a float64 re-run (what a correct port can reach)."""
    m64 = copy.deepcopy(model).double()
    s64 = {k: v.double() for k, v in state0.items()}
    d64 = dict(data, input=data["input"].double(), targets_soft=data["targets_soft"].double(),
               unit_mask=data["unit_mask"].double())
    load(m64, s64)
    with torch.no_grad():
        m64.eval()
        out = dict(
            logits_plain=float((m64(d64["input"]) - logits32["plain"]).abs().max()),
            logits_masked=float((m64(d64["input"], d64["unit_mask"]) - logits32["masked"]).abs().max()),
        )
    r64 = train_step(m64, s64, d64, "ce", None)
    out["ce_grad"] = max(float((r64["grads"][k] - results32["ce"]["grads"][k]).abs().max()) for k in state0)
    out["ce_param_after"] = max(
        float((r64["param_after"][k] - results32["ce"]["param_after"][k]).abs().max()) for k in state0)
    return out


def build_fixture(name: str, spec: dict) -> tuple[dict, dict, dict]:
    data = make_data(spec)
    model = build_model(spec)
    model.eval()
    state0 = model.state()
    assert [n for n, _ in model.named()] == list(state0.keys()), "state dict has non-parameters"
    x, um = data["input"], data["unit_mask"]
    with torch.no_grad():
        logits_plain = model(x)
        logits_timm = model.swin(x)
        logits_none_masked = model(x, torch.zeros_like(um))
        logits_masked = model(x, um)
    maxdiff = lambda a, b: float((a - b).abs().max())  # noqa: E731
    assert maxdiff(logits_plain, logits_timm) == 0.0
    assert maxdiff(logits_plain, logits_none_masked) == 0.0
    assert maxdiff(logits_plain, logits_masked) > 1e-3, "masking should change the logits"

    tensors = {f"param.{k}": v for k, v in state0.items()}
    tensors.update(input=x, unit_mask=um, targets_soft=data["targets_soft"],
                   logits_plain=logits_plain, logits_masked=logits_masked)
    # timm's own index and mask buffers, so the Rust window math is checked against them.
    for i, stage in enumerate(model.swin.layers):
        blk = stage.blocks[min(1, len(stage.blocks) - 1)]
        tensors[f"buffer.layers.{i}.relative_position_index"] = \
            blk.attn.relative_position_index.to(torch.int64).contiguous()
        if blk.attn_mask is not None:
            tensors[f"buffer.layers.{i}.attn_mask"] = blk.attn_mask.float().contiguous()

    results, stats = {}, {}
    for prefix, objective, clip in (("ce", "ce", None), ("bce", "bce", None), ("ce_clip", "ce", mf.CLIP_MAX_NORM)):
        r = train_step(model, state0, data, objective, clip)
        results[prefix] = r
        if clip is None:
            for k in ("loss_main", "loss_sub", "loss_total"):
                tensors[f"{prefix}.{k}"] = r[k]
            for k, g in r["grads"].items():
                tensors[f"{prefix}.grad.{k}"] = g
        else:
            for k, g in r["grads"].items():
                assert torch.equal(g, tensors[f"ce.grad.{k}"]), k
            tensors[f"{prefix}.grad_norm"] = r["grad_norm"]
            tensors[f"{prefix}.clip_coef"] = r["clip_coef"]
        for k, p in r["param_after"].items():
            tensors[f"{prefix}.param_after.{k}"] = p
        stats[prefix] = dict(loss_total=float(r["loss_total"]),
                             max_abs_grad_mask_token=float(r["grads"]["mask_token"].abs().max()))
    assert stats["ce"]["max_abs_grad_mask_token"] > 0, "the sub pass must reach the mask token"
    for k, v in state0.items():
        assert torch.equal(tensors[f"param.{k}"], v)
    stats["float64_vs_float32"] = float64_gap(model, state0, data, results,
                                              dict(plain=logits_plain, masked=logits_masked))

    cfg = spec["model"]
    metadata = {
        "format_version": mf.FORMAT_VERSION,
        "generator": "tools/parity/fixtures_swin.py",
        "layout": name,
        **{k: json.dumps(list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "mask_unit": json.dumps(spec["mask_unit"]),
        "layer_norm_eps": json.dumps(LN_EPS),
        "gelu": json.dumps("erf"),
        "unit_grid": json.dumps(data["grid"]),
        "n_masked": json.dumps(data["n_masked"]),
        "batch": json.dumps(BATCH),
        "mask_ratio": json.dumps(MASK_RATIO),
        "label_smoothing": json.dumps(mf.LABEL_SMOOTHING),
        "mix_y1": json.dumps(data["y1"]),
        "mix_y2": json.dumps(data["y2"]),
        "mix_lam": json.dumps(data["lam"]),
        "loss_weights": json.dumps({"main": mf.MAIN_WEIGHT, "sub": mf.SUB_WEIGHT}),
        "optimizer": json.dumps("AdamW"),
        "lr": json.dumps(mf.OPT["lr"]),
        "betas": json.dumps(list(mf.OPT["betas"])),
        "eps": json.dumps(mf.OPT["eps"]),
        "weight_decay": json.dumps(mf.OPT["weight_decay"]),
        "no_decay": json.dumps(sorted(n for n, p in model.named() if is_no_decay(n, p))),
        "clip_max_norm": json.dumps(mf.CLIP_MAX_NORM),
        "seed": json.dumps(SEED),
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "safetensors_version": safetensors.__version__,
        "numpy_version": np.__version__,
    }
    return tensors, metadata, stats


def write_preset_keys() -> None:
    """timm's state_dict keys and shapes (in timm's order) of the full-size presets, so the Rust
    registry's Swin-T/S/B are checked key by key without shipping their weights."""
    out = {}
    for name in ("swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224"):
        with torch.device("meta"):
            m = timm.create_model(name)
        out[name] = dict(
            keys=[[k, list(v.shape)] for k, v in m.state_dict().items()],
            num_params=sum(p.numel() for p in m.parameters()),
        )
    path = mf.OUT_DIR / "swin_preset_keys.json"
    path.write_text(json.dumps(dict(timm_version=timm.__version__, models=out), indent=0) + "\n")
    print(f"{path.relative_to(mf.REPO_ROOT)}: {path.stat().st_size} bytes")


def main() -> int:
    mf.setup_determinism()
    mf.OUT_DIR.mkdir(parents=True, exist_ok=True)
    write_preset_keys()
    for name, spec in CONFIGS.items():
        tensors, metadata, stats = build_fixture(name, spec)
        path = mf.OUT_DIR / f"{name}.safetensors"
        mf.write_fixture(path, tensors, metadata)
        mf.verify_file(path, tensors, metadata)
        size = path.stat().st_size
        n_params = sum(v.numel() for k, v in tensors.items() if k.startswith("param."))
        print(f"{path.relative_to(mf.REPO_ROOT)}: {size} bytes, {len(tensors)} tensors, {n_params} parameters")
        print(f"  {json.dumps(stats)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
