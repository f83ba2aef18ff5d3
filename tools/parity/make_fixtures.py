#!/usr/bin/env python3
"""Golden fixtures for the Rust ViT / MaskSub implementation (masksub-models).

Builds two tiny timm VisionTransformers (DeiT-III layout and MAE fine-tune
layout), runs plain and masked forwards and one MaskSub training step per
objective (CE, BCE, CE + grad clipping) followed by one AdamW step, and writes
everything into safetensors files that the Rust tests load and compare against.

See tools/parity/README.md for the exact tensor list and the conventions.

Run:  python tools/parity/make_fixtures.py   (from anywhere; paths are resolved
relative to this file). The output is byte-identical across runs on the same
torch/timm versions, so re-running is safe and a `git diff` shows real changes only.
"""

from __future__ import annotations

import copy
import json
import math
import os
import struct
import sys
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = REPO_ROOT / "crates" / "masksub-models" / "tests" / "fixtures"

FORMAT_VERSION = "1"
SEED = 20230619  # arbitrary; the MaskSub arXiv submission date
BATCH = 4
NUM_CLASSES = 10
MASK_RATIO = 0.5
LABEL_SMOOTHING = 0.1

# Shared architecture; the two layouts differ only in LAYOUTS below.
BASE_CFG = dict(
    img_size=32,
    patch_size=8,
    in_chans=3,
    num_classes=NUM_CLASSES,
    embed_dim=32,
    depth=2,
    num_heads=4,
    mlp_ratio=4.0,
    qkv_bias=True,
    class_token=True,
    drop_path_rate=0.0,
    drop_rate=0.0,
)
LAYOUTS = {
    # DeiT-III: pos_embed covers patches only, LayerScale, final norm, cls pooling.
    "vit_deit3": dict(no_embed_class=True, init_values=1e-1, global_pool="token"),
    # MAE fine-tune: pos_embed has a cls slot, no LayerScale, fc_norm after avg pooling.
    "vit_mae": dict(no_embed_class=False, init_values=None, global_pool="avg"),
}
LN_EPS = 1e-6  # timm.layers.LayerNorm default; asserted below against the model

OPT = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
CLIP_MAX_NORM = 0.5
MAIN_WEIGHT = 0.5  # total = MAIN_WEIGHT * main + SUB_WEIGHT * sub
SUB_WEIGHT = 0.5

TOL = 1e-6  # self-consistency checks against timm


def setup_determinism() -> None:
    # One thread: CPU reductions are then ordered the same on every machine, so
    # the bytes do not depend on how many cores the generator happened to have.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


# ---------------------------------------------------------------------------
# Model construction
# ---------------------------------------------------------------------------

def build_model(layout: dict) -> VisionTransformer:
    # timm's init draws from the global RNG, so seed it right before construction.
    torch.manual_seed(SEED)
    model = VisionTransformer(**BASE_CFG, **layout)
    model.float()

    # timm init leaves LayerNorm at (1, 0), biases at 0, gammas constant and
    # cls_token ~1e-6: a Rust port that forgets any of them would still pass.
    # Perturb everything with seeded noise so every parameter matters.
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # Weight matrices already have std 0.02; everything else (biases,
            # norm affine, gammas, cls_token, pos_embed) gets a larger kick so
            # that mistakes there show up well above float noise.
            is_matrix = p.ndim > 1 and name not in ("cls_token", "pos_embed")
            std = 0.02 if is_matrix else 0.1
            p.add_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype))

    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            assert m.eps == LN_EPS, m.eps
        if isinstance(m, torch.nn.GELU):
            assert m.approximate == "none", m.approximate  # exact erf GELU
    return model


