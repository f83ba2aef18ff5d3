//! What MaskSub *is*, independent of any architecture or dataset.
//!
//! - [`mask`]: mask strategies that turn (batch, token grid, seeded RNG) into per-sample plans;
//! - [`loss`]: soft-target cross-entropy, label-smoothed CE, BCE-with-logits;
//! - [`objective`]: the two-pass sub-model objective (main pass + masked sub pass, one backward);
//! - [`optim`], [`schedule`], [`clip`]: AdamW and LAMB with parameter groups, warmup + cosine, global-norm clipping.
//!
//! Models plug in through [`objective::SubModelForward`]; nothing here knows a layer.

pub mod clip;
pub mod error;
pub mod loss;
pub mod mask;
pub mod objective;
pub mod optim;
pub mod rng;
pub mod schedule;

pub use error::CoreError;
pub use loss::LossKind;
pub use mask::{MaskKind, MaskPlan, MaskStrategy, RandomTokenDrop, RandomUnitMask, TokenGrid};
pub use objective::{Phase, StepLosses, SubModel, SubModelForward, SubObjective, SubRegularizer};
pub use optim::{AdamW, AdamWConfig, Lamb, LambConfig, Optimizer, OptimizerKind, ParamGroup};
pub use schedule::CosineSchedule;

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, CoreError>;
