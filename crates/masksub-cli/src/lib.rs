//! The composition layer of masksub: the training loop and everything around it (checkpoints,
//! metrics, progress, collectives), reusable by the `masksub` binary and by `xtask`.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data_source;
pub mod device;
pub mod error_text;
pub mod eval;
pub mod init_weights;
pub mod metrics;
pub mod progress;
pub mod recipe;
pub mod step;
pub mod trainer;

pub use config::TrainConfig;
/// The collectives (single process, MPI, NCCL) the trainer runs on.
pub use masksub_dist as dist;
pub use trainer::{train, TrainSummary};
