//! Data-parallel collectives. The step calls [`Collective::all_reduce_mean`] on the summed
//! (main + sub) gradients before clipping and the optimizer, so a multi-process engine (MPI on
//! CPU nodes, NCCL on GPUs) plugs in here without touching the step.

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::Var;

pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Average each parameter's gradient over all ranks, in place.
    fn all_reduce_mean(&self, grads: &mut GradStore, vars: &[Var]) -> Result<()>;
    /// Make every rank's parameters equal rank 0's.
    fn broadcast_params(&self, vars: &[Var]) -> Result<()>;
    fn is_main(&self) -> bool {
        self.rank() == 0
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
    fn all_reduce_mean(&self, _grads: &mut GradStore, _vars: &[Var]) -> Result<()> {
        Ok(())
    }
    fn broadcast_params(&self, _vars: &[Var]) -> Result<()> {
        Ok(())
    }
}
