//! One training step as a small trait the loop drives. [`MaskSubStep`] is the MaskSub step:
//! both passes, gradient all-reduce, clipping of the summed gradient, ONE optimizer step.

use anyhow::Result;
use candle_core::{Tensor, Var};
use masksub_core::rng::{purpose, seeded};
use masksub_core::{
    loss::smoothed_one_hot, objective::check_finite, CosineSchedule, Optimizer, ParamGroup, Phase,
    StepLosses, SubModelForward, SubObjective,
};
use masksub_dist::{params, Collective};
use masksub_models::LoadedModel;
use rand::RngCore;
use std::time::Instant;

/// What one optimizer step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// Losses averaged over all ranks (the global batch's loss).
    pub losses: StepLosses,
    pub lr: f64,
    pub grad_norm: Option<f32>,
    /// Where the step's time went.
    pub times: StepTimes,
}

/// Seconds of one step by part (`masksub bench train` reports them).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepTimes {
    pub main_forward: f64,
    pub main_backward: f64,
    pub sub_forward: f64,
    pub sub_backward: f64,
    /// Collectives (gradient and loss all-reduce); 0 for one process.
    pub comm: f64,
    /// Clipping and the optimizer update.
    pub optimizer: f64,
}

impl StepTimes {
    pub fn total(&self) -> f64 {
        self.main_forward
            + self.main_backward
            + self.sub_forward
            + self.sub_backward
            + self.comm
            + self.optimizer
    }
}

/// A training step: consume one batch, update the parameters once.
pub trait TrainStep {
    fn step(&mut self, images: &Tensor, labels: &Tensor, step: u64) -> Result<StepOutcome>;
}

/// Split parameters into a decayed and a non-decayed group (1-D params and the model's
/// `no_weight_decay` names are not decayed), names sorted for a stable order.
pub fn param_groups(model: &LoadedModel, weight_decay: f64) -> Vec<ParamGroup> {
    let (mut decay, mut no_decay) = (Vec::new(), Vec::new());
    for (name, var) in model.named_parameters() {
        if model.decays(&name, var.rank()) {
            decay.push((name, var));
        } else {
            no_decay.push((name, var));
        }
    }
    vec![
        ParamGroup {
            name: "decay".into(),
            params: decay,
            weight_decay,
            lr_scale: 1.0,
        },
        ParamGroup {
            name: "no_decay".into(),
            params: no_decay,
            weight_decay: 0.0,
            lr_scale: 1.0,
        },
    ]
}

/// [`param_groups`] with BEiT-style layer-wise lr decay: one decay / no-decay pair per layer
/// id, `lr_scale = layer_decay^(L - layer_id)` with L = `num_layers()` (ViT: depth + 1, so the
/// embeddings get decay^(depth+1), block i decay^(depth-i), the head 1), as timm's
/// `param_groups_layer_decay`. `None` = the two plain groups.
pub fn param_groups_layer_decay(
    model: &LoadedModel,
    weight_decay: f64,
    layer_decay: Option<f64>,
) -> Vec<ParamGroup> {
    let Some(decay) = layer_decay else {
        return param_groups(model, weight_decay);
    };
    let top = model.net.num_layers();
    let mut groups: std::collections::BTreeMap<(usize, bool), Vec<(String, Var)>> =
        Default::default();
    for (name, var) in model.named_parameters() {
        let id = model.net.layer_id(&name).min(top);
        let decays = model.decays(&name, var.rank());
        groups.entry((id, decays)).or_default().push((name, var));
    }
    groups
        .into_iter()
        .map(|((id, decays), params)| ParamGroup {
            name: format!("layer_{id}_{}", if decays { "decay" } else { "no_decay" }),
            params,
            weight_decay: if decays { weight_decay } else { 0.0 },
            lr_scale: decay.powi((top - id) as i32),
        })
        .collect()
}

pub struct MaskSubStep<'a> {
    pub model: &'a LoadedModel,
    pub objective: SubObjective,
    pub optimizer: Box<dyn Optimizer>,
    pub schedule: CosineSchedule,
    pub collective: &'a dyn Collective,
    pub clip_grad: Option<f64>,
    pub smoothing: f64,
    pub seed: u64,
    /// Synchronize the device at each phase boundary so [`StepTimes`] is exact on an
    /// asynchronous device (CUDA); costs a little, so only benchmarks set it.
    pub sync_phases: bool,
    vars: Vec<Var>,
}

/// Settings of the step that are not the objective, optimizer or schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSettings {
    /// Clip the summed (main + sub) gradient to this global norm.
    pub clip_grad: Option<f64>,
    /// Label smoothing folded into the soft targets.
    pub smoothing: f64,
    /// Run seed: masks and drop-path of step s on rank r derive from (seed, s, r).
    pub seed: u64,
}

