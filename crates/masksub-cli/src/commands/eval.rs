//! `masksub eval --checkpoint FILE`: top-1 / top-5 / loss of a checkpoint on a test split.
//!
//! The run's `config.json` beside the checkpoint supplies its data, validation split and
//! evaluation transform; `--data` points it elsewhere (IDX, shards, `hf://` or an ImageFolder).

use anyhow::{Context, Result};
use candle_core::DType;
use clap::Args;
use masksub_cli::checkpoint::{self, TrainerState};
use masksub_cli::data_source::{detect_existing, open_stream_split, stream_config, DataSource};
use masksub_cli::device::{parse_device, set_threads};
use masksub_cli::eval::{evaluate, evaluate_stream, EvalResult};
use masksub_cli::TrainConfig;
use masksub_data::{InMemoryDataset, Split, StreamLoader};
use masksub_dist::SingleProcess;
use masksub_models::registry::{self, ModelSpec};
use masksub_models::weights::{self, LoadOptions};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A model checkpoint (e.g. runs/<run>/last.safetensors)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Test data: IDX folder, shards, hf:// repo or ImageFolder [default: the run's
    /// `--data` from config.json beside the checkpoint, else the embedded Fashion-MNIST]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Model name, when the checkpoint has no last.state.json beside it
    #[arg(long)]
    model: Option<String>,
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    threads: Option<usize>,
}

/// The test split: IDX in memory, or streamed shards / ImageFolder.
enum TestData {
    InMemory(InMemoryDataset),
    Stream(masksub_data::StreamDataset),
}

impl TestData {
    /// (classes, channels) for a model named by `--model`.
    fn classes_and_channels(&self, cfg: &TrainConfig) -> Result<(usize, usize)> {
        match self {
            TestData::InMemory(ds) => Ok((ds.num_classes, ds.channels)),
            TestData::Stream(ds) => {
                let n = cfg
                    .num_classes
                    .or(ds.num_classes)
                    .with_context(|| format!("{}: the number of classes is unknown", ds.name))?;
                Ok((n, 3))
            }
        }
    }
}

pub fn run(args: EvalArgs) -> Result<()> {
    set_threads(args.threads)?;
    let device = parse_device(&args.device)?;
    if !args.checkpoint.is_file() {
        anyhow::bail!("{}: no such checkpoint file", args.checkpoint.display());
    }
    let run_cfg = args.checkpoint.with_file_name("config.json");
    let mut cfg = if run_cfg.is_file() {
        TrainConfig::load(&run_cfg)?
    } else {
        TrainConfig::default()
    };
    if let Some(d) = &args.data {
        cfg.data = d.clone();
    }
    cfg.eval_batch_size = args.batch_size;
    let test = match detect_existing(&cfg.data)? {
        DataSource::Idx => {
            TestData::InMemory(InMemoryDataset::from_idx_dir(&cfg.data, Split::Test)?)
        }
        kind => TestData::Stream(open_stream_split(&cfg.data, kind, &cfg.val_split)?),
    };
    let spec = model_spec(&args, &cfg, &test)?;
    let model = spec.build(0, DType::F32, &device)?;
    let tensors = weights::read_safetensors(&args.checkpoint)?;
    model.load_state_dict(
        &tensors,
        &args.checkpoint.display().to_string(),
        &LoadOptions::default(),
    )?;
    let r: EvalResult = match test {
        TestData::InMemory(ds) => evaluate(&model, &ds, args.batch_size, &device)?,
        TestData::Stream(ds) => {
            let (_, h, _) = spec.input_shape();
            let sc = stream_config(&cfg, h, spec.num_classes(), 0, 1, false);
            let loader = StreamLoader::new(Arc::new(ds), sc, device.clone())?;
            evaluate_stream(&model, &loader, &SingleProcess)?
        }
    };
    println!(
        "{}: {} on {} test images: top-1 {:.2}%  top-5 {:.2}%  loss {:.4}",
        args.checkpoint.display(),
        spec.name,
        r.count,
        r.top1,
        r.top5,
        r.loss
    );
    Ok(())
}

/// The architecture: `--model`, else the one recorded in last.state.json beside the checkpoint.
fn model_spec(args: &EvalArgs, cfg: &TrainConfig, test: &TestData) -> Result<ModelSpec> {
    let state_path = args.checkpoint.with_file_name(checkpoint::STATE_FILE);
    match (&args.model, state_path.exists()) {
        (Some(name), _) => {
            let (classes, channels) = test.classes_and_channels(cfg)?;
            Ok(registry::lookup(name)?.with_data(classes, channels))
        }
        (None, true) => {
            let text = std::fs::read_to_string(&state_path)
                .with_context(|| format!("{}: cannot read", state_path.display()))?;
            Ok(serde_json::from_str::<TrainerState>(&text)
                .with_context(|| format!("{}: invalid trainer state", state_path.display()))?
                .spec)
        }
        (None, false) => anyhow::bail!(
            "{}: no {} beside it; pass --model NAME",
            args.checkpoint.display(),
            checkpoint::STATE_FILE
        ),
    }
}
