//! `masksub bench`: training-step and inference throughput of a registered model on synthetic
//! inputs, with the step split into its parts, the FLOPs the model config implies, and peak
//! memory. The step is the trainer's own [`MaskSubStep`], so what is measured is what trains.

use crate::config::TrainConfig;
use crate::step::{param_groups, MaskSubStep, StepSettings, StepTimes, TrainStep};
use crate::trainer::build_optimizer;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use masksub_core::{CosineSchedule, SubModel, SubObjective};
use masksub_models::registry::{self, ModelSpec};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;
use std::time::Instant;

/// How many steps to run and on what batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchSettings {
    pub batch_size: usize,
    /// Untimed steps first (allocator warm-up, lazy initialisation).
    pub warmup: usize,
    pub steps: usize,
}

/// Milliseconds of each part of a step (medians over the timed steps).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PhaseMs {
    pub main_forward: f64,
    pub main_backward: f64,
    pub sub_forward: f64,
    pub sub_backward: f64,
    pub optimizer: f64,
}

/// What every bench report says, whatever it measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchRun {
    /// "train" or "forward".
    pub kind: &'static str,
    pub model: String,
    pub params: usize,
    pub batch_size: usize,
    pub steps: usize,
    pub threads: usize,
    pub device: String,
    pub dtype: String,
    pub img_per_s: f64,
    pub achieved_gflop_per_s: Option<f64>,
    /// Peak resident memory of the process (VmHWM), MiB.
    pub peak_rss_mib: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainBenchReport {
    #[serde(flatten)]
    pub run: BenchRun,
    pub spec: ModelSpec,
    /// The recipe the step ran (optimizer, loss, smoothing, clipping), so a reference
    /// implementation can run the same step.
    pub recipe: TrainConfig,
    pub sub: SubModel,
    /// Median step time.
    pub ms_per_step: f64,
    pub phases_ms: PhaseMs,
    /// Training FLOPs of one step: 3x the forward FLOPs (forward + backward) of the main pass
    /// and, with MaskSub, of the sub pass, for the whole batch.
    pub step_gflop: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForwardBenchReport {
    #[serde(flatten)]
    pub run: BenchRun,
    pub ms_per_batch: f64,
}

impl BenchRun {
    fn new(
        kind: &'static str,
        cfg: &TrainConfig,
        model: &masksub_models::LoadedModel,
        b: &BenchSettings,
        dtype: DType,
        device: &Device,
    ) -> Self {
        BenchRun {
            kind,
            model: cfg.model.clone(),
            params: model
                .named_parameters()
                .iter()
                .map(|(_, v)| v.elem_count())
                .sum(),
            batch_size: b.batch_size,
            steps: b.steps,
            threads: rayon::current_num_threads(),
            device: device_name(device),
            dtype: format!("{dtype:?}").to_lowercase(),
            img_per_s: f64::NAN,
            achieved_gflop_per_s: None,
            peak_rss_mib: None,
        }
    }

    /// Fill in the throughput of `seconds` per batch of `gflop` and the peak memory so far.
    fn timed(mut self, seconds: f64, gflop: Option<f64>) -> Self {
        self.img_per_s = self.batch_size as f64 / seconds;
        self.achieved_gflop_per_s = gflop.map(|g| g / seconds);
        self.peak_rss_mib = peak_rss_mib();
        self
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), None elsewhere.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A seeded standard-normal batch in the model's input shape (normalized images look so).
fn synthetic_batch(
    spec: &ModelSpec,
    batch: usize,
    dtype: DType,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let (c, h, w) = spec.input_shape();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xbe7c);
    let n = batch * c * h * w;
    let px: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    let images = Tensor::from_vec(px, (batch, c, h, w), device)?.to_dtype(dtype)?;
    let k = spec.num_classes() as u32;
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % k).collect();
    Ok((images, Tensor::from_vec(labels, batch, device)?))
}

fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

fn check(b: &BenchSettings) -> Result<()> {
    if b.batch_size == 0 || b.steps == 0 {
        bail!("bench: --batch-size and --steps must be positive");
    }
    Ok(())
}

fn resolve(cfg: &TrainConfig) -> Result<ModelSpec> {
    let spec = registry::lookup(&cfg.model)?.with_kwargs(&cfg.model_kwargs)?;
    Ok(match cfg.drop_path {
        Some(d) => spec.with_drop_path(d),
        None => spec,
    })
}

