//! `--device cpu|cuda[:N]|metal[:N]` and `--threads`.

use anyhow::{bail, Context, Result};
use candle_core::Device;

pub fn parse_device(spec: &str) -> Result<Device> {
    parse_device_for_rank(spec, 0)
}

/// [`parse_device`] where a bare `cuda` / `metal` means device `local_rank`: with one process
/// per GPU, each rank of a node takes its own.
pub fn parse_device_for_rank(spec: &str, local_rank: usize) -> Result<Device> {
    let (kind, ordinal) = match spec.split_once(':') {
        Some((k, n)) => (
            k,
            n.parse::<usize>()
                .with_context(|| format!("--device {spec}: `{n}` is not a device number"))?,
        ),
        None => (spec, local_rank),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(ordinal).with_context(|| {
            format!("--device {spec}: CUDA unavailable (build with `--features cuda`?)")
        }),
        "metal" => Device::new_metal(ordinal).with_context(|| {
            format!("--device {spec}: Metal unavailable (build with `--features metal`?)")
        }),
        other => bail!("--device {other}: expected cpu, cuda[:N] or metal[:N]"),
    }
}

/// Size rayon's global pool (candle's CPU GEMM and our fused kernels run on it).
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads must be positive");
        }
        // candle's GEMM reads RAYON_NUM_THREADS; set it before any pool exists.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .ok();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_nonsense() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("tpu")
            .unwrap_err()
            .to_string()
            .contains("expected cpu"));
        assert!(parse_device("cuda:x")
            .unwrap_err()
            .to_string()
            .contains("not a device number"));
    }
}
