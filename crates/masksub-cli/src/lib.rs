//! The composition layer of masksub: the training loop and everything around it (checkpoints,
//! metrics, progress, collectives), reusable by the `masksub` binary and by `xtask`.

pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod device;
pub mod eval;
pub mod metrics;
pub mod progress;
pub mod step;
pub mod trainer;

pub use config::TrainConfig;
pub use trainer::{train, TrainSummary};
