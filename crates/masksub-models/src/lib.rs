//! Mask-aware image classifiers whose parameter names are timm's `state_dict` keys.
//!
//! - [`vit`]: Vision Transformer (DeiT-III and MAE fine-tune layouts) with a token-drop sub pass;
//! - [`swin`]: Swin Transformer (shifted windows) with a mask-token sub pass;
//! - [`resnet`]: ResNet (BasicBlock / Bottleneck, BatchNorm with running statistics) whose sub
//!   pass zeroes pixel patches ([`pixel_mask`]); CNN layers in [`cnn_layers`];
//! - [`mobilenetv2`]: timm's MobileNetV2 (depthwise convs), pixel-patch sub pass;
//! - [`pretrained`], [`hub`], [`remap`], [`torch_file`], [`resample`]: pretrained weights from the
//!   Hub or local files (timm safetensors, torch zip and legacy files, MAE / CLIP / DeiT-III /
//!   torchvision keys), pos_embed resampling, new heads;
//! - [`registry`]: timm-style model names with their configs and preprocessing;
//! - [`model`]: the fixed interface every family implements;
//! - [`weights`]: strict state-dict loading and saving; [`init`]: seeded initialisation;
//! - [`ops`]: differentiable LayerNorm / GELU / softmax with fused CPU kernels.

pub mod arch;
pub mod cnn_layers;
pub mod error;
pub mod hub;
pub mod init;
pub mod layers;
pub mod mobilenetv2;
pub mod model;
pub mod ops;
pub mod pixel_mask;
pub mod pretrained;
pub mod registry;
pub mod remap;
pub mod resample;
pub mod resnet;
pub mod swin;
pub mod torch_file;
pub mod vit;
pub mod weights;

pub use arch::ArchConfig;
pub use error::ModelError;
pub use mobilenetv2::{MobileNetV2, MobileNetV2Config};
pub use model::{ImageClassifier, LoadedModel};
pub use registry::{ModelArch, ModelSpec};
pub use resnet::{BlockType, ResNet, ResNetConfig};
pub use swin::{Swin, SwinConfig};
pub use vit::{GlobalPool, Vit, VitConfig};

pub type Result<T> = std::result::Result<T, ModelError>;