def masked_forward(model: VisionTransformer, x: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
    """MaskSub sub-branch: drop patch tokens after positional embedding.

    Masking happens after `_pos_embed` so every kept token keeps its own
    position; the prefix (cls) token is always kept and sits first.
    """
    x = model.patch_embed(x)  # (B, L, D)
    x = model._pos_embed(x)  # (B, P + L, D), P = num_prefix_tokens
    n_prefix = model.num_prefix_tokens
    prefix, patches = x[:, :n_prefix], x[:, n_prefix:]
    gather_idx = keep_idx.unsqueeze(-1).expand(-1, -1, patches.shape[-1])
    x = torch.cat([prefix, torch.gather(patches, 1, gather_idx)], dim=1)
    x = model.patch_drop(x)
    x = model.norm_pre(x)
    x = model.blocks(x)
    x = model.norm(x)
    return model.forward_head(x)


def reference_forward(sd: dict, x: torch.Tensor, layout: dict) -> torch.Tensor:
    """Independent re-statement of the forward pass in plain tensor ops.

    This is the math the Rust port must reproduce; checking it against timm
    here guards both against misreading timm and against timm changing.
    """
    D, H = BASE_CFG["embed_dim"], BASE_CFG["num_heads"]
    hd = D // H
    B = x.shape[0]
    # Patch embedding: Conv2d(kernel = stride = patch, bias), then NCHW -> (B, L, D)
    # with tokens in row-major (h, w) order of the 4x4 patch grid.
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=BASE_CFG["patch_size"])
    t = t.flatten(2).transpose(1, 2)
    cls = sd["cls_token"].expand(B, -1, -1)
    if layout["no_embed_class"]:
        t = torch.cat([cls, t + sd["pos_embed"]], dim=1)
    else:
        t = torch.cat([cls, t], dim=1) + sd["pos_embed"]
    depth = BASE_CFG["depth"]
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(t, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], LN_EPS)
        qkv = h @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]  # (B, N, 3D)
        N = qkv.shape[1]
        # Output features are laid out [q | k | v], each split into H heads of hd.
        q, k, v = qkv.reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)
        attn = ((q * hd ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        a = (attn @ v).transpose(1, 2).reshape(B, N, D)
        a = a @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        if layout["init_values"] is not None:
            a = a * sd[p + "ls1.gamma"]
        t = t + a
        h = F.layer_norm(t, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], LN_EPS)
        h = F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"], approximate="none")
        h = h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        if layout["init_values"] is not None:
            h = h * sd[p + "ls2.gamma"]
        t = t + h
    if layout["global_pool"] == "token":
        t = F.layer_norm(t, (D,), sd["norm.weight"], sd["norm.bias"], LN_EPS)
        pooled = t[:, 0]
    else:
        pooled = t[:, 1:].mean(1)  # prefix token excluded from the average
        pooled = F.layer_norm(pooled, (D,), sd["fc_norm.weight"], sd["fc_norm.bias"], LN_EPS)
    return pooled @ sd["head.weight"].T + sd["head.bias"]


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

def make_data() -> dict:
    # Own generator: inputs/masks/targets are identical in both files and do
    # not depend on how many random numbers model init consumed.
    gen = torch.Generator().manual_seed(SEED + 2)
    num_patches = (BASE_CFG["img_size"] // BASE_CFG["patch_size"]) ** 2
    n_keep = int(math.floor(num_patches * (1 - MASK_RATIO)))

    x = torch.randn(BATCH, BASE_CFG["in_chans"], BASE_CFG["img_size"], BASE_CFG["img_size"], generator=gen)

    keep_idx = torch.stack([
        torch.randperm(num_patches, generator=gen)[:n_keep].sort().values for _ in range(BATCH)
    ]).to(torch.int64)
    assert len({tuple(r.tolist()) for r in keep_idx}) == BATCH, "keep_idx rows must differ"

    # timm Mixup-style target: smoothed one-hots, mixed with the flipped batch.
    y1 = torch.randint(0, NUM_CLASSES, (BATCH,), generator=gen)
    y2 = y1.flip(0)
    lam = float(0.3 + 0.4 * torch.rand((), generator=gen))  # away from 0/1 so both labels count
    off = LABEL_SMOOTHING / NUM_CLASSES
    on = 1.0 - LABEL_SMOOTHING + off
    def smooth(y):
        return torch.full((BATCH, NUM_CLASSES), off).scatter_(1, y.unsqueeze(1), on)
    targets = lam * smooth(y1) + (1.0 - lam) * smooth(y2)
    assert torch.allclose(targets.sum(1), torch.ones(BATCH))

    return dict(input=x, keep_idx=keep_idx, targets_soft=targets.float(),
                n_keep=n_keep, num_patches=num_patches, y1=y1.tolist(), y2=y2.tolist(), lam=lam)


# ---------------------------------------------------------------------------
# Training step
# ---------------------------------------------------------------------------

def masksub_losses(objective: str, z: torch.Tensor, z_s: torch.Tensor, t: torch.Tensor):
    # The sub-branch is distilled from the main branch's own prediction; the
    # teacher is detached so the sub loss sends gradient only through z_s.
    if objective == "ce":
        main = (-t * F.log_softmax(z, dim=-1)).sum(-1).mean()
        sub = (-F.softmax(z, dim=-1).detach() * F.log_softmax(z_s, dim=-1)).sum(-1).mean()
    elif objective == "bce":
        main = F.binary_cross_entropy_with_logits(z, t)  # mean over B*C
        sub = F.binary_cross_entropy_with_logits(z_s, torch.sigmoid(z).detach())
    else:
        raise ValueError(objective)
    return main, sub


def is_no_decay(name: str, p: torch.Tensor) -> bool:
    # Standard ViT recipe: no decay on 1-D params (biases, norm affine, LayerScale
    # gammas) nor on the token/position embeddings, which are 3-D.
    return p.ndim <= 1 or name in ("cls_token", "pos_embed")


def train_step(model, state0, data, objective: str, clip: float | None) -> dict:
    model.load_state_dict(state0)
    model.train()  # no dropout / drop-path configured, so train == eval numerically
    model.zero_grad(set_to_none=True)

    z = model(data["input"])
    z_s = masked_forward(model, data["input"], data["keep_idx"])
    main, sub = masksub_losses(objective, z, z_s, data["targets_soft"])
    total = MAIN_WEIGHT * main + SUB_WEIGHT * sub
    total.backward()

    named = list(model.named_parameters())
    out = dict(
        loss_main=main.detach().clone(),
        loss_sub=sub.detach().clone(),
        loss_total=total.detach().clone(),
        grads={n: p.grad.detach().clone() for n, p in named},
    )

    if clip is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in named], max_norm=clip, foreach=False)
        out["grad_norm"] = grad_norm.detach().clone()
        # Same formula torch uses: coef = max_norm / (norm + 1e-6), clamped to 1.
        out["clip_coef"] = torch.clamp(clip / (grad_norm + 1e-6), max=1.0).detach().clone()
        assert float(grad_norm) > clip, "clip fixture would not exercise clipping"

    groups = [
        dict(params=[p for n, p in named if not is_no_decay(n, p)], weight_decay=OPT["weight_decay"]),
        dict(params=[p for n, p in named if is_no_decay(n, p)], weight_decay=0.0),
    ]
    # Single-tensor (non-foreach, non-fused) path: the textbook AdamW update.
    opt = torch.optim.AdamW(groups, lr=OPT["lr"], betas=OPT["betas"], eps=OPT["eps"],
                            foreach=False, fused=False)
    opt.step()
    out["param_after"] = {n: p.detach().clone() for n, p in named}
    return out


