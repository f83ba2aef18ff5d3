"""Golden fixtures for the Rust ResNet (masksub-models), called by make_fixtures.py.

Builds two tiny timm ResNets (BasicBlock and Bottleneck, 2 blocks per stage, 32 px), runs
eval-mode forwards (plain and with zeroed pixel patches), one MaskSub training step with
BatchNorm in train mode for BOTH passes (the running statistics are updated by the main pass,
then by the sub pass), one AdamW step, and an eval-mode forward with the updated weights and
running statistics. See tools/parity/README.md ("ResNet fixtures") for the tensor list.

Seeded and single-threaded: the output is byte-identical from run to run.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import safetensors
import timm
import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

FORMAT_VERSION = "1"
SEED = 20230620  # the ViT fixtures' seed + 1
# layer4 is 1x1 at 32 px: BatchNorm there sees BATCH values per channel. At 8 the float32
# gradients of the Bottleneck net lie ~1.3e-4 (relative) from float64, too close to the Rust
# tests' 1e-4; at 16 they lie ~3.5e-5 (see the float64 line the script prints).
BATCH = 16
NUM_CLASSES = 10
IMG_SIZE = 32
IN_CHANS = 3
MASK_PATCH = 8  # 4x4 unit grid
MASK_RATIO = 0.5
LABEL_SMOOTHING = 0.1
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
NUM_BATCHES_TRACKED0 = 5  # a non-zero start, so the count is checked, not just set

OPT = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
MAIN_WEIGHT = 0.5
SUB_WEIGHT = 0.5
TOL = 1e-5  # self-consistency checks against timm (relative to the largest value)

FIXTURES = {
    # ResNet-18 layout (BasicBlock) at tiny widths.
    "resnet_basic": dict(block="basic", layers=(2, 2, 2, 2), channels=(4, 8, 16, 32)),
    # ResNet-26 layout (Bottleneck, expansion 4) at tiny widths.
    "resnet_bottleneck": dict(block="bottleneck", layers=(2, 2, 2, 2), channels=(4, 8, 8, 16)),
}
BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def build_model(spec: dict) -> ResNet:
    torch.manual_seed(SEED)  # timm's init draws from the global RNG
    model = ResNet(block=BLOCKS[spec["block"]], layers=spec["layers"], channels=spec["channels"],
                   num_classes=NUM_CLASSES, in_chans=IN_CHANS)
    model.float()
    # timm's init leaves BatchNorm at (1, 0) (the last of each branch at 0), running stats at
    # (0, 1): a port that mixes them up would still pass. Perturb everything, seeded.
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith(".weight"):  # BatchNorm weights, incl. zero-init ones
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:  # BatchNorm biases, fc bias
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
            else:  # conv kernels (kaiming fan-out) and fc weight: keep their scale
                p.mul_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
            elif name.endswith("num_batches_tracked"):
                b.fill_(NUM_BATCHES_TRACKED0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert (m.eps, m.momentum, m.affine, m.track_running_stats) == (BN_EPS, BN_MOMENTUM, True, True)
    return model


def make_data() -> dict:
    gen = torch.Generator().manual_seed(SEED + 2)
    g = IMG_SIZE // MASK_PATCH
    n_units = g * g
    n_masked = n_units - int(math.floor(n_units * (1 - MASK_RATIO)))
    x = torch.randn(BATCH, IN_CHANS, IMG_SIZE, IMG_SIZE, generator=gen)
    unit_mask = torch.zeros(BATCH, n_units, dtype=torch.int64)
    for b in range(BATCH):
        unit_mask[b, torch.randperm(n_units, generator=gen)[:n_masked]] = 1
    unit_mask = unit_mask.reshape(BATCH, g, g)
    assert len({tuple(r.flatten().tolist()) for r in unit_mask}) == BATCH, "mask rows must differ"
    y1 = torch.randint(0, NUM_CLASSES, (BATCH,), generator=gen)
    y2 = y1.flip(0)
    lam = float(0.3 + 0.4 * torch.rand((), generator=gen))
    off = LABEL_SMOOTHING / NUM_CLASSES
    on = 1.0 - LABEL_SMOOTHING + off

    def smooth(y):
        return torch.full((BATCH, NUM_CLASSES), off).scatter_(1, y.unsqueeze(1), on)
    targets = lam * smooth(y1) + (1.0 - lam) * smooth(y2)
    return dict(input=x, unit_mask=unit_mask, targets_soft=targets.float(), n_masked=n_masked,
                grid=g, y1=y1.tolist(), y2=y2.tolist(), lam=lam)


def mask_input(x: torch.Tensor, unit_mask: torch.Tensor) -> torch.Tensor:
    """Zero the hidden MASK_PATCH x MASK_PATCH pixel patches (nearest upsampling of the mask)."""
    pix = unit_mask.to(x.dtype).repeat_interleave(MASK_PATCH, 1).repeat_interleave(MASK_PATCH, 2)
    return x * (1.0 - pix.unsqueeze(1))


def reference_forward(sd: dict, x: torch.Tensor, spec: dict, train: bool):
    """Plain-tensor re-statement of timm's ResNet forward (the math the Rust port follows).

    Returns the logits and, in train mode, the running statistics it would write: batch mean
    and UNBIASED variance blended with momentum 0.1, num_batches_tracked + 1.
    """
    new = {}

    def bn(h, p):
        if train:
            mean = h.mean((0, 2, 3))
            var = h.var((0, 2, 3), unbiased=False)
            n = h.numel() / h.shape[1]
            new[p + "running_mean"] = (1 - BN_MOMENTUM) * sd[p + "running_mean"] + BN_MOMENTUM * mean
            new[p + "running_var"] = (1 - BN_MOMENTUM) * sd[p + "running_var"] + BN_MOMENTUM * var * n / (n - 1)
            new[p + "num_batches_tracked"] = sd[p + "num_batches_tracked"] + 1
        else:
            mean, var = sd[p + "running_mean"], sd[p + "running_var"]
        inv = (var + BN_EPS).rsqrt()
        return (h - mean[None, :, None, None]) * (inv * sd[p + "weight"])[None, :, None, None] \
            + sd[p + "bias"][None, :, None, None]

    h = F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1."))
    h = F.max_pool2d(h, 3, 2, 1)
    n_convs = 2 if spec["block"] == "basic" else 3
    strided = 1 if spec["block"] == "basic" else 2  # the stride sits in the (first) 3x3 conv
    for s, n_blocks in enumerate(spec["layers"]):
        for i in range(n_blocks):
            p = f"layer{s + 1}.{i}."
            stride = 2 if s > 0 and i == 0 else 1
            y = h
            for c in range(1, n_convs + 1):
                w = sd[f"{p}conv{c}.weight"]
                k = w.shape[-1]
                st = stride if c == strided else 1
                y = bn(F.conv2d(y, w, stride=st, padding=k // 2), f"{p}bn{c}.")
                if c < n_convs:
                    y = F.relu(y)
            if p + "downsample.0.weight" in sd:
                h = bn(F.conv2d(h, sd[p + "downsample.0.weight"], stride=stride), p + "downsample.1.")
            h = F.relu(y + h)
    logits = h.mean((2, 3)) @ sd["fc.weight"].T + sd["fc.bias"]
    return logits, new


def masksub_losses(z, z_s, t):
    main = (-t * F.log_softmax(z, dim=-1)).sum(-1).mean()
    sub = (-F.softmax(z, dim=-1).detach() * F.log_softmax(z_s, dim=-1)).sum(-1).mean()
    return main, sub


def buffers_of(model) -> dict:
    return {n: b.detach().clone() for n, b in model.named_buffers()}


def train_step(model, state0, data) -> dict:
    """One MaskSub step: both passes in train mode, one backward of the total, one AdamW step."""
    model.load_state_dict(state0)
    model.train()
    model.zero_grad(set_to_none=True)
    x = data["input"]
    z = model(x)  # main pass: updates the running stats
    after_main = buffers_of(model)
    z_s = model(mask_input(x, data["unit_mask"]))  # sub pass: updates them again
    after_sub = buffers_of(model)
    main, sub = masksub_losses(z, z_s, data["targets_soft"])
    total = MAIN_WEIGHT * main + SUB_WEIGHT * sub
    total.backward()
    named = list(model.named_parameters())
    out = dict(loss_main=main.detach().clone(), loss_sub=sub.detach().clone(),
               loss_total=total.detach().clone(), logits_main=z.detach().clone(),
               logits_sub=z_s.detach().clone(), buffer_after_main=after_main,
               buffer_after=after_sub, grads={n: p.grad.detach().clone() for n, p in named})
    groups = [dict(params=[p for _, p in named if p.ndim > 1], weight_decay=OPT["weight_decay"]),
              dict(params=[p for _, p in named if p.ndim <= 1], weight_decay=0.0)]
    opt = torch.optim.AdamW(groups, lr=OPT["lr"], betas=OPT["betas"], eps=OPT["eps"],
                            foreach=False, fused=False)
    opt.step()
    out["param_after"] = {n: p.detach().clone() for n, p in named}
    for k, v in buffers_of(model).items():
        assert torch.equal(v, after_sub[k]), f"the optimizer step changed buffer {k}"
    model.eval()
    with torch.no_grad():
        out["logits_eval_after"] = model(x)
    return out


def maxdiff(a, b) -> float:
    return float((a.double() - b.double()).abs().max())


def relerr(a, b) -> float:
    return maxdiff(a, b) / (float(b.double().abs().max()) + 1e-12)


def float64_crosscheck(model, state0, data, r32: dict) -> dict:
    """How far float32 lies from float64 (printed, not stored): the achievable tolerances."""
    m64 = copy.deepcopy(model).double()
    s64 = {k: (v.double() if v.is_floating_point() else v) for k, v in state0.items()}
    d64 = dict(data, input=data["input"].double(), targets_soft=data["targets_soft"].double())
    r64 = train_step(m64, s64, d64)
    return dict(
        logits_main=maxdiff(r64["logits_main"], r32["logits_main"]),
        loss_total=abs(float(r64["loss_total"]) - float(r32["loss_total"])),
        grad_rel=max(maxdiff(r64["grads"][k], r32["grads"][k]) / float(r32["grads"][k].abs().max())
                     for k in r32["grads"]),
        buffer_after=max(maxdiff(r64["buffer_after"][k], r32["buffer_after"][k])
                         for k in r32["buffer_after"]),
        logits_eval_after=maxdiff(r64["logits_eval_after"], r32["logits_eval_after"]),
    )


def build_fixture(name: str, spec: dict, data: dict):
    model = build_model(spec)
    state0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    buffer_names = [n for n, _ in model.named_buffers()]
    assert set(params) | set(buffer_names) == set(state0) and not set(params) & set(buffer_names)

    x, unit_mask = data["input"], data["unit_mask"]
    model.eval()
    with torch.no_grad():
        logits_plain = model(x)
        logits_features = model.forward_head(model.forward_features(x))
        logits_no_mask = model(mask_input(x, torch.zeros_like(unit_mask)))
        logits_masked = model(mask_input(x, unit_mask))
        ref_eval, _ = reference_forward(state0, x, spec, train=False)
    assert maxdiff(logits_plain, logits_features) < TOL
    assert maxdiff(logits_plain, logits_no_mask) == 0.0
    assert relerr(logits_plain, ref_eval) < TOL, relerr(logits_plain, ref_eval)
    assert maxdiff(logits_plain, logits_masked) > 1e-3, "masking should change the logits"
    for k, v in buffers_of(model).items():
        assert torch.equal(v, state0[k]), f"eval mode changed {k}"

    r = train_step(model, state0, data)
    # The train-mode forward and its running-stat updates, re-stated by hand.
    with torch.no_grad():
        ref_main, ref_stats = reference_forward(state0, x, spec, train=True)
    assert relerr(r["logits_main"], ref_main) < TOL, relerr(r["logits_main"], ref_main)
    assert set(ref_stats) == set(buffer_names)
    for k, v in ref_stats.items():
        assert relerr(v, r["buffer_after_main"][k]) < TOL, k
    # The sub pass moved every running mean/var again, and counted.
    for k in buffer_names:
        a, b = r["buffer_after_main"][k], r["buffer_after"][k]
        if k.endswith("num_batches_tracked"):
            assert int(a) == NUM_BATCHES_TRACKED0 + 1 and int(b) == NUM_BATCHES_TRACKED0 + 2, k
        else:
            assert maxdiff(a, b) > 0, f"sub pass did not update {k}"
    assert maxdiff(r["logits_main"], r["logits_sub"]) > 1e-3

    tensors = {}
    for k in params:
        tensors[f"param.{k}"] = state0[k]
    for k in buffer_names:
        tensors[f"buffer.{k}"] = state0[k]
    tensors["input"] = x
    tensors["unit_mask"] = unit_mask
    tensors["targets_soft"] = data["targets_soft"]
    tensors["logits_plain"] = logits_plain
    tensors["logits_masked"] = logits_masked
    for k in ("loss_main", "loss_sub", "loss_total", "logits_main", "logits_sub", "logits_eval_after"):
        tensors[f"ce.{k}"] = r[k]
    for k, g in r["grads"].items():
        tensors[f"ce.grad.{k}"] = g
    for k, p in r["param_after"].items():
        tensors[f"ce.param_after.{k}"] = p
    for k in buffer_names:
        tensors[f"ce.buffer_after_main.{k}"] = r["buffer_after_main"][k]
        tensors[f"ce.buffer_after.{k}"] = r["buffer_after"][k]
    for k, v in state0.items():
        assert torch.equal(tensors[f"param.{k}" if k in params else f"buffer.{k}"], v)

    stats = dict(
        loss_total=float(r["loss_total"]),
        min_abs_grad=min(float(g.abs().min()) for g in r["grads"].values()),
        n_params=sum(p.numel() for p in params.values()),
        float64_vs_float32=float64_crosscheck(model, state0, data, r),
    )
    metadata = {
        "format_version": FORMAT_VERSION,
        "generator": "tools/parity/make_fixtures.py --only resnet (tools/parity/fixtures_resnet.py)",
        "family": json.dumps("resnet"),
        "layout": name,
        "block": json.dumps(spec["block"]),
        "layers": json.dumps(list(spec["layers"])),
        "channels": json.dumps(list(spec["channels"])),
        "in_chans": json.dumps(IN_CHANS),
        "num_classes": json.dumps(NUM_CLASSES),
        "img_size": json.dumps(IMG_SIZE),
        "mask_patch_size": json.dumps(MASK_PATCH),
        "mask_grid": json.dumps([data["grid"], data["grid"]]),
        "n_masked": json.dumps(data["n_masked"]),
        "mask_ratio": json.dumps(MASK_RATIO),
        "bn_eps": json.dumps(BN_EPS),
        "bn_momentum": json.dumps(BN_MOMENTUM),
        "num_batches_tracked0": json.dumps(NUM_BATCHES_TRACKED0),
        "batch": json.dumps(BATCH),
        "label_smoothing": json.dumps(LABEL_SMOOTHING),
        "mix_y1": json.dumps(data["y1"]),
        "mix_y2": json.dumps(data["y2"]),
        "mix_lam": json.dumps(data["lam"]),
        "loss_weights": json.dumps({"main": MAIN_WEIGHT, "sub": SUB_WEIGHT}),
        "optimizer": json.dumps("AdamW"),
        "lr": json.dumps(OPT["lr"]),
        "betas": json.dumps(list(OPT["betas"])),
        "eps": json.dumps(OPT["eps"]),
        "weight_decay": json.dumps(OPT["weight_decay"]),
        "no_decay": json.dumps(sorted(n for n, p in params.items() if p.ndim <= 1)),
        "seed": json.dumps(SEED),
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "safetensors_version": safetensors.__version__,
        "numpy_version": np.__version__,
    }
    return tensors, metadata, stats


def main(out_dir, repo_root, write_fixture, verify_file) -> int:
    """Write every ResNet fixture with make_fixtures.py's canonical writer; returns bytes."""
    data = make_data()
    total = 0
    for name, spec in FIXTURES.items():
        tensors, metadata, stats = build_fixture(name, spec, data)
        path = out_dir / f"{name}.safetensors"
        write_fixture(path, tensors, metadata)
        verify_file(path, tensors, metadata)
        size = path.stat().st_size
        total += size
        print(f"{path.relative_to(repo_root)}: {size} bytes ({size / 1024:.1f} KiB), "
              f"{len(tensors)} tensors, {stats['n_params']} parameters")
        print(f"  ce: loss_total={stats['loss_total']:.6f} min|grad|={stats['min_abs_grad']:.3e}")
        print(f"  float64 re-run vs fixture: {json.dumps(stats['float64_vs_float32'])}")
    return total
