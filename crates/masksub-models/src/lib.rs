//! Mask-aware image classifiers whose parameter names are timm's `state_dict` keys.
//!
//! - [`vit`]: Vision Transformer (DeiT-III and MAE fine-tune layouts) with a token-drop sub pass;
//! - [`swin`]: Swin Transformer (shifted windows) with a mask-token sub pass;
//! - [`registry`]: timm-style model names with their configs and preprocessing;
//! - [`model`]: the fixed interface every family implements;
//! - [`weights`]: strict state-dict loading and saving; [`init`]: seeded initialisation;
//! - [`ops`]: differentiable LayerNorm / GELU / softmax with fused CPU kernels.

pub mod arch;
pub mod error;
pub mod init;
pub mod layers;
pub mod model;
pub mod ops;
pub mod registry;
pub mod swin;
pub mod vit;
pub mod weights;

pub use arch::ArchConfig;
pub use error::ModelError;
pub use model::{ImageClassifier, LoadedModel};
pub use registry::{ModelArch, ModelSpec};
pub use swin::{Swin, SwinConfig};
pub use vit::{GlobalPool, Vit, VitConfig};

pub type Result<T> = std::result::Result<T, ModelError>;