def float64_crosscheck(model, state0, data, layout, results32, logits32: dict) -> dict:
    """Redo forward + step in float64 and report how far float32 is from it.

    Not stored: it tells the Rust tests which tolerances are achievable. A
    correct float32 port differs from the fixture by about as much as the
    fixture differs from float64 (different summation orders), and AdamW's
    first step amplifies gradient noise wherever |grad| is near eps.
    """
    model64 = copy.deepcopy(model).double()
    state64 = {k: v.double() for k, v in state0.items()}
    data64 = dict(data, input=data["input"].double(), targets_soft=data["targets_soft"].double())
    model64.load_state_dict(state64)
    with torch.no_grad():
        model64.eval()
        x64 = data64["input"]
        out = dict(
            logits_plain=float((model64(x64) - logits32["plain"]).abs().max()),
            logits_masked=float((masked_forward(model64, x64, data["keep_idx"]) - logits32["masked"]).abs().max()),
            reference_forward=float((reference_forward(state64, x64, layout) - logits32["plain"]).abs().max()),
        )
    for prefix, objective, clip in (("ce", "ce", None), ("bce", "bce", None), ("ce_clip", "ce", CLIP_MAX_NORM)):
        r64 = train_step(model64, state64, data64, objective, clip)
        r32 = results32[prefix]
        out[prefix] = dict(
            loss_total=abs(float(r64["loss_total"]) - float(r32["loss_total"])),
            grad=max(float((r64["grads"][k] - r32["grads"][k]).abs().max()) for k in state0),
            param_after=max(float((r64["param_after"][k] - r32["param_after"][k]).abs().max()) for k in state0),
        )
    return out


