//! Which launcher started this process, read from the variables each one sets, and the
//! collective that serves it.

use crate::{Collective, DistError, Result, SingleProcess};
use candle_core::Device;
use std::time::Duration;

/// Who set the rank variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// No launcher: one process.
    None,
    /// Open MPI's `mpirun` (OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK).
    OpenMpi,
    /// MPICH / Intel MPI's Hydra (PMI_RANK / PMI_SIZE, MPI_LOCALRANKID).
    Hydra,
    /// torchrun-style RANK / WORLD_SIZE / LOCAL_RANK (e.g. one process per GPU by a scheduler).
    RankEnv,
}

/// This process's place in the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    pub launcher: Launcher,
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
}

impl Launch {
    /// Read the launch from a variable lookup (the process environment in [`Launch::detect`]).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let parse = |name: &'static str| -> Result<Option<usize>> {
            get(name)
                .map(|v| {
                    v.trim().parse::<usize>().map_err(|e| DistError::Env {
                        name,
                        value: v.clone(),
                        reason: e.to_string(),
                    })
                })
                .transpose()
        };
        let schemes: [(Launcher, &'static str, &'static str, &'static str); 3] = [
            (
                Launcher::OpenMpi,
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_SIZE",
                "OMPI_COMM_WORLD_LOCAL_RANK",
            ),
            (Launcher::Hydra, "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
            (Launcher::RankEnv, "RANK", "WORLD_SIZE", "LOCAL_RANK"),
        ];
        for (launcher, rank_var, size_var, local_var) in schemes {
            let (Some(rank), Some(world_size)) = (parse(rank_var)?, parse(size_var)?) else {
                continue;
            };
            if world_size == 0 || rank >= world_size {
                return Err(DistError::Env {
                    name: rank_var,
                    value: rank.to_string(),
                    reason: format!("must be below {size_var} = {world_size}"),
                });
            }
            let local_rank = parse(local_var)?.unwrap_or(0);
            return Ok(Self {
                launcher,
                rank,
                world_size,
                local_rank,
            });
        }
        Ok(Self {
            launcher: Launcher::None,
            rank: 0,
            world_size: 1,
            local_rank: 0,
        })
    }

    /// The launch described by this process's environment.
    pub fn detect() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn is_mpi(&self) -> bool {
        matches!(self.launcher, Launcher::OpenMpi | Launcher::Hydra)
    }
}

/// How long a rank waits in one collective before it decides a peer died or hangs:
/// MASKSUB_DIST_TIMEOUT seconds, 600 by default (a first step may compile kernels).
pub fn collective_timeout() -> Result<Duration> {
    match std::env::var("MASKSUB_DIST_TIMEOUT") {
        Err(_) => Ok(Duration::from_secs(600)),
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or(DistError::Env {
                name: "MASKSUB_DIST_TIMEOUT",
                value: v,
                reason: "expected a positive number of seconds".into(),
            }),
    }
}

/// The collective for this process: one process when nothing launched it; MPI under mpirun;
/// NCCL for CUDA devices when built with `nccl`. A launch this build cannot serve is an error
/// that says which feature to build with — never a silent single-process run.
pub fn from_env(device: &Device) -> Result<Box<dyn Collective>> {
    let launch = Launch::detect()?;
    if launch.world_size == 1 && launch.launcher != Launcher::OpenMpi {
        return Ok(Box::new(SingleProcess));
    }
    if device.is_cuda() {
        return nccl_collective(launch, device);
    }
    if launch.is_mpi() {
        return mpi_collective(launch);
    }
    Err(DistError::Launch(format!(
        "RANK/WORLD_SIZE say rank {} of {}, but on CPU the processes talk through MPI: \
         start them with `mpirun -np {} masksub ...` (build with --features mpi)",
        launch.rank, launch.world_size, launch.world_size
    )))
}

#[cfg(feature = "mpi")]
fn mpi_collective(launch: Launch) -> Result<Box<dyn Collective>> {
    let _ = launch;
    Ok(Box::new(crate::mpi::MpiCollective::init(
        collective_timeout()?,
    )?))
}

#[cfg(not(feature = "mpi"))]
fn mpi_collective(launch: Launch) -> Result<Box<dyn Collective>> {
    if launch.world_size == 1 {
        return Ok(Box::new(SingleProcess));
    }
    Err(DistError::Launch(format!(
        "started by an MPI launcher as rank {} of {}, but this masksub was built without MPI; \
         rebuild with `--features mpi` (needs libopenmpi-dev)",
        launch.rank, launch.world_size
    )))
}

#[cfg(feature = "nccl")]
fn nccl_collective(launch: Launch, device: &Device) -> Result<Box<dyn Collective>> {
    Ok(Box::new(crate::nccl::NcclCollective::init(
        launch,
        device,
        collective_timeout()?,
    )?))
}

#[cfg(not(feature = "nccl"))]
fn nccl_collective(launch: Launch, _device: &Device) -> Result<Box<dyn Collective>> {
    if launch.world_size == 1 {
        return Ok(Box::new(SingleProcess));
    }
    Err(DistError::Launch(format!(
        "rank {} of {} on a CUDA device needs NCCL; rebuild with `--features cuda,nccl`",
        launch.rank, launch.world_size
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Launch> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn reads_each_launchers_variables() {
        let l = launch(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
        ])
        .unwrap();
        assert_eq!(
            (l.launcher, l.rank, l.world_size, l.local_rank),
            (Launcher::OpenMpi, 3, 4, 1)
        );
        let l = launch(&[("PMI_RANK", "1"), ("PMI_SIZE", "2")]).unwrap();
        assert_eq!((l.launcher, l.rank, l.local_rank), (Launcher::Hydra, 1, 0));
        let l = launch(&[("RANK", "0"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "0")]).unwrap();
        assert_eq!((l.launcher, l.world_size), (Launcher::RankEnv, 8));
        let l = launch(&[]).unwrap();
        assert_eq!((l.launcher, l.rank, l.world_size), (Launcher::None, 0, 1));
        // Open MPI's variables win over generic ones a scheduler may also set.
        let l = launch(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "9"),
            ("OMPI_COMM_WORLD_RANK", "0"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
        ])
        .unwrap();
        assert_eq!(
            (l.launcher, l.rank, l.world_size),
            (Launcher::OpenMpi, 0, 2)
        );
    }

    #[test]
    fn malformed_or_inconsistent_variables_name_the_variable() {
        let e = launch(&[("RANK", "x"), ("WORLD_SIZE", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`RANK`") && e.contains("`x`"), "{e}");
        let e = launch(&[("PMI_RANK", "2"), ("PMI_SIZE", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("PMI_RANK") && e.contains("PMI_SIZE"), "{e}");
    }
}
