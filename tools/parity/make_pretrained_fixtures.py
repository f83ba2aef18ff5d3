#!/usr/bin/env python3
"""Fixtures for pretrained-weight loading (masksub-models tests/pretrained_*.rs).

Tiny timm VisionTransformers with random weights, written in the formats users bring:
  pre_timm.safetensors        timm keys, as the Hub's model.safetensors (DeiT-III layout)
  pre_deit3_official.pth      the same weights in the official DeiT-III release layout
                              (zip torch file, state dict under 'model', gamma_1/gamma_2)
  pre_mae.pth                 MAE pre-training checkpoint (zip, under 'model', with decoder_*
                              and mask_token), to be fine-tuned with avg pool + fc_norm
  pre_clip_openai.pth         OpenAI CLIP keys (visual.* plus a text tower), fp16 as OpenAI
  pre_legacy.pth              legacy (non-zip) torch serialization: f32, f16, i64, a
                              non-contiguous view and two tensors sharing one storage
and pre_expected.safetensors with the input and timm's logits for each case (for MAE with
the head timm used, so the test can set it), and pos_embed resampling cases: the
checkpoint at 32 px loaded into a 48 px model (and 48 -> 32), logits from timm's own
checkpoint_filter_fn + resample_abs_pos_embed.

Run: /path/to/venv/bin/python tools/parity/make_pretrained_fixtures.py
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import safetensors.torch
import timm
import torch
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn, _convert_openai_clip

OUT = Path(__file__).resolve().parents[2] / "crates" / "masksub-models" / "tests" / "fixtures"
torch.manual_seed(7)

TINY = dict(img_size=32, patch_size=8, in_chans=3, embed_dim=32, depth=2, num_heads=4,
            mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.0)
DEIT3 = dict(TINY, num_classes=10, no_embed_class=True, init_values=1e-1, global_pool="token")
MAE_PRE = dict(TINY, num_classes=0, global_pool="token")           # encoder as pre-trained
MAE_FT = dict(TINY, num_classes=10, global_pool="avg")              # fine-tune layout
CLIP = dict(TINY, num_classes=16, pre_norm=True, global_pool="token",
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-5))


def randomize(m: torch.nn.Module) -> None:
    """Random values everywhere (also LayerNorm/LayerScale), so every key matters."""
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.3)


def contig(sd):
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    exp = {}
    x32 = torch.randn(2, 3, 32, 32)
    x48 = torch.randn(2, 3, 48, 48)
    exp["x32"], exp["x48"] = x32, x48

    # timm safetensors + official DeiT-III layout.
    deit = VisionTransformer(**DEIT3).eval()
    randomize(deit)
    sd = contig(deit.state_dict())
    safetensors.torch.save_file(sd, str(OUT / "pre_timm.safetensors"))
    official = {k.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2"): v
                for k, v in sd.items()}
    assert any("gamma_1" in k for k in official)
    torch.save({"model": official, "epoch": 799}, OUT / "pre_deit3_official.pth")
    with torch.no_grad():
        exp["deit3_logits"] = deit(x32)
        # pos_embed resampling, as timm loads the 32 px checkpoint into a 48 px model.
        big = VisionTransformer(**dict(DEIT3, img_size=48)).eval()
        big.load_state_dict(checkpoint_filter_fn(official, big, adapt_layer_scale=True))
        exp["deit3_48_logits"] = big(x48)
        exp["deit3_48_pos_embed"] = big.pos_embed.detach().clone()

    # MAE: pre-trained encoder (+ decoder, mask token) -> avg-pool fine-tune model.
    mae = VisionTransformer(**MAE_PRE).eval()
    randomize(mae)
    enc = contig(mae.state_dict())
    ckpt = dict(enc)
    ckpt["mask_token"] = torch.randn(1, 1, 16)
    ckpt["decoder_embed.weight"] = torch.randn(16, 32)
    ckpt["decoder_embed.bias"] = torch.randn(16)
    ckpt["decoder_pos_embed"] = torch.randn(1, 17, 16)
    ckpt["decoder_blocks.0.norm1.weight"] = torch.randn(16)
    ckpt["decoder_pred.weight"] = torch.randn(192, 16)
    torch.save({"model": ckpt}, OUT / "pre_mae.pth")
    ft = VisionTransformer(**MAE_FT).eval()
    sd_ft = {k: v for k, v in checkpoint_filter_fn({"model": ckpt}, ft).items()
             if not k.startswith("decoder") and k != "mask_token" and not k.startswith("norm.")}
    missing, unexpected = ft.load_state_dict(sd_ft, strict=False)
    assert set(missing) == {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}, missing
    assert not unexpected, unexpected
    with torch.no_grad():
        ft.head.weight.normal_(0, 0.5)
        ft.head.bias.normal_(0, 0.5)
        exp["mae_head.weight"], exp["mae_head.bias"] = ft.head.weight.clone(), ft.head.bias.clone()
        exp["mae_logits"] = ft(x32)
        # The same checkpoint at 48 px (pos_embed with a cls slot).
        ft48 = VisionTransformer(**dict(MAE_FT, img_size=48)).eval()
        sd48 = {k: v for k, v in checkpoint_filter_fn({"model": ckpt}, ft48).items()
                if not k.startswith("decoder") and k != "mask_token" and not k.startswith("norm.")}
        ft48.load_state_dict(sd48, strict=False)
        ft48.head.load_state_dict(ft.head.state_dict())
        exp["mae_48_logits"] = ft48(x48)

    # OpenAI CLIP: timm pre-norm ViT written back in OpenAI's key names (fp16 as released).
    clip = VisionTransformer(**CLIP).eval()
    randomize(clip)
    with torch.no_grad():
        clip.head.bias.zero_()  # OpenAI's proj has no bias
    csd = contig(clip.state_dict())
    inv = {}
    for k, v in csd.items():
        if k == "head.bias":
            continue
        n = (k.replace("patch_embed.proj", "conv1").replace("norm_pre", "ln_pre")
             .replace("blocks.", "transformer.resblocks.").replace("attn.qkv.", "attn.in_proj_")
             .replace("attn.proj", "attn.out_proj").replace("mlp.fc1", "mlp.c_fc")
             .replace("mlp.fc2", "mlp.c_proj").replace("norm1", "ln_1").replace("norm2", "ln_2"))
        if n == "norm.weight" or n == "norm.bias":
            n = n.replace("norm", "ln_post")
        if k == "head.weight":
            n, v = "proj", v.t().contiguous()
        elif k == "cls_token":
            n, v = "class_embedding", v.reshape(-1)
        elif k == "pos_embed":
            n, v = "positional_embedding", v[0]
        inv["visual." + n] = v.half()
    inv["positional_embedding"] = torch.randn(8, 24).half()  # text tower: dropped
    inv["transformer.resblocks.0.ln_1.weight"] = torch.randn(24).half()
    inv["token_embedding.weight"] = torch.randn(50, 24).half()
    # timm's own converter gets back exactly the timm keys.
    back = _convert_openai_clip({k: v.float() for k, v in inv.items()}, clip)
    assert set(back) == set(csd), set(back) ^ set(csd)
    torch.save(inv, OUT / "pre_clip_openai.pth")
    clip16 = VisionTransformer(**CLIP).eval()
    clip16.load_state_dict({k: v.float() for k, v in back.items()})
    with torch.no_grad():
        exp["clip_logits"] = clip16(x32)

    # Legacy serialization.
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    legacy = {
        "w": torch.randn(4, 3),
        "t": base.t(),                       # non-contiguous view (stride (1, 4))
        "row": base[1],                      # shares base's storage at offset 4
        "h": torch.randn(5).half(),
        "n": torch.tensor(42, dtype=torch.int64),
    }
    torch.save(legacy, OUT / "pre_legacy.pth", _use_new_zipfile_serialization=False)
    exp.update({f"legacy.{k}": v.contiguous().float() for k, v in legacy.items()})

    safetensors.torch.save_file({k: v.float().contiguous() for k, v in exp.items()},
                                str(OUT / "pre_expected.safetensors"))
    print("wrote", sorted(p.name for p in OUT.glob("pre_*")))


if __name__ == "__main__":
    main()