# ---------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------

def build_fixture(name: str, layout: dict, data: dict) -> tuple[dict, dict, dict]:
    model = build_model(layout)
    model.eval()
    state0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    param_names = [n for n, _ in model.named_parameters()]
    # grad.* / param_after.* are keyed like param.*; that only works if there
    # are no buffers in the state dict.
    assert param_names == list(state0.keys()), "state_dict has non-parameter entries"

    x, keep_idx = data["input"], data["keep_idx"]
    with torch.no_grad():
        logits_plain = model(x)
        logits_features = model.forward_head(model.forward_features(x))
        logits_ref = reference_forward(state0, x, layout)
        all_idx = torch.arange(data["num_patches"]).expand(BATCH, -1)
        logits_keep_all = masked_forward(model, x, all_idx)
        logits_masked = masked_forward(model, x, keep_idx)

    def maxdiff(a, b):
        return float((a - b).abs().max())
    assert maxdiff(logits_plain, logits_features) < TOL
    assert maxdiff(logits_plain, logits_keep_all) < TOL, maxdiff(logits_plain, logits_keep_all)
    # Fused SDPA vs. explicit softmax differ by rounding only.
    assert maxdiff(logits_plain, logits_ref) < 1e-5, maxdiff(logits_plain, logits_ref)
    assert maxdiff(logits_plain, logits_masked) > 1e-3, "masking should change the logits"

    tensors: dict[str, torch.Tensor] = {}
    for k, v in state0.items():
        tensors[f"param.{k}"] = v
    tensors["input"] = x
    tensors["keep_idx"] = keep_idx
    tensors["logits_plain"] = logits_plain
    tensors["logits_masked"] = logits_masked
    tensors["targets_soft"] = data["targets_soft"]

    stats = {}
    results = {}
    for prefix, objective, clip in (("ce", "ce", None), ("bce", "bce", None), ("ce_clip", "ce", CLIP_MAX_NORM)):
        r = train_step(model, state0, data, objective, clip)
        results[prefix] = r
        if clip is None:
            tensors[f"{prefix}.loss_main"] = r["loss_main"]
            tensors[f"{prefix}.loss_sub"] = r["loss_sub"]
            tensors[f"{prefix}.loss_total"] = r["loss_total"]
            for k, g in r["grads"].items():
                tensors[f"{prefix}.grad.{k}"] = g
        else:
            # Gradients before clipping are exactly ce.grad.*; check, don't duplicate.
            for k, g in r["grads"].items():
                assert torch.equal(g, tensors[f"ce.grad.{k}"]), k
            tensors[f"{prefix}.grad_norm"] = r["grad_norm"]
            tensors[f"{prefix}.clip_coef"] = r["clip_coef"]
        for k, p in r["param_after"].items():
            tensors[f"{prefix}.param_after.{k}"] = p
        stats[prefix] = dict(
            loss_total=float(r["loss_total"]),
            min_abs_grad=min(float(g.abs().min()) for g in r["grads"].values()),
            grad_norm=float(r.get("grad_norm", torch.tensor(float("nan")))),
        )

    # The step must leave the stored initial parameters untouched.
    for k, v in state0.items():
        assert torch.equal(tensors[f"param.{k}"], v)

    stats["float64_vs_float32"] = float64_crosscheck(
        model, state0, data, layout, results, dict(plain=logits_plain, masked=logits_masked))
    stats["clip_vs_noclip_param_after"] = max(
        maxdiff(results["ce_clip"]["param_after"][k], results["ce"]["param_after"][k]) for k in state0)

    n_keep = data["n_keep"]
    cfg = {**BASE_CFG, **layout}
    metadata = {
        "format_version": FORMAT_VERSION,
        "generator": "tools/parity/make_fixtures.py",
        "layout": name,
        # Model config (values JSON-encoded: null / true / false / numbers / strings).
        **{k: json.dumps(v) for k, v in cfg.items()},
        "layer_norm_eps": json.dumps(LN_EPS),
        "gelu": json.dumps("erf"),
        "num_patches": json.dumps(data["num_patches"]),
        "num_prefix_tokens": json.dumps(model.num_prefix_tokens),
        "pos_embed_len": json.dumps(model.pos_embed.shape[1]),
        "batch": json.dumps(BATCH),
        "mask_ratio": json.dumps(MASK_RATIO),
        "n_keep": json.dumps(n_keep),
        "label_smoothing": json.dumps(LABEL_SMOOTHING),
        "mix_y1": json.dumps(data["y1"]),
        "mix_y2": json.dumps(data["y2"]),
        "mix_lam": json.dumps(data["lam"]),
        "loss_weights": json.dumps({"main": MAIN_WEIGHT, "sub": SUB_WEIGHT}),
        "loss_scalar_shape": json.dumps([]),  # losses, grad_norm, clip_coef are 0-dim
        "optimizer": json.dumps("AdamW"),
        "lr": json.dumps(OPT["lr"]),
        "betas": json.dumps(list(OPT["betas"])),
        "eps": json.dumps(OPT["eps"]),
        "weight_decay": json.dumps(OPT["weight_decay"]),
        "no_decay": json.dumps(sorted(n for n, p in model.named_parameters() if is_no_decay(n, p))),
        "clip_max_norm": json.dumps(CLIP_MAX_NORM),
        "seed": json.dumps(SEED),
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "safetensors_version": safetensors.__version__,
        "numpy_version": np.__version__,
    }
    return tensors, metadata, stats