/// Time `b.steps` training steps of `cfg`'s model, optimizer, loss and sub-model.
pub fn bench_train(
    cfg: &TrainConfig,
    b: BenchSettings,
    dtype: DType,
    device: &Device,
) -> Result<TrainBenchReport> {
    check(&b)?;
    let spec = resolve(cfg)?;
    let model = spec.build(cfg.seed, dtype, device)?;
    let (images, labels) = synthetic_batch(&spec, b.batch_size, dtype, device)?;
    let total = (b.warmup + b.steps) as u64;
    let schedule = CosineSchedule::new(cfg.lr, cfg.lr, cfg.lr, 0, total.max(1))?;
    let optimizer = build_optimizer(cfg, param_groups(&model, cfg.weight_decay))?;
    let single = masksub_dist::SingleProcess;
    let mut step = MaskSubStep::new(
        &model,
        SubObjective::new(cfg.sub, cfg.loss)?,
        optimizer,
        schedule,
        &single,
        StepSettings {
            clip_grad: cfg.clip_grad,
            smoothing: cfg.smoothing,
            seed: cfg.seed,
        },
    );
    step.sync_phases = !device.is_cpu();
    let mut times: Vec<StepTimes> = Vec::with_capacity(b.steps);
    let mut walls = Vec::with_capacity(b.steps);
    for s in 0..total {
        let t0 = Instant::now();
        let out = step.step(&images, &labels, s)?;
        if s >= b.warmup as u64 {
            walls.push(t0.elapsed().as_secs_f64());
            times.push(out.times);
        }
    }
    let med = |f: fn(&StepTimes) -> f64| 1e3 * median(&times.iter().map(f).collect::<Vec<_>>());
    let ms_per_step = 1e3 * median(&walls);
    let arch = spec.arch.config();
    let step_gflop = arch.forward_flops(None).and_then(|plain| {
        let sub = match cfg.sub {
            SubModel::Masking { ratio } => arch.forward_flops(Some(ratio))?,
            // DropSub / PathSub run the whole network again (drop-path saves no work here).
            SubModel::Dropout { .. } | SubModel::DropPath { .. } => plain,
            SubModel::None => 0.0,
        };
        Some(3.0 * (plain + sub) * b.batch_size as f64 / 1e9)
    });
    Ok(TrainBenchReport {
        run: BenchRun::new("train", cfg, &model, &b, dtype, device)
            .timed(ms_per_step / 1e3, step_gflop),
        spec,
        recipe: cfg.clone(),
        sub: cfg.sub,
        ms_per_step,
        phases_ms: PhaseMs {
            main_forward: med(|t| t.main_forward),
            main_backward: med(|t| t.main_backward),
            sub_forward: med(|t| t.sub_forward),
            sub_backward: med(|t| t.sub_backward),
            optimizer: med(|t| t.optimizer),
        },
        step_gflop,
    })
}

/// Time `b.steps` inference batches (eval mode, no gradients).
pub fn bench_forward(
    cfg: &TrainConfig,
    b: BenchSettings,
    dtype: DType,
    device: &Device,
) -> Result<ForwardBenchReport> {
    check(&b)?;
    let spec = resolve(cfg)?;
    let model = spec.build(cfg.seed, dtype, device)?;
    let (images, _) = synthetic_batch(&spec, b.batch_size, dtype, device)?;
    let mut walls = Vec::with_capacity(b.steps);
    for s in 0..b.warmup + b.steps {
        let t0 = Instant::now();
        let logits = model.forward(&images, false)?;
        device.synchronize()?;
        drop(logits);
        if s >= b.warmup {
            walls.push(t0.elapsed().as_secs_f64());
        }
    }
    let ms = 1e3 * median(&walls);
    let gflop = spec
        .arch
        .config()
        .forward_flops(None)
        .map(|f| f * b.batch_size as f64 / 1e9);
    Ok(ForwardBenchReport {
        run: BenchRun::new("forward", cfg, &model, &b, dtype, device).timed(ms / 1e3, gflop),
        ms_per_batch: ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> TrainConfig {
        TrainConfig {
            model: "vit_fmnist_tiny".into(),
            ..TrainConfig::default()
        }
    }

    #[test]
    fn a_masksub_step_reports_every_phase_and_the_flops_of_both_passes() {
        let b = BenchSettings {
            batch_size: 8,
            warmup: 1,
            steps: 3,
        };
        let r = bench_train(&tiny(), b, DType::F32, &Device::Cpu).unwrap();
        let p = r.phases_ms;
        for (name, v) in [
            ("main_forward", p.main_forward),
            ("main_backward", p.main_backward),
            ("sub_forward", p.sub_forward),
            ("sub_backward", p.sub_backward),
            ("optimizer", p.optimizer),
        ] {
            assert!(
                v > 0.0 && v <= r.ms_per_step,
                "{name} = {v} ms of {}",
                r.ms_per_step
            );
        }
        let spec = registry::lookup("vit_fmnist_tiny").unwrap();
        let cfg = spec.arch.config();
        let want =
            3.0 * 8.0 * (cfg.forward_flops(None).unwrap() + cfg.forward_flops(Some(0.5)).unwrap());
        assert!((r.step_gflop.unwrap() * 1e9 - want).abs() < 1.0);
        assert!(r.run.img_per_s > 0.0 && r.run.peak_rss_mib.unwrap() > 1.0);

        let plain = TrainConfig {
            sub: SubModel::None,
            ..tiny()
        };
        let r = bench_train(&plain, b, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            (r.phases_ms.sub_forward, r.phases_ms.sub_backward),
            (0.0, 0.0)
        );
        assert!(r.step_gflop.unwrap() * 1e9 < want * 0.7);
    }

    #[test]
    fn forward_bench_counts_images_and_rejects_empty_settings() {
        let b = BenchSettings {
            batch_size: 4,
            warmup: 0,
            steps: 2,
        };
        let r = bench_forward(&tiny(), b, DType::F32, &Device::Cpu).unwrap();
        assert!((r.run.img_per_s - 4.0 / (r.ms_per_batch / 1e3)).abs() < 1e-6);
        let e = bench_train(
            &tiny(),
            BenchSettings { steps: 0, ..b },
            DType::F32,
            &Device::Cpu,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--steps"), "{e}");
    }
}
