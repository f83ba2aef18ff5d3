//! MPI through rsmpi against the system MPI (Open MPI, MPICH, Intel MPI): host-memory
//! collectives for CPU nodes. Started by `mpirun`; ranks may span nodes (a hostfile).

use crate::watchdog::Watchdog;
use crate::{Collective, DistError, Result};
use candle_core::{DType, Device, Tensor};
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;
use std::sync::Mutex;
use std::time::Duration;

struct Comms {
    world: SimpleCommunicator,
    // Dropped last: finalizes MPI.
    _universe: Universe,
}

/// The MPI world communicator. Calls are serialized by a mutex (MPI initialised with
/// `MPI_THREAD_SERIALIZED`), which is what makes sharing it across threads sound.
pub struct MpiCollective {
    comms: Mutex<Comms>,
    rank: usize,
    world_size: usize,
    local_rank: usize,
    watchdog: Watchdog,
}

// SAFETY: the MPI handles are only used under `comms`' mutex, and MPI was initialised with at
// least MPI_THREAD_SERIALIZED (checked in `init`), which permits calls from any thread as long
// as they never overlap.
unsafe impl Send for MpiCollective {}
unsafe impl Sync for MpiCollective {}

fn end_rank(msg: &str) -> ! {
    eprintln!("error: {msg}");
    // Exiting without MPI_Finalize makes mpirun end every other rank of the job.
    std::process::exit(3)
}

impl MpiCollective {
    /// Initialise MPI (once per process) and start the collective watchdog.
    pub fn init(timeout: Duration) -> Result<Self> {
        let (universe, level) =
            mpi::initialize_with_threading(Threading::Serialized).ok_or(DistError::Engine {
                engine: "mpi",
                reason: "MPI is already initialised in this process".into(),
            })?;
        if level < Threading::Serialized {
            return Err(DistError::Engine {
                engine: "mpi",
                reason: format!("the MPI library offers thread level {level:?}, need Serialized"),
            });
        }
        let world = universe.world();
        let rank = world.rank() as usize;
        let world_size = world.size() as usize;
        let local_rank = world.split_shared(0).rank() as usize;
        Ok(Self {
            comms: Mutex::new(Comms {
                world,
                _universe: universe,
            }),
            rank,
            world_size,
            local_rank,
            watchdog: Watchdog::start(timeout, rank, end_rank),
        })
    }

    fn with_world<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&SimpleCommunicator) -> T,
    ) -> Result<T> {
        let comms = self.comms.lock().map_err(|_| DistError::Engine {
            engine: "mpi",
            reason: "a previous collective panicked".into(),
        })?;
        let _in_flight = self.watchdog.enter(op);
        Ok(f(&comms.world))
    }
}

/// A 1-D host tensor's values, for the MPI buffers.
fn host_values(t: &Tensor) -> Result<(Device, DType)> {
    if t.rank() != 1 {
        return Err(DistError::Engine {
            engine: "mpi",
            reason: format!("collectives take 1-D tensors, got shape {:?}", t.dims()),
        });
    }
    Ok((t.device().clone(), t.dtype()))
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world_size
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }
    fn engine(&self) -> &'static str {
        "mpi"
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let (device, dtype) = host_values(t)?;
        let out = match dtype {
            DType::F64 => {
                let send = t.to_vec1::<f64>()?;
                let mut recv = vec![0f64; send.len()];
                self.with_world("all_reduce", |w| {
                    w.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum())
                })?;
                Tensor::from_vec(recv, send.len(), &device)?
            }
            _ => {
                let send = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                let mut recv = vec![0f32; send.len()];
                self.with_world("all_reduce", |w| {
                    w.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum())
                })?;
                Tensor::from_vec(recv, send.len(), &device)?.to_dtype(dtype)?
            }
        };
        Ok(out)
    }

    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor> {
        let (device, dtype) = host_values(t)?;
        let mut buf = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let n = buf.len();
        self.with_world("broadcast", |w| {
            w.process_at_rank(root as i32).broadcast_into(&mut buf[..])
        })?;
        Ok(Tensor::from_vec(buf, n, &device)?.to_dtype(dtype)?)
    }

    fn barrier(&self) -> Result<()> {
        self.with_world("barrier", |w| w.barrier())
    }

    fn abort(&self, code: i32) -> ! {
        match self.comms.lock() {
            Ok(c) => c.world.abort(code),
            Err(_) => std::process::exit(code),
        }
    }
}