def write_fixture(path: Path, tensors: dict, metadata: dict) -> None:
    """Serialise a safetensors file with a canonical (sorted) header.

    safetensors.torch.save_file keeps __metadata__ in a hash map whose order
    changes between runs, so its output is not byte-reproducible. The format is
    simple enough to write directly: u64 little-endian header length, JSON
    header (padded with spaces to 8 bytes), then raw little-endian tensor data.
    The result is checked by loading it back with the safetensors library.
    """
    assert sys.byteorder == "little", "safetensors data is little-endian"
    dtype_names = {torch.float32: "F32", torch.int64: "I64"}
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        assert t.dtype in dtype_names, (name, t.dtype)
        raw = t.numpy().tobytes()  # native order; little-endian asserted below
        header[name] = {"dtype": dtype_names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for raw in chunks:
            f.write(raw)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written fixture


def verify_file(path: Path, tensors: dict, metadata: dict) -> None:
    loaded = safetensors.torch.load_file(str(path))
    assert set(loaded) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(loaded[k], v), k
    with safetensors.safe_open(str(path), framework="pt") as f:
        assert f.metadata() == metadata


def main() -> int:
    setup_determinism()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    data = make_data()
    total = 0
    for name, layout in LAYOUTS.items():
        tensors, metadata, stats = build_fixture(name, layout, data)
        path = OUT_DIR / f"{name}.safetensors"
        write_fixture(path, tensors, metadata)
        verify_file(path, tensors, metadata)
        size = path.stat().st_size
        total += size
        print(f"{path.relative_to(REPO_ROOT)}: {size} bytes ({size / 1024:.1f} KiB), {len(tensors)} tensors")
        for prefix in ("ce", "bce", "ce_clip"):
            s = stats[prefix]
            print(f"  {prefix}: loss_total={s['loss_total']:.6f} min|grad|={s['min_abs_grad']:.3e}"
                  + (f" grad_norm={s['grad_norm']:.6f}" if not math.isnan(s['grad_norm']) else ""))
        print(f"  max|ce_clip.param_after - ce.param_after| = {stats['clip_vs_noclip_param_after']:.3e}")
        print(f"  float64 re-run vs fixture (max abs diff): {json.dumps(stats['float64_vs_float32'])}")
    print(f"total: {total} bytes ({total / 1024:.1f} KiB); torch {torch.__version__}, timm {timm.__version__}")
    import fixtures_swin  # Swin fixtures (own file; shares this file's serializer and settings)
    fixtures_swin.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
