//! The training loop: data, model, MaskSub step, evaluation every epoch, metrics, progress and
//! atomic checkpoints; `resume` continues a run folder where its last checkpoint stopped.

use crate::checkpoint::{self, TrainerState};
use crate::config::DistBn;
use crate::data_source::TrainData;
use crate::eval::EvalResult;
use crate::metrics::{EpochRow, MetricsWriter, StepRow};
use crate::progress::Progress;
use crate::step::{param_groups_layer_decay, MaskSubStep, StepSettings, TrainStep};
use crate::TrainConfig;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use masksub_core::{
    AdamW, AdamWConfig, CosineSchedule, Lamb, LambConfig, Optimizer, OptimizerKind, SubObjective,
};
use masksub_dist::{params, Collective};
use masksub_models::registry;
use masksub_models::weights::LoadOptions;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Where and how to run (not part of the reproducible config).
pub struct RunOptions {
    pub out: PathBuf,
    pub device: Device,
    /// Continue the run in `out` from its checkpoint.
    pub resume: bool,
    /// Show a progress bar / log lines.
    pub progress: bool,
    pub collective: Box<dyn Collective>,
    /// Stop after this many epochs in this invocation (a time-boxed job; `resume` continues).
    pub max_epochs_this_run: Option<usize>,
}

impl RunOptions {
    /// Single process with progress output, the usual CLI case.
    pub fn new(out: PathBuf, device: Device) -> Self {
        Self {
            out,
            device,
            resume: false,
            progress: true,
            collective: Box::new(masksub_dist::SingleProcess),
            max_epochs_this_run: None,
        }
    }
}

/// What a finished run reports (also written to `<out>/summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub out: PathBuf,
    pub model: String,
    pub sub: masksub_core::SubModel,
    pub epochs: usize,
    pub steps: u64,
    pub test_top1: f64,
    pub test_top5: f64,
    pub test_loss: f64,
    pub best_top1: f64,
    pub final_train_loss: f64,
    /// Mean training throughput over the epochs run in this invocation (evaluation excluded).
    pub train_img_per_s: f64,
    /// Seconds of training (steps, evaluation excluded) in this invocation.
    pub train_seconds: f64,
    /// Seconds of training time spent in collectives (0 for one process).
    pub train_comm_seconds: f64,
    pub wall_seconds: f64,
}

