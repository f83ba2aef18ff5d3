//! OpenAI CLIP's image tower to timm's pre-norm ViT (what timm's `_convert_openai_clip` does):
//! conv1 -> patch_embed.proj (no bias), class_embedding -> cls_token (1, 1, D),
//! positional_embedding -> pos_embed (1, N, D), ln_pre -> norm_pre, ln_post -> norm,
//! transformer.resblocks.N -> blocks.N with ln_1/ln_2 -> norm1/norm2,
//! attn.in_proj_{weight,bias} -> attn.qkv (same [q | k | v] order), attn.out_proj -> attn.proj,
//! mlp.c_fc / c_proj -> mlp.fc1 / fc2, and the projection `proj` (D, E) -> a bias-free
//! head (E, D). The text tower (keys outside `visual.`) is dropped.

use super::StateDict;
use crate::{ModelError, Result};
use candle_core::{DType, Tensor};

fn rename(k: &str) -> String {
    let swaps = [
        ("conv1", "patch_embed.proj"),
        ("positional_embedding", "pos_embed"),
        ("transformer.resblocks.", "blocks."),
        ("ln_pre", "norm_pre"),
        ("ln_post", "norm"),
        ("ln_", "norm"),
        ("in_proj_", "qkv."),
        ("out_proj", "proj"),
        ("mlp.c_fc", "mlp.fc1"),
        ("mlp.c_proj", "mlp.fc2"),
    ];
    swaps
        .iter()
        .fold(k.to_string(), |k, (from, to)| k.replace(from, to))
}

pub fn remap(sd: StateDict) -> Result<(StateDict, Vec<String>)> {
    let prefix = if sd.keys().any(|k| k.starts_with("visual.")) {
        "visual."
    } else {
        ""
    };
    let total = sd.len();
    let mut used = 0;
    let mut out = StateDict::new();
    for (k, v) in sd {
        let Some(k) = k.strip_prefix(prefix) else {
            continue;
        };
        used += 1;
        let k = rename(k);
        let bad = |e: candle_core::Error| ModelError::Checkpoint {
            key: k.clone(),
            reason: format!("unexpected CLIP tensor shape: {e}"),
        };
        match k.as_str() {
            "proj" => {
                let w = v.t().and_then(|w| w.contiguous()).map_err(bad)?;
                let e = w.dim(0).map_err(bad)?;
                let bias = Tensor::zeros(e, DType::F32, w.device())?.to_dtype(w.dtype())?;
                out.insert("head.bias".into(), bias);
                out.insert("head.weight".into(), w);
            }
            "class_embedding" => {
                let t = v.unsqueeze(0).and_then(|t| t.unsqueeze(0)).map_err(bad)?;
                out.insert("cls_token".into(), t);
            }
            "pos_embed" => {
                let t = v.unsqueeze(0).map_err(bad)?;
                out.insert(k, t);
            }
            _ => {
                out.insert(k, v);
            }
        }
    }
    Ok((
        out,
        vec![format!(
            "OpenAI CLIP: {used} image-tower tensors renamed to timm keys, {} others dropped",
            total - used
        )],
    ))
}
