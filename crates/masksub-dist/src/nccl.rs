//! NCCL across GPUs through cudarc's bindings (candle's `nccl` feature): one process per GPU,
//! all-reduce and broadcast on device memory, on the device's own stream.
//!
//! The NCCL unique id travels from rank 0 to the others over MPI when mpirun started the job
//! (build with `mpi` too), else through a file every rank can read (MASKSUB_NCCL_ID_FILE), e.g.
//! when a scheduler sets RANK / WORLD_SIZE / LOCAL_RANK.

use crate::launch::Launch;
use crate::watchdog::Watchdog;
use crate::{Collective, DistError, Result};
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use candle_core::cuda::cudarc::nccl::safe::{Comm, Id, NcclType, ReduceOp};
use candle_core::cuda::CudaDType;
use candle_core::{CudaDevice, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use std::sync::Arc;
use std::time::Duration;

/// The communicator, shareable with the custom ops that run the collectives.
struct SharedComm(Comm);
// SAFETY: an NCCL communicator may be used from any thread as long as calls on it do not
// overlap; masksub issues every collective from the training thread, in program order.
unsafe impl Send for SharedComm {}
unsafe impl Sync for SharedComm {}

pub struct NcclCollective {
    comm: Arc<SharedComm>,
    device: Device,
    launch: Launch,
    watchdog: Watchdog,
    /// The MPI world that bootstrapped the id, kept for `abort` (ends the whole mpirun job).
    #[cfg(feature = "mpi")]
    mpi: Option<crate::mpi::MpiCollective>,
}

fn nccl_err(e: impl std::fmt::Debug) -> DistError {
    DistError::Engine {
        engine: "nccl",
        reason: format!("{e:?}"),
    }
}

fn end_rank(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(3)
}

impl NcclCollective {
    /// Join the NCCL job as `launch.rank` on `device` (the trainer's CUDA device, normally
    /// GPU `launch.local_rank`): the collectives run on its stream, in order with the compute.
    pub fn init(launch: Launch, device: &Device, timeout: Duration) -> Result<Self> {
        let device = device.clone();
        let stream = device.as_cuda_device()?.cuda_stream();
        #[cfg(feature = "mpi")]
        let mpi = if launch.is_mpi() {
            Some(crate::mpi::MpiCollective::init(timeout)?)
        } else {
            None
        };
        #[cfg(feature = "mpi")]
        let id = match &mpi {
            Some(m) => id_over_mpi(m, launch.rank)?,
            None => id_over_file(&launch, timeout)?,
        };
        #[cfg(not(feature = "mpi"))]
        let id = id_over_file(&launch, timeout)?;
        let watchdog = Watchdog::start(timeout, launch.rank, end_rank);
        let comm = {
            let _g = watchdog.enter("nccl init");
            Comm::from_rank(stream, launch.rank, launch.world_size, id).map_err(nccl_err)?
        };
        Ok(Self {
            comm: Arc::new(SharedComm(comm)),
            device,
            launch,
            watchdog,
            #[cfg(feature = "mpi")]
            mpi,
        })
    }

    /// Run `op` on the device and wait for the stream, so the watchdog sees a collective that
    /// never completes (NCCL calls return before the transfer is done).
    fn run(&self, name: &'static str, t: &Tensor, kind: OpKind) -> Result<Tensor> {
        if t.rank() != 1 {
            return Err(DistError::Engine {
                engine: "nccl",
                reason: format!("collectives take 1-D tensors, got shape {:?}", t.dims()),
            });
        }
        let t = t.to_device(&self.device)?.contiguous()?;
        let _g = self.watchdog.enter(name);
        let op = NcclOp {
            comm: Arc::clone(&self.comm),
            kind,
        };
        // bf16/f16 gradients are reduced in f32: the sum of many ranks needs the range.
        let out = match t.dtype() {
            DType::F32 | DType::F64 => t.apply_op1_no_bwd(&op)?,
            other => t
                .to_dtype(DType::F32)?
                .apply_op1_no_bwd(&op)?
                .to_dtype(other)?,
        };
        self.device.synchronize()?;
        Ok(out)
    }
}

#[cfg(feature = "mpi")]
fn id_over_mpi(mpi: &crate::mpi::MpiCollective, rank: usize) -> Result<Id> {
    let mine = if rank == 0 {
        Id::new()
            .map_err(nccl_err)?
            .internal()
            .map(|c| c as u8 as f32)
    } else {
        [0f32; 128]
    };
    let t = Tensor::from_slice(&mine, 128, &Device::Cpu)?;
    let got = mpi.broadcast(&t, 0)?.to_vec1::<f32>()?;
    Ok(Id::uninit(bytes_to_id(got.iter().map(|v| *v as u8))))
}

fn id_over_file(launch: &Launch, timeout: Duration) -> Result<Id> {
    let path = std::env::var("MASKSUB_NCCL_ID_FILE").map_err(|_| {
        DistError::Launch(format!(
            "rank {} of {} on GPUs without MPI: set MASKSUB_NCCL_ID_FILE to a path on a \
             filesystem every rank can read (or start the job with mpirun and build with mpi)",
            launch.rank, launch.world_size
        ))
    })?;
    let path = std::path::PathBuf::from(path);
    if launch.rank == 0 {
        let id = Id::new().map_err(nccl_err)?;
        let bytes: Vec<u8> = id.internal().iter().map(|c| *c as u8).collect();
        crate::rendezvous::publish(&path, &bytes)?;
        Ok(id)
    } else {
        // Ids older than this process's start are an earlier job's.
        let since = std::time::SystemTime::now() - Duration::from_secs(30);
        let bytes = crate::rendezvous::wait_for(&path, 128, since, timeout)?;
        Ok(Id::uninit(bytes_to_id(bytes.into_iter())))
    }
}

fn bytes_to_id(bytes: impl Iterator<Item = u8>) -> [std::ffi::c_char; 128] {
    let mut id = [0 as std::ffi::c_char; 128];
    for (d, b) in id.iter_mut().zip(bytes) {
        *d = b as std::ffi::c_char;
    }
    id
}

/// A collective as a candle custom op, so it reads and writes the tensor's device memory.
struct NcclOp {
    comm: Arc<SharedComm>,
    kind: OpKind,
}

#[derive(Clone, Copy)]
enum OpKind {
    AllReduceSum,
    Broadcast { root: usize },
}

impl NcclOp {
    fn launch<T>(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)>
    where
        T: NcclType + DeviceRepr + ValidAsZeroBits + CudaDType,
    {
        let dev: CudaDevice = s.device().clone();
        let n = l.shape().elem_count();
        let all: &CudaSlice<T> = s.as_cuda_slice::<T>()?;
        let src = all.slice(l.start_offset()..l.start_offset() + n);
        let mut dst = dev.alloc_zeros::<T>(n)?;
        let comm = &self.comm.0;
        let status = match self.kind {
            OpKind::AllReduceSum => comm.all_reduce(&src, &mut dst, &ReduceOp::Sum),
            OpKind::Broadcast { root } => {
                let send = (comm.rank() == root).then_some(&src);
                comm.broadcast(send, &mut dst, root as i32)
            }
        };
        status.map_err(|e| candle_core::Error::Cuda(format!("nccl: {e:?}").into()))?;
        Ok((CudaStorage::wrap_cuda_slice(dst, dev), l.shape().clone()))
    }
}

impl CustomOp1 for NcclOp {
    fn name(&self) -> &'static str {
        "nccl-collective"
    }
    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
        Err(candle_core::Error::Msg(
            "NCCL collectives take CUDA tensors".into(),
        ))
    }
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        match s.dtype() {
            DType::F32 => self.launch::<f32>(s, l),
            DType::F64 => self.launch::<f64>(s, l),
            dt => Err(candle_core::Error::UnsupportedDTypeForOp(dt, "nccl")),
        }
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.launch.rank
    }
    fn world_size(&self) -> usize {
        self.launch.world_size
    }
    fn local_rank(&self) -> usize {
        self.launch.local_rank
    }
    fn engine(&self) -> &'static str {
        "nccl"
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        self.run("all_reduce", t, OpKind::AllReduceSum)
    }
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor> {
        self.run("broadcast", t, OpKind::Broadcast { root })
    }
    fn barrier(&self) -> Result<()> {
        let one = Tensor::ones(1, DType::F32, &self.device)?;
        self.all_reduce_sum(&one).map(|_| ())
    }
    fn abort(&self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            m.abort(code)
        }
        std::process::exit(code)
    }
}