impl<'a> MaskSubStep<'a> {
    pub fn new(
        model: &'a LoadedModel,
        objective: SubObjective,
        optimizer: Box<dyn Optimizer>,
        schedule: CosineSchedule,
        collective: &'a dyn Collective,
        settings: StepSettings,
    ) -> Self {
        let vars = model
            .named_parameters()
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let StepSettings {
            clip_grad,
            smoothing,
            seed,
        } = settings;
        Self {
            model,
            objective,
            optimizer,
            schedule,
            collective,
            clip_grad,
            smoothing,
            seed,
            sync_phases: false,
            vars,
        }
    }
}

impl TrainStep for MaskSubStep<'_> {
    fn step(&mut self, images: &Tensor, labels: &Tensor, step: u64) -> Result<StepOutcome> {
        let targets = smoothed_one_hot(labels, self.model.net.num_classes(), self.smoothing)?
            .to_dtype(images.dtype())?;
        self.step_with_targets(images, &targets, step)
    }
}

impl MaskSubStep<'_> {
    /// The step with given (B, K) soft targets, e.g. from Mixup/CutMix (smoothing already in).
    pub fn step_with_targets(
        &mut self,
        images: &Tensor,
        targets: &Tensor,
        step: u64,
    ) -> Result<StepOutcome> {
        let lr = self.schedule.lr(step);
        self.optimizer.set_lr(lr);
        let targets = targets.to_dtype(images.dtype())?;
        let (rank, world) = (self.collective.rank(), self.collective.world_size());
        // Drop-path is drawn per rank from (seed, step, rank).
        self.model
            .net
            .reseed(seeded(&[purpose::DROP_PATH, self.seed, step, rank as u64]).next_u64());
        // Masks are drawn per sample from its place in the global batch: local sample i of rank
        // r is global sample i*W + r (the loader interleaves ranks like DistributedSampler), so
        // N ranks draw exactly the masks one process with the same global batch would.
        let plan = self.objective.plan_per_sample(
            images.dim(0)?,
            self.model.token_grid(),
            self.model.mask_kind(),
            |i| seeded(&[purpose::MASK, self.seed, step, (i * world + rank) as u64]),
        )?;
        let mut times = StepTimes::default();
        let mut t = Instant::now();
        let (device, sync) = (images.device().clone(), self.sync_phases);
        let (mut losses, mut grads) = self.objective.step_observed(
            self.model,
            images,
            &targets,
            plan.as_ref(),
            &mut |phase| {
                if sync {
                    device.synchronize()?;
                }
                let slot = match phase {
                    Phase::MainForward => &mut times.main_forward,
                    Phase::MainBackward => &mut times.main_backward,
                    Phase::SubForward => &mut times.sub_forward,
                    Phase::SubBackward => &mut times.sub_backward,
                };
                *slot = t.elapsed().as_secs_f64();
                t = Instant::now();
                Ok(())
            },
        )?;
        let t_comm = Instant::now();
        if world > 1 {
            // One tiny reduction so every rank logs, and stops on, the global batch's loss.
            let sums = params::all_reduce_sum_f64(
                self.collective,
                &[
                    losses.loss as f64,
                    losses.sub_loss.unwrap_or(0.0) as f64,
                    losses.total as f64,
                ],
            )?;
            let w = world as f64;
            losses.loss = (sums[0] / w) as f32;
            losses.sub_loss = losses.sub_loss.map(|_| (sums[1] / w) as f32);
            losses.total = (sums[2] / w) as f32;
        }
        check_finite(&losses, step)?;
        params::all_reduce_mean_grads(
            self.collective,
            &mut grads,
            &self.vars,
            params::DEFAULT_BUCKET_ELEMS,
        )?;
        times.comm = t_comm.elapsed().as_secs_f64();
        let t_opt = Instant::now();
        let grad_norm = match self.clip_grad {
            Some(max) => Some(masksub_core::clip::clip_grad_norm(
                &mut grads, &self.vars, max,
            )?),
            None => None,
        };
        if let Some(n) = grad_norm {
            if !n.is_finite() {
                return Err(masksub_core::CoreError::NonFinite {
                    what: "grad_norm",
                    value: n,
                    step,
                }
                .into());
            }
        }
        self.optimizer.step(&grads)?;
        if self.sync_phases {
            images.device().synchronize()?;
        }
        times.optimizer = t_opt.elapsed().as_secs_f64();
        Ok(StepOutcome {
            losses,
            lr,
            grad_norm,
            times,
        })
    }
}
