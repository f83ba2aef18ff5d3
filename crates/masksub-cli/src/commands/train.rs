//! `masksub train`: flags override the defaults of [`TrainConfig`] (or of `--config FILE`).

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use masksub_cli::device::{parse_device_for_rank, set_threads};
use masksub_cli::trainer::{train, RunOptions};
use masksub_cli::TrainConfig;
use masksub_core::{OptimizerKind, SubModel};
use masksub_dist::{Collective, Launch};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SubKind {
    /// Plain training (the baseline).
    None,
    /// MaskSub: a sub pass on the masked batch.
    Masking,
    /// DropSub: a sub pass with dropout at the sub ratio.
    Dropout,
    /// PathSub: a sub pass with drop-path at the sub ratio.
    Droppath,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptKind {
    /// AdamW (decoupled weight decay).
    Adamw,
    /// LAMB (layer-wise trust ratio, global clip at 1.0), as DeiT-III and RSB use.
    Lamb,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Start from this config file (a run's config.json, or a TOML recipe) instead of the defaults.
    #[arg(long, conflicts_with = "recipe")]
    config: Option<PathBuf>,
    /// Start from a shipped recipe (`masksub recipes` lists them); flags override its fields.
    #[arg(long)]
    recipe: Option<String>,
    /// IDX folder, WebDataset shards (folder, `train-{0000..0099}.tar`, `hf://datasets/o/n`) or
    /// an ImageFolder [default: the embedded Fashion-MNIST]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Classes of streamed data if `_info.json`/labels do not tell
    #[arg(long)]
    num_classes: Option<usize>,
    /// A corrupt sample stops the run with an error naming shard and key (default: skip, count)
    #[arg(long)]
    strict_data: bool,
    /// Decode/augment worker threads per rank (streamed data)
    #[arg(long)]
    workers: Option<usize>,
    /// RandAugment policy, timm's `--aa` (e.g. rand-m9-mstd0.5-inc1)
    #[arg(long)]
    aa: Option<String>,
    /// DeiT-III 3-Augment (grayscale / solarize / blur, then color jitter)
    #[arg(long)]
    three_augment: bool,
    /// Color jitter strength
    #[arg(long)]
    color_jitter: Option<f64>,
    /// RandomErasing probability
    #[arg(long)]
    reprob: Option<f64>,
    /// Mixup alpha (enables Mixup/CutMix; timm semantics)
    #[arg(long)]
    mixup: Option<f64>,
    /// CutMix alpha
    #[arg(long)]
    cutmix: Option<f64>,
    /// Repeated augmentation copies per sample (timm's --aug-repeats)
    #[arg(long)]
    aug_repeats: Option<usize>,
    /// Evaluation center-crop fraction
    #[arg(long)]
    crop_pct: Option<f64>,
    /// Model name (see `masksub models`) [default: vit_fmnist_small]
    #[arg(long)]
    model: Option<String>,
    /// Sub-model [default: masking]
    #[arg(long, value_enum)]
    sub: Option<SubKind>,
    /// The sub pass's rate: share of the input masked, or the dropout / drop-path rate
    /// [default: 0.5]
    #[arg(long, visible_alias = "sub-ratio")]
    mask_ratio: Option<f64>,
    #[arg(long)]
    epochs: Option<usize>,
    /// Global batch size
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate
    #[arg(long)]
    lr: Option<f64>,
    /// Optimizer [default: adamw]
    #[arg(long, value_enum)]
    opt: Option<OptKind>,
    #[arg(long)]
    weight_decay: Option<f64>,
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// Start from the model tag's pretrained weights (Hugging Face Hub, cache first)
    #[arg(long)]
    pretrained: bool,
    /// Start from this checkpoint file (safetensors, .pth/.bin; timm/MAE/CLIP/DeiT-III/torchvision keys)
    #[arg(long)]
    checkpoint_path: Option<PathBuf>,
    /// Layer-wise lr decay, e.g. 0.65 for MAE fine-tuning
    #[arg(long)]
    layer_decay: Option<f64>,
    /// Label smoothing
    #[arg(long)]
    smoothing: Option<f64>,
    /// Clip the summed gradient to this global norm
    #[arg(long)]
    clip_grad: Option<f64>,
    /// Drop-path (stochastic depth) rate
    #[arg(long)]
    drop_path: Option<f64>,
    /// Train on the first N images only
    #[arg(long)]
    train_subset: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Run folder [default: runs/<timestamp>]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint (uses its config.json)
    #[arg(long, conflicts_with_all = ["config", "recipe", "out"])]
    resume: Option<PathBuf>,
    /// End this invocation after N more epochs (a time-boxed job); `--resume` continues it
    #[arg(long)]
    stop_after_epochs: Option<usize>,
    /// cpu, cuda[:N] or metal[:N]
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bar or log lines (epoch summaries still print)
    #[arg(long)]
    quiet: bool,
}

impl TrainArgs {
    /// Whether any flag that changes the run's recipe was given.
    fn overrides_recipe(&self) -> bool {
        self.data.is_some()
            || self.num_classes.is_some()
            || self.strict_data
            || self.aa.is_some()
            || self.three_augment
            || self.color_jitter.is_some()
            || self.reprob.is_some()
            || self.mixup.is_some()
            || self.cutmix.is_some()
            || self.aug_repeats.is_some()
            || self.crop_pct.is_some()
            || self.model.is_some()
            || self.sub.is_some()
            || self.mask_ratio.is_some()
            || self.batch_size.is_some()
            || self.lr.is_some()
            || self.weight_decay.is_some()
            || self.opt.is_some()
            || self.warmup_epochs.is_some()
            || self.smoothing.is_some()
            || self.pretrained
            || self.checkpoint_path.is_some()
            || self.layer_decay.is_some()
            || self.clip_grad.is_some()
            || self.drop_path.is_some()
            || self.train_subset.is_some()
            || self.seed.is_some()
    }

    fn apply(&self, mut cfg: TrainConfig) -> Result<TrainConfig> {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { cfg.$f = v.clone(); } )* };
        }
        set!(
            data,
            model,
            epochs,
            batch_size,
            lr,
            weight_decay,
            warmup_epochs,
            smoothing,
            seed
        );
        if let Some(o) = self.opt {
            cfg.opt = match o {
                OptKind::Adamw => OptimizerKind::Adamw,
                OptKind::Lamb => OptimizerKind::Lamb,
            };
        }
        if self.clip_grad.is_some() {
            cfg.clip_grad = self.clip_grad;
        }
        if self.pretrained {
            cfg.pretrained = true;
        }
        if self.checkpoint_path.is_some() {
            cfg.checkpoint_path = self.checkpoint_path.clone();
        }
        if self.layer_decay.is_some() {
            cfg.layer_decay = self.layer_decay;
        }
        if self.num_classes.is_some() {
            cfg.num_classes = self.num_classes;
        }
        cfg.strict_data |= self.strict_data;
        if let Some(w) = self.workers {
            cfg.workers = w;
        }
        if let Some(r) = self.aug_repeats {
            cfg.repeats = r;
        }
        let aug = &mut cfg.image_aug;
        if self.aa.is_some() {
            aug.auto_augment = self.aa.clone();
        }
        if self.three_augment {
            aug.three_augment = true;
            aug.color_jitter = self.color_jitter.unwrap_or(0.3);
        }
        if let Some(c) = self.color_jitter {
            aug.color_jitter = c;
        }
        if let Some(p) = self.reprob {
            aug.reprob = p;
        }
        if let Some(p) = self.crop_pct {
            aug.crop_pct = p;
        }
        if self.mixup.is_some() || self.cutmix.is_some() {
            cfg.mixup = Some(masksub_data::MixupConfig {
                mixup_alpha: self.mixup.unwrap_or(0.0),
                cutmix_alpha: self.cutmix.unwrap_or(0.0),
                label_smoothing: cfg.smoothing,
                ..masksub_data::MixupConfig::default()
            });
        }
        if self.drop_path.is_some() {
            cfg.drop_path = self.drop_path;
        }
        if self.train_subset.is_some() {
            cfg.train_subset = self.train_subset;
        }
        let ratio = self.mask_ratio.or(cfg.sub.ratio());
        cfg.sub = match (self.sub, ratio) {
            (Some(SubKind::None), Some(_)) if self.mask_ratio.is_some() => {
                bail!("--mask-ratio needs a sub-model (--sub masking|dropout|droppath)")
            }
            (Some(SubKind::None), _) => SubModel::None,
            (Some(kind), r) => {
                let ratio = r.unwrap_or(masksub_core::objective::DEFAULT_MASK_RATIO);
                match kind {
                    SubKind::Masking => SubModel::Masking { ratio },
                    SubKind::Dropout => SubModel::Dropout { ratio },
                    SubKind::Droppath => SubModel::DropPath { ratio },
                    SubKind::None => SubModel::None,
                }
            }
            (None, Some(r)) if self.mask_ratio.is_some() => match cfg.sub {
                SubModel::None | SubModel::Masking { .. } => SubModel::Masking { ratio: r },
                SubModel::Dropout { .. } => SubModel::Dropout { ratio: r },
                SubModel::DropPath { .. } => SubModel::DropPath { ratio: r },
            },
            (None, _) => cfg.sub,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    set_threads(args.threads)?;
    let launch = Launch::detect()?;
    let device = parse_device_for_rank(&args.device, launch.local_rank)?;
    let collective = masksub_dist::from_env(&device)?;
    let rank = collective.rank();
    let world = collective.world_size();
    match run_on(args, device, collective) {
        Ok(()) => Ok(()),
        Err(e) if world > 1 => {
            // A rank that stops must take the job down, or its peers wait in the next
            // collective until the watchdog fires: exiting without MPI_Finalize makes mpirun
            // end every rank.
            eprintln!(
                "error (rank {rank} of {world}): {}",
                masksub_cli::error_text::error_text(&e)
            );
            std::process::exit(1)
        }
        Err(e) => Err(e),
    }
}

fn run_on(
    args: TrainArgs,
    device: candle_core::Device,
    collective: Box<dyn Collective>,
) -> Result<()> {
    let main = collective.is_main();
    let (cfg, out, resume) = match &args.resume {
        Some(dir) => {
            if args.overrides_recipe() {
                bail!("--resume continues {} with its saved config.json; only --epochs, --stop-after-epochs, --device, --threads and --quiet may be given with it", dir.display());
            }
            let mut cfg = TrainConfig::load(&dir.join("config.json"))?;
            if let Some(e) = args.epochs {
                cfg.epochs = e;
                cfg.validate()?;
            }
            (cfg, dir.clone(), true)
        }
        None => {
            let base = match (&args.config, &args.recipe) {
                (Some(p), _) => masksub_cli::recipe::from_file(p)?,
                (None, Some(name)) => masksub_cli::recipe::by_name(name)?,
                (None, None) => TrainConfig::default(),
            };
            let out = args.out.clone().unwrap_or_else(|| {
                PathBuf::from("runs").join(chrono::Local::now().format("%Y%m%d-%H%M%S").to_string())
            });
            (args.apply(base)?, out, false)
        }
    };
    if resume && args.epochs.is_some() && main {
        // The longer schedule must be the one the config records.
        cfg.save(&out.join("config.json"))?;
    }
    let opts = RunOptions {
        resume,
        progress: !args.quiet,
        collective,
        max_epochs_this_run: args.stop_after_epochs,
        ..RunOptions::new(out, device)
    };
    let summary = train(&cfg, opts)?;
    if !main {
        return Ok(());
    }
    println!(
        "done: {} epochs, test top-1 {:.2}% (best {:.2}%), top-5 {:.2}%, {:.0} train img/s, {:.0}s; run folder {}",
        summary.epochs,
        summary.test_top1,
        summary.best_top1,
        summary.test_top5,
        summary.train_img_per_s,
        summary.wall_seconds,
        summary.out.display()
    );
    Ok(())
}
