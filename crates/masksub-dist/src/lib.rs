//! Data-parallel collectives for masksub, on the engines clusters already run: MPI across CPU
//! processes and nodes, NCCL across GPUs — never a home-made network layer.
//!
//! - [`collective`]: the [`Collective`] trait (rank, world size, local rank, all-reduce,
//!   broadcast, barrier) and [`SingleProcess`], the always-compiled default;
//! - [`launch`]: which launcher started this process (Open MPI, MPICH/Hydra, torchrun-style
//!   RANK/WORLD_SIZE) and [`from_env`], which picks the implementation;
//! - [`params`]: what the trainer does with a collective — gradients averaged in a few large flat
//!   buckets, parameters broadcast from rank 0, buffers (BatchNorm statistics) averaged, scalars
//!   summed;
//! - `mpi` (feature `mpi`), `nccl` (feature `nccl`): the engines; [`watchdog`] turns a peer that
//!   died or hangs into a clear error instead of a hang.

pub mod collective;
pub mod error;
pub mod launch;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod params;
pub mod rendezvous;
pub mod watchdog;

pub use collective::{Collective, SingleProcess};
pub use error::DistError;
pub use launch::{from_env, Launch, Launcher};

pub type Result<T> = std::result::Result<T, DistError>;
