//! `masksub bench train|forward`: throughput of one model on synthetic inputs, printed and
//! written as JSON (`cargo xtask bench` reads it beside PyTorch's numbers).

use anyhow::{Context, Result};
use candle_core::DType;
use clap::{Args, Subcommand, ValueEnum};
use masksub_cli::bench::{bench_forward, bench_train, BenchSettings};
use masksub_cli::device::{parse_device, set_threads};
use masksub_cli::TrainConfig;
use masksub_core::{objective::DEFAULT_MASK_RATIO, SubModel};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Training steps: img/s, ms per step split into main/sub forward/backward and optimizer,
    /// FLOPs and GFLOP/s, peak memory.
    Train(BenchArgs),
    /// Inference batches (eval mode): img/s.
    Forward(BenchArgs),
    /// Data pipeline (decode + RandomResizedCrop + flip + normalize): img/s at 1..N threads.
    Data(super::bench_data::DataBenchArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BenchSub {
    None,
    Masking,
    Dropout,
    Droppath,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BenchDtype {
    F32,
    Bf16,
    F16,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, default_value = "vit_fmnist_small")]
    model: String,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    #[arg(long, value_enum, default_value = "masking")]
    sub: BenchSub,
    /// The sub pass's rate: mask ratio, or the dropout / drop-path rate
    #[arg(long, alias = "sub-ratio", default_value_t = DEFAULT_MASK_RATIO)]
    mask_ratio: f64,
    /// Untimed steps first
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed steps (medians are reported)
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Training recipe (optimizer, loss, clipping) as a JSON config; the defaults otherwise
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "f32")]
    dtype: BenchDtype,
    /// cpu, cuda[:N] or metal[:N]
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
    /// Also write the report as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
}

fn setup(a: &BenchArgs) -> Result<(TrainConfig, BenchSettings, DType, candle_core::Device)> {
    set_threads(a.threads)?;
    let mut cfg = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::default(),
    };
    cfg.model = a.model.clone();
    cfg.sub = match a.sub {
        BenchSub::None => SubModel::None,
        BenchSub::Masking => SubModel::Masking {
            ratio: a.mask_ratio,
        },
        BenchSub::Dropout => SubModel::Dropout {
            ratio: a.mask_ratio,
        },
        BenchSub::Droppath => SubModel::DropPath {
            ratio: a.mask_ratio,
        },
    };
    cfg.validate()?;
    let dtype = match a.dtype {
        BenchDtype::F32 => DType::F32,
        BenchDtype::Bf16 => DType::BF16,
        BenchDtype::F16 => DType::F16,
    };
    let b = BenchSettings {
        batch_size: a.batch_size,
        warmup: a.warmup,
        steps: a.steps,
    };
    Ok((cfg, b, dtype, parse_device(&a.device)?))
}

fn emit(report: &impl serde::Serialize, json: &Option<PathBuf>) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    if let Some(p) = json {
        std::fs::write(p, &text).with_context(|| format!("{}: cannot write", p.display()))?;
    }
    Ok(())
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Data(a) => super::bench_data::run(a),
        BenchCommand::Train(a) => {
            let (cfg, b, dtype, device) = setup(&a)?;
            let r = bench_train(&cfg, b, dtype, &device)?;
            let p = &r.phases_ms;
            println!(
                "{} batch {} sub {:?} on {} ({} threads, {}): {:.1} img/s, {:.1} ms/step \
                 [main fwd {:.1} bwd {:.1} | sub fwd {:.1} bwd {:.1} | optim {:.1}]",
                r.run.model,
                r.run.batch_size,
                r.sub,
                r.run.device,
                r.run.threads,
                r.run.dtype,
                r.run.img_per_s,
                r.ms_per_step,
                p.main_forward,
                p.main_backward,
                p.sub_forward,
                p.sub_backward,
                p.optimizer
            );
            if let (Some(g), Some(gs)) = (r.step_gflop, r.run.achieved_gflop_per_s) {
                println!("{g:.2} GFLOP per step, {gs:.1} GFLOP/s");
            }
            if let Some(m) = r.run.peak_rss_mib {
                println!("peak RSS {m:.0} MiB");
            }
            emit(&r, &a.json)
        }
        BenchCommand::Forward(a) => {
            let (cfg, b, dtype, device) = setup(&a)?;
            let r = bench_forward(&cfg, b, dtype, &device)?;
            println!(
                "{} batch {} on {} ({} threads, {}): {:.1} img/s, {:.1} ms/batch{}",
                r.run.model,
                r.run.batch_size,
                r.run.device,
                r.run.threads,
                r.run.dtype,
                r.run.img_per_s,
                r.ms_per_batch,
                r.run
                    .achieved_gflop_per_s
                    .map(|g| format!(", {g:.1} GFLOP/s"))
                    .unwrap_or_default()
            );
            emit(&r, &a.json)
        }
    }
}
