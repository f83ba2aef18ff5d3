//! `masksub eval --checkpoint FILE`: top-1 / top-5 / loss of a checkpoint on a test split.

use anyhow::{Context, Result};
use candle_core::DType;
use clap::Args;
use masksub_cli::checkpoint::{self, TrainerState};
use masksub_cli::config::default_data_dir;
use masksub_cli::device::{parse_device, set_threads};
use masksub_cli::eval::evaluate;
use masksub_data::{InMemoryDataset, Split};
use masksub_models::registry;
use masksub_models::weights::{self, LoadOptions};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A model checkpoint (e.g. runs/<run>/last.safetensors)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Folder with the IDX test files [default: the embedded Fashion-MNIST]
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

pub fn run(args: EvalArgs) -> Result<()> {
    set_threads(args.threads)?;
    let device = parse_device(&args.device)?;
    if !args.checkpoint.is_file() {
        anyhow::bail!("{}: no such checkpoint file", args.checkpoint.display());
    }
    let data = args.data.clone().unwrap_or_else(default_data_dir);
    let ds = InMemoryDataset::from_idx_dir(&data, Split::Test)?;
    let state_path = args.checkpoint.with_file_name(checkpoint::STATE_FILE);
    let spec = match (&args.model, state_path.exists()) {
        (Some(name), _) => registry::lookup(name)?.with_data(ds.num_classes, ds.channels),
        (None, true) => {
            let text = std::fs::read_to_string(&state_path)
                .with_context(|| format!("{}: cannot read", state_path.display()))?;
            serde_json::from_str::<TrainerState>(&text)
                .with_context(|| format!("{}: invalid trainer state", state_path.display()))?
                .spec
        }
        (None, false) => anyhow::bail!(
            "{}: no {} beside it; pass --model NAME",
            args.checkpoint.display(),
            checkpoint::STATE_FILE
        ),
    };
    let model = spec.build(0, DType::F32, &device)?;
    let tensors = weights::read_safetensors(&args.checkpoint)?;
    model.load_state_dict(
        &tensors,
        &args.checkpoint.display().to_string(),
        &LoadOptions::default(),
    )?;
    let r = evaluate(&model, &ds, args.batch_size, &device)?;
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