/// Train per `cfg` into `opts.out`. A fresh run refuses a folder that already holds a checkpoint
/// (it never overwrites a user's run); `resume` requires one.
pub fn train(cfg: &TrainConfig, opts: RunOptions) -> Result<TrainSummary> {
    let wall = Instant::now();
    cfg.validate()?;
    let out = &opts.out;
    let has_ckpt = out.join(checkpoint::STATE_FILE).exists();
    if opts.resume && !has_ckpt {
        bail!(
            "--resume {}: no checkpoint ({}) in that folder",
            out.display(),
            checkpoint::STATE_FILE
        );
    }
    if !opts.resume && has_ckpt {
        bail!(
            "{} already holds a run; pass `--resume {}` to continue it or choose another --out",
            out.display(),
            out.display()
        );
    }
    let main = opts.collective.is_main();
    let world = opts.collective.world_size();
    if !cfg.batch_size.is_multiple_of(world) {
        bail!(
            "invalid config: `batch_size` {} is not divisible by the world size {world}",
            cfg.batch_size
        );
    }
    let data = TrainData::open(cfg)?;
    let (num_classes, channels) = data.classes_and_channels(cfg)?;
    let spec = registry::lookup(&cfg.model)?
        .with_kwargs(&cfg.model_kwargs)?
        .with_data(num_classes, channels);
    let spec = match cfg.drop_path {
        Some(d) => spec.with_drop_path(d),
        None => spec,
    };
    let (c, h, w) = spec.input_shape();
    if let Some((dc, dh, dw)) = data.fixed_shape() {
        if (c, h, w) != (dc, dh, dw) {
            bail!(
                "model `{}` takes {c}x{h}x{w} images but {} holds {dc}x{dh}x{dw}",
                cfg.model,
                cfg.data.display(),
            );
        }
    } else if h != w {
        bail!(
            "model `{}` takes {h}x{w} images; streamed data is cropped square",
            cfg.model
        );
    }
    let model = spec.build(cfg.seed, DType::F32, &opts.device)?;
    // Rank 0 loads the starting weights; the broadcast below hands them to every rank.
    if main && !opts.resume {
        if let Some(r) = crate::init_weights::load_initial_weights(cfg, &model)? {
            for note in &r.notes {
                eprintln!("weights: {note}");
            }
        }
    }
    // The folder is created only once the config, the data and the model are known to be good,
    // so a mistyped flag leaves nothing behind.
    if main {
        std::fs::create_dir_all(out)
            .with_context(|| format!("{}: cannot create run folder", out.display()))?;
        if !opts.resume {
            cfg.save(&out.join("config.json"))?;
        }
    }

    let rank = opts.collective.rank();
    let loader = data.train_loader(cfg, h, num_classes, rank, world, &opts.device)?;
    let steps_per_epoch = loader.batches_per_epoch() as u64;
    if steps_per_epoch == 0 {
        bail!(
            "invalid config: `batch_size` {} exceeds the {} training images",
            cfg.batch_size,
            data.lens().0
        );
    }
    let total_steps = steps_per_epoch * cfg.epochs as u64;
    let warmup_steps = (cfg.warmup_epochs * steps_per_epoch as f64).round() as u64;
    let schedule =
        CosineSchedule::new(cfg.lr, cfg.min_lr, cfg.warmup_lr, warmup_steps, total_steps)?;
    let mut optimizer = build_optimizer(
        cfg,
        param_groups_layer_decay(&model, cfg.weight_decay, cfg.layer_decay),
    )?;

    let mut state = TrainerState {
        epochs_done: 0,
        step: 0,
        best_top1: 0.0,
        spec: spec.clone(),
    };
    if opts.resume {
        let ck = checkpoint::load(out)?;
        if ck.state.spec != spec {
            bail!(
                "{}: checkpoint was made for a different model than config.json describes",
                out.join(checkpoint::STATE_FILE).display()
            );
        }
        model.load_state_dict(
            &ck.weights,
            &out.join(checkpoint::WEIGHTS_FILE).display().to_string(),
            &LoadOptions::default(),
        )?;
        optimizer
            .load_state(&ck.optim, ck.state.step)
            .with_context(|| format!("{}", out.join(checkpoint::OPTIM_FILE).display()))?;
        state = ck.state;
        if state.epochs_done >= cfg.epochs {
            bail!(
                "{}: the run already finished its {} epochs",
                out.display(),
                cfg.epochs
            );
        }
    }
    let vars: Vec<_> = model
        .named_parameters()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    // Every rank starts from rank 0's parameters and buffers (fresh or resumed).
    let coll = opts.collective.as_ref();
    params::broadcast_vars(coll, &vars, params::DEFAULT_BUCKET_ELEMS)?;
    let buffers: Vec<_> = model.buffer_vars();
    params::broadcast_vars(coll, &buffers, params::DEFAULT_BUCKET_ELEMS)?;

    let objective = SubObjective::new(cfg.sub, cfg.loss)?;
    let mut stepper = MaskSubStep::new(
        &model,
        objective,
        optimizer,
        schedule,
        opts.collective.as_ref(),
        StepSettings {
            clip_grad: cfg.clip_grad,
            smoothing: cfg.smoothing,
            seed: cfg.seed,
        },
    );
    let mut metrics = if main {
        Some(MetricsWriter::open(out)?)
    } else {
        None
    };
    let progress = Progress::new(
        total_steps,
        state.step,
        cfg.log_every as u64,
        opts.progress && main,
    );
    if main {
        let n_params: usize = vars.iter().map(|v| v.elem_count()).sum();
        progress.println(&format!(
            "masksub: {} ({:.2}M params), sub={}{}, {} train / {} test images, {} epochs x {} steps, out {}",
            cfg.model,
            n_params as f64 / 1e6,
            cfg.sub.kind(),
            cfg.sub.ratio().map(|r| format!(" r={r}")).unwrap_or_default(),
            data.lens().0,
            data.lens().1,
            cfg.epochs,
            steps_per_epoch,
            out.display()
        ));
    }

    let mut last_eval: Option<EvalResult> = None;
    let mut last_train_loss = f64::NAN;
    let (mut imgs_total, mut train_secs_total, mut comm_total) = (0usize, 0f64, 0f64);
    let last_epoch = match opts.max_epochs_this_run {
        Some(n) => (state.epochs_done + n).min(cfg.epochs),
        None => cfg.epochs,
    };
    for epoch in state.epochs_done..last_epoch {
        let t0 = Instant::now();
        let (mut loss_sum, mut sub_sum, mut n_steps, mut imgs) = (0f64, 0f64, 0u64, 0usize);
        let mut window = (Instant::now(), 0usize);
        let mut batches = loader.epoch(epoch);
        for batch in batches.by_ref() {
            let batch = batch?;
            let b = batch.labels.dim(0)?;
            let o = match &batch.targets {
                Some(t) => stepper.step_with_targets(&batch.images, t, state.step)?,
                None => stepper.step(&batch.images, &batch.labels, state.step)?,
            };
            comm_total += o.times.comm;
            state.step += 1;
            n_steps += 1;
            imgs += b;
            window.1 += b;
            loss_sum += o.losses.loss as f64;
            sub_sum += o.losses.sub_loss.unwrap_or(0.0) as f64;
            let ips = window.1 as f64 * world as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
            progress.update(
                state.step,
                epoch + 1,
                o.losses.loss,
                o.losses.sub_loss,
                o.lr,
                ips,
            );
            if state.step.is_multiple_of(cfg.log_every as u64) {
                if let Some(m) = metrics.as_mut() {
                    m.step(&StepRow {
                        step: state.step,
                        epoch: epoch + 1,
                        loss: o.losses.loss,
                        sub_loss: o.losses.sub_loss,
                        lr: o.lr,
                        grad_norm: o.grad_norm,
                        img_per_s: ips,
                    })?;
                }
                window = (Instant::now(), 0);
            }
        }
        let (skipped, bad) = batches.skipped();
        drop(batches);
        if skipped > 0 && main {
            progress.println(&format!(
                "epoch {}: skipped {skipped} bad samples, e.g. {}",
                epoch + 1,
                bad.join("; ")
            ));
        }
        let train_secs = t0.elapsed().as_secs_f64();
        imgs_total += imgs * world;
        train_secs_total += train_secs;
        // Per-rank BatchNorm statistics become one set before evaluation and the checkpoint.
        match cfg.dist_bn {
            DistBn::Reduce => {
                params::all_reduce_mean_vars(coll, &buffers, params::DEFAULT_BUCKET_ELEMS)?
            }
            DistBn::Broadcast => {
                params::broadcast_vars(coll, &buffers, params::DEFAULT_BUCKET_ELEMS)?
            }
        }
        let ev = data.evaluate(cfg, &model, h, num_classes, &opts.device, coll)?;
        last_train_loss = loss_sum / n_steps.max(1) as f64;
        state.epochs_done = epoch + 1;
        state.best_top1 = state.best_top1.max(ev.top1);
        let row = EpochRow {
            epoch: epoch + 1,
            step: state.step,
            train_loss: last_train_loss,
            train_sub_loss: cfg.sub_is_on().then_some(sub_sum / n_steps.max(1) as f64),
            test_loss: ev.loss,
            test_top1: ev.top1,
            test_top5: ev.top5,
            lr: stepper.optimizer.lr(),
            train_img_per_s: (imgs * world) as f64 / train_secs.max(1e-9),
            epoch_seconds: t0.elapsed().as_secs_f64(),
            skipped_samples: skipped,
        };
        if let Some(m) = metrics.as_mut() {
            m.epoch(&row)?;
            let w = model.state_dict()?.into_iter().collect();
            checkpoint::save(out, &w, &stepper.optimizer.state_tensors(), &state)?;
        }
        if main {
            progress.println(&format!(
                "epoch {}/{}: train loss {:.4}{} | test top-1 {:.2}% top-5 {:.2}% loss {:.4} | {:.0} img/s, {:.0}s",
                epoch + 1,
                cfg.epochs,
                row.train_loss,
                row.train_sub_loss.map(|s| format!(" sub_loss {s:.4}")).unwrap_or_default(),
                ev.top1,
                ev.top5,
                ev.loss,
                row.train_img_per_s,
                row.epoch_seconds
            ));
        }
        last_eval = Some(ev);
    }
    progress.finish();
    let ev = last_eval.context("no epoch was run")?;
    let summary = TrainSummary {
        out: out.clone(),
        model: cfg.model.clone(),
        sub: cfg.sub,
        epochs: state.epochs_done,
        steps: state.step,
        test_top1: ev.top1,
        test_top5: ev.top5,
        test_loss: ev.loss,
        best_top1: state.best_top1,
        final_train_loss: last_train_loss,
        train_img_per_s: imgs_total as f64 / train_secs_total.max(1e-9),
        train_seconds: train_secs_total,
        train_comm_seconds: comm_total,
        wall_seconds: wall.elapsed().as_secs_f64(),
    };
    if main {
        checkpoint::write_atomic(
            &out.join("summary.json"),
            serde_json::to_string_pretty(&summary)?.as_bytes(),
        )?;
    }
    Ok(summary)
}

/// The optimizer the config names, over `groups`.
pub(crate) fn build_optimizer(
    cfg: &TrainConfig,
    groups: Vec<masksub_core::ParamGroup>,
) -> Result<Box<dyn Optimizer>> {
    Ok(match cfg.opt {
        OptimizerKind::Adamw => Box::new(AdamW::new(
            groups,
            AdamWConfig {
                lr: cfg.lr,
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: cfg.eps.unwrap_or(AdamWConfig::default().eps),
                weight_decay: cfg.weight_decay,
            },
        )?),
        OptimizerKind::Lamb => Box::new(Lamb::new(
            groups,
            LambConfig {
                lr: cfg.lr,
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: cfg.eps.unwrap_or(LambConfig::default().eps),
                weight_decay: cfg.weight_decay,
                ..LambConfig::default()
            },
        )?),
    })
}
