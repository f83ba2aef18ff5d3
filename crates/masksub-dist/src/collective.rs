//! The collective operations data-parallel training needs, on candle tensors so an engine that
//! works on device memory (NCCL) and one that works on host memory (MPI) share one interface.

use crate::Result;
use candle_core::Tensor;

pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Rank among the processes of this node (picks the GPU).
    fn local_rank(&self) -> usize;
    /// The engine's name, for logs ("single", "mpi", "nccl").
    fn engine(&self) -> &'static str;
    /// Element-wise sum over all ranks of a 1-D tensor (f32 or f64); every rank gets the sum.
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor>;
    /// Rank `root`'s 1-D tensor, on every rank.
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor>;
    fn barrier(&self) -> Result<()>;
    fn is_main(&self) -> bool {
        self.rank() == 0
    }
    /// End the whole job after an unrecoverable error on this rank, so that no peer waits
    /// forever in a collective this rank will never enter. The default (one process) exits.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// One process: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn engine(&self) -> &'static str {
        "single"
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    fn broadcast(&self, t: &Tensor, _root: usize) -> Result<Tensor> {
        Ok(t.clone())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
