//! Key remapping of checkpoints written by other code bases into timm's `state_dict` keys
//! (what our parameter paths are). Each format is one small file; [`detect`] guesses the format
//! from the keys, as timm's `checkpoint_filter_fn` does.

pub mod clip;
pub mod deit3;
pub mod mae;
pub mod torchvision;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub type StateDict = HashMap<String, Tensor>;

/// Where a checkpoint's keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// timm's own keys (the Hub's `model.safetensors`): loaded as is.
    Timm,
    /// The official MAE pre-training checkpoint: encoder keys are timm's; the decoder and the
    /// mask token are dropped.
    Mae,
    /// OpenAI CLIP (`visual.conv1`, `visual.transformer.resblocks.N`, ...).
    OpenaiClip,
    /// The official DeiT-III release (`blocks.N.gamma_1` / `gamma_2` for LayerScale).
    Deit3,
    /// torchvision's MobileNetV2 (`features.N...`, `classifier.1`).
    TorchvisionMobilenetV2,
}

/// Guess the format from the keys.
pub fn detect(sd: &StateDict) -> WeightFormat {
    let has = |p: &str| sd.keys().any(|k| k.starts_with(p));
    if has("visual.class_embedding") || has("class_embedding") {
        WeightFormat::OpenaiClip
    } else if sd.keys().any(|k| k.contains(".gamma_1")) {
        WeightFormat::Deit3
    } else if has("decoder_") || has("mask_token") {
        WeightFormat::Mae
    } else if has("features.0.0.weight") {
        WeightFormat::TorchvisionMobilenetV2
    } else {
        WeightFormat::Timm
    }
}

/// Rename `sd` into timm keys; returns notes on what was dropped or synthesised.
pub fn to_timm(format: WeightFormat, sd: StateDict) -> crate::Result<(StateDict, Vec<String>)> {
    match format {
        WeightFormat::Timm => Ok((sd, Vec::new())),
        WeightFormat::Mae => Ok(mae::remap(sd)),
        WeightFormat::OpenaiClip => clip::remap(sd),
        WeightFormat::Deit3 => Ok(deit3::remap(sd)),
        WeightFormat::TorchvisionMobilenetV2 => torchvision::mobilenet_v2(sd),
    }
}
