//! The sub-model objective of MaskSub: one network, two passes on the same (mixed) batch.
//!
//! main: z = f(x), l(z, y); sub: z_s = f(M(x)), l(z_s, sg(s(z))); L = 0.5 main + 0.5 sub.
//! The two passes are back-propagated one after the other (the main graph is freed before the
//! sub pass runs, which halves peak memory) and their gradients are summed: the same gradient
//! as one backward of L. The caller then reduces, clips and takes ONE optimizer step.

use crate::mask::{default_strategy, MaskKind, MaskPlan, MaskStrategy, TokenGrid};
use crate::{CoreError, LossKind, Result};
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Which sub-model a run trains alongside the main model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SubModel {
    /// Plain training: the baseline.
    None,
    /// MaskSub: the sub pass sees the batch with `ratio` of it masked.
    Masking { ratio: f64 },
    /// DropSub: the sub pass runs with dropout at rate `ratio` (the main pass without).
    Dropout { ratio: f64 },
    /// PathSub: the sub pass runs with drop-path (stochastic depth) at rate `ratio`.
    DropPath { ratio: f64 },
}

impl SubModel {
    /// The CLI / config name of the kind: `none`, `masking`, `dropout` or `droppath`.
    pub fn kind(&self) -> &'static str {
        match self {
            SubModel::None => "none",
            SubModel::Masking { .. } => "masking",
            SubModel::Dropout { .. } => "dropout",
            SubModel::DropPath { .. } => "droppath",
        }
    }

    /// The sub pass's rate (mask ratio, dropout or drop-path rate); None for plain training.
    pub fn ratio(&self) -> Option<f64> {
        match *self {
            SubModel::None => None,
            SubModel::Masking { ratio }
            | SubModel::Dropout { ratio }
            | SubModel::DropPath { ratio } => Some(ratio),
        }
    }

    /// The regularizer a DropSub / PathSub sub pass runs with.
    pub fn regularizer(&self) -> Option<SubRegularizer> {
        match *self {
            SubModel::Dropout { ratio } => Some(SubRegularizer::Dropout(ratio)),
            SubModel::DropPath { ratio } => Some(SubRegularizer::DropPath(ratio)),
            _ => None,
        }
    }

    /// Check the rate; errors name `field`.
    pub fn validate(&self, field: &'static str) -> Result<()> {
        match self.ratio() {
            Some(r) if !(r > 0.0 && r < 1.0) => Err(CoreError::config(
                field,
                format!("{r} is not in (0, 1) for `--sub {}`", self.kind()),
            )),
            _ => Ok(()),
        }
    }
}

/// A sub pass that regularizes the network instead of masking its input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SubRegularizer {
    /// Dropout at this rate wherever the architecture has dropout (timm's proj/mlp drop).
    Dropout(f64),
    /// Drop-path with this maximum rate (timm's linear per-block rule).
    DropPath(f64),
}

/// The paper's default masking ratio.
pub const DEFAULT_MASK_RATIO: f64 = 0.5;

/// What a model must offer to be trained with a sub-model objective. Models live elsewhere; this
/// is the only contract between them and MaskSub.
pub trait SubModelForward {
    /// Training-mode forward; `plan` is `None` for the main pass and the mask for the sub pass.
    fn forward_train(&self, x: &Tensor, plan: Option<&MaskPlan>) -> candle_core::Result<Tensor>;
    /// The grid of maskable units (patch tokens for a ViT, u x u token units for Swin, pixel
    /// patches for a CNN).
    fn token_grid(&self) -> TokenGrid;
    /// How the family masks, which picks the default strategy.
    fn mask_kind(&self) -> MaskKind;
    /// Training-mode forward of a DropSub / PathSub sub pass. Families without the regularizer
    /// say so (the default).
    fn forward_regularized(&self, _x: &Tensor, reg: SubRegularizer) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!(
            "this model has no {reg:?} sub pass"
        )))
    }
}

/// Losses of one step, as reported (only `loss`, the main loss, is "the" training loss).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLosses {
    pub loss: f32,
    pub sub_loss: Option<f32>,
    pub total: f32,
}

/// The configured objective: sub-model kind, loss and mask strategies. The strategy of a step
/// comes from the model family ([`SubModelForward::mask_kind`]) unless the user overrode it.
#[derive(Debug)]
pub struct SubObjective {
    sub: SubModel,
    loss: LossKind,
    token_drop: Option<Box<dyn MaskStrategy>>,
    unit_mask: Option<Box<dyn MaskStrategy>>,
    user: Option<Box<dyn MaskStrategy>>,
}

impl SubObjective {
    pub fn new(sub: SubModel, loss: LossKind) -> Result<Self> {
        let (token_drop, unit_mask) = match sub {
            SubModel::None | SubModel::Dropout { .. } | SubModel::DropPath { .. } => (None, None),
            SubModel::Masking { ratio } => (
                Some(default_strategy(MaskKind::DropTokens, ratio)?),
                Some(default_strategy(MaskKind::MaskUnits, ratio)?),
            ),
        };
        Ok(Self {
            sub,
            loss,
            token_drop,
            unit_mask,
            user: None,
        })
    }

    /// Replace the model family's default strategy (e.g. a user override).
    pub fn with_strategy(mut self, strategy: Box<dyn MaskStrategy>) -> Self {
        if self.sub != SubModel::None {
            self.user = Some(strategy);
        }
        self
    }

    /// The strategy used for a model of mask kind `kind` (None for plain training).
    pub fn strategy_for(&self, kind: MaskKind) -> Option<&dyn MaskStrategy> {
        let family = match kind {
            MaskKind::DropTokens => &self.token_drop,
            MaskKind::MaskUnits => &self.unit_mask,
        };
        self.user.as_ref().or(family.as_ref()).map(|s| s.as_ref())
    }

    pub fn sub_model(&self) -> SubModel {
        self.sub
    }
    pub fn loss_kind(&self) -> LossKind {
        self.loss
    }

    /// Draw this step's mask plan for a model of mask kind `kind` (None for plain training).
    pub fn plan(
        &self,
        batch: usize,
        grid: TokenGrid,
        kind: MaskKind,
        rng: &mut dyn RngCore,
    ) -> Result<Option<MaskPlan>> {
        self.strategy_for(kind)
            .map(|s| s.plan(batch, grid, rng))
            .transpose()
    }

    /// Like [`Self::plan`], but sample `i` draws its mask from its own generator `rng_for(i)`.
    /// Keyed by the sample's place in the *global* batch, the masks of a step do not depend on
    /// how the batch is split across data-parallel ranks.
    pub fn plan_per_sample<R: RngCore>(
        &self,
        batch: usize,
        grid: TokenGrid,
        kind: MaskKind,
        mut rng_for: impl FnMut(usize) -> R,
    ) -> Result<Option<MaskPlan>> {
        let Some(strategy) = self.strategy_for(kind) else {
            return Ok(None);
        };
        let plans = (0..batch)
            .map(|i| strategy.plan(1, grid, &mut rng_for(i)))
            .collect::<Result<Vec<_>>>()?;
        MaskPlan::concat(&plans).map(Some)
    }

    /// Forward both passes, back-propagate both, and return the losses and summed gradients.
    /// `targets` are soft targets (B, C) in the model's dtype.
    pub fn step(
        &self,
        model: &dyn SubModelForward,
        x: &Tensor,
        targets: &Tensor,
        rng: &mut dyn RngCore,
    ) -> Result<(StepLosses, GradStore)> {
        let plan = self.plan(x.dim(0)?, model.token_grid(), model.mask_kind(), rng)?;
        self.step_with_plan(model, x, targets, plan.as_ref())
    }

    /// [`Self::step`] with a given plan (fixtures and tests pass a fixed one).
    pub fn step_with_plan(
        &self,
        model: &dyn SubModelForward,
        x: &Tensor,
        targets: &Tensor,
        plan: Option<&MaskPlan>,
    ) -> Result<(StepLosses, GradStore)> {
        self.step_observed(model, x, targets, plan, &mut |_| Ok(()))
    }

    /// [`Self::step_with_plan`], calling `on_phase` as each [`Phase`] ends (so a benchmark can
    /// time the main and sub passes' forward and backward apart; on an asynchronous device the
    /// callback synchronizes).
    pub fn step_observed(
        &self,
        model: &dyn SubModelForward,
        x: &Tensor,
        targets: &Tensor,
        plan: Option<&MaskPlan>,
        on_phase: &mut dyn FnMut(Phase) -> candle_core::Result<()>,
    ) -> Result<(StepLosses, GradStore)> {
        let z = model.forward_train(x, None)?;
        let main = self.loss.loss(&z, targets)?;
        let main_v = main.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        on_phase(Phase::MainForward)?;
        let sub_pass = match (plan, self.sub.regularizer()) {
            (Some(plan), _) => Some(SubPass::Masked(plan)),
            (None, Some(reg)) => Some(SubPass::Regularized(reg)),
            (None, None) => None,
        };
        let Some(sub_pass) = sub_pass else {
            let grads = main.backward()?;
            on_phase(Phase::MainBackward)?;
            return Ok((
                StepLosses {
                    loss: main_v,
                    sub_loss: None,
                    total: main_v,
                },
                grads,
            ));
        };
        // sg(s(z)): the teacher is a constant for the sub pass.
        let teacher = self.loss.teacher(&z.detach())?;
        let mut grads = (main * 0.5)?.backward()?;
        on_phase(Phase::MainBackward)?;
        drop(z);
        let zs = match sub_pass {
            SubPass::Masked(plan) => model.forward_train(x, Some(plan))?,
            SubPass::Regularized(reg) => model.forward_regularized(x, reg)?,
        };
        let sub = self.loss.loss(&zs, &teacher)?;
        let sub_v = sub.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        on_phase(Phase::SubForward)?;
        let sub_grads = (sub * 0.5)?.backward()?;
        add_grads(&mut grads, sub_grads)?;
        on_phase(Phase::SubBackward)?;
        let losses = StepLosses {
            loss: main_v,
            sub_loss: Some(sub_v),
            total: 0.5 * main_v + 0.5 * sub_v,
        };
        Ok((losses, grads))
    }
}

/// What the sub pass of one step runs.
enum SubPass<'a> {
    Masked(&'a MaskPlan),
    Regularized(SubRegularizer),
}

/// The parts of a step, in order; [`SubObjective::step_observed`] reports each as it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Main pass forward and its loss.
    MainForward,
    MainBackward,
    /// Sub pass forward on the masked batch and its loss against the teacher.
    SubForward,
    /// Sub pass backward, and its gradients added to the main pass's.
    SubBackward,
}

/// grads += other, parameter by parameter (a parameter may appear in only one of them).
pub fn add_grads(grads: &mut GradStore, other: GradStore) -> Result<()> {
    let ids: Vec<_> = other.get_ids().copied().collect();
    for id in ids {
        let Some(g) = other.get_id(id) else { continue };
        let sum = match grads.get_id(id) {
            Some(acc) => (acc + g)?,
            None => g.clone(),
        };
        grads.insert_id(id, sum);
    }
    Ok(())
}

/// A finite-loss guard with the step in the message, so a diverging run stops with a clear error.
pub fn check_finite(losses: &StepLosses, step: u64) -> Result<()> {
    for (what, v) in [("loss", Some(losses.loss)), ("sub_loss", losses.sub_loss)] {
        if let Some(v) = v {
            if !v.is_finite() {
                return Err(CoreError::NonFinite {
                    what,
                    value: v,
                    step,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::RandomTokenDrop;
    use crate::rng::stream;

    /// z = x·w on the plain pass, (x/2)·w on the masked one: enough to check the objective's
    /// bookkeeping against gradients computed by hand.
    struct Linear(candle_core::Var);
    impl SubModelForward for Linear {
        fn forward_train(
            &self,
            x: &Tensor,
            plan: Option<&MaskPlan>,
        ) -> candle_core::Result<Tensor> {
            let x = if plan.is_some() {
                (x * 0.5)?
            } else {
                x.clone()
            };
            x.matmul(self.0.as_tensor())
        }
        fn token_grid(&self) -> TokenGrid {
            TokenGrid::new(2, 2)
        }
        fn mask_kind(&self) -> MaskKind {
            MaskKind::DropTokens
        }
        fn forward_regularized(
            &self,
            x: &Tensor,
            reg: SubRegularizer,
        ) -> candle_core::Result<Tensor> {
            let SubRegularizer::Dropout(r) = reg else {
                return Err(candle_core::Error::Msg(format!("no {reg:?} here")));
            };
            (x * (1.0 - r))?.matmul(self.0.as_tensor())
        }
    }

    #[test]
    fn dropsub_runs_the_regularized_sub_pass_without_a_plan_and_pathsub_errors_if_unsupported() {
        let dev = candle_core::Device::Cpu;
        let w = candle_core::Var::from_tensor(
            &Tensor::ones((4, 3), candle_core::DType::F32, &dev).unwrap(),
        )
        .unwrap();
        let x = Tensor::arange(0f32, 8.0, &dev)
            .unwrap()
            .reshape((2, 4))
            .unwrap();
        let t = Tensor::new(&[[1f32, 0.0, 0.0], [0.0, 1.0, 0.0]], &dev).unwrap();
        let model = Linear(w);
        let drop = SubObjective::new(SubModel::Dropout { ratio: 0.3 }, LossKind::SoftCe).unwrap();
        let plan = drop
            .plan_per_sample(2, model.token_grid(), model.mask_kind(), |i| {
                stream(0, 0, i as u64)
            })
            .unwrap();
        assert!(plan.is_none(), "DropSub draws no mask");
        let (l, _) = drop.step_with_plan(&model, &x, &t, None).unwrap();
        assert!(l.sub_loss.is_some(), "the DropSub sub pass ran");
        let path = SubObjective::new(SubModel::DropPath { ratio: 0.3 }, LossKind::SoftCe).unwrap();
        let e = path
            .step_with_plan(&model, &x, &t, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("DropPath"), "{e}");
        for bad in [0.0, 1.0, -0.1] {
            let e = SubModel::Dropout { ratio: bad }
                .validate("sub.ratio")
                .unwrap_err()
                .to_string();
            assert!(e.contains("sub.ratio"), "{e}");
        }
        assert_eq!(SubModel::DropPath { ratio: 0.2 }.ratio(), Some(0.2));
    }

    #[test]
    fn phases_are_reported_in_order_and_gradients_are_half_main_plus_half_sub() {
        let dev = candle_core::Device::Cpu;
        let w = candle_core::Var::from_tensor(
            &Tensor::arange(0f32, 12.0, &dev)
                .unwrap()
                .reshape((4, 3))
                .unwrap()
                .affine(0.1, -0.5)
                .unwrap(),
        )
        .unwrap();
        let x = Tensor::arange(0f32, 8.0, &dev)
            .unwrap()
            .reshape((2, 4))
            .unwrap()
            .affine(0.3, -1.0)
            .unwrap();
        let t = Tensor::new(&[[1f32, 0.0, 0.0], [0.0, 0.5, 0.5]], &dev).unwrap();
        let model = Linear(w.clone());
        let obj = SubObjective::new(SubModel::Masking { ratio: 0.5 }, LossKind::SoftCe).unwrap();
        let plan = obj
            .plan(
                2,
                model.token_grid(),
                MaskKind::DropTokens,
                &mut stream(1, 2, 3),
            )
            .unwrap();
        let mut seen = Vec::new();
        let (losses, grads) = obj
            .step_observed(&model, &x, &t, plan.as_ref(), &mut |p| {
                seen.push(p);
                Ok(())
            })
            .unwrap();
        use Phase::*;
        assert_eq!(seen, [MainForward, MainBackward, SubForward, SubBackward]);

        // By hand: 0.5 * CE(xw, t) + 0.5 * CE((x/2)w, sg(softmax(xw))).
        let z = x.matmul(w.as_tensor()).unwrap();
        let teacher = LossKind::SoftCe.teacher(&z.detach()).unwrap();
        let main = LossKind::SoftCe.loss(&z, &t).unwrap();
        let zs = (&x * 0.5).unwrap().matmul(w.as_tensor()).unwrap();
        let sub = LossKind::SoftCe.loss(&zs, &teacher).unwrap();
        let total = ((&main * 0.5).unwrap() + (&sub * 0.5).unwrap()).unwrap();
        let want = total.backward().unwrap();
        let diff = (grads.get(w.as_tensor()).unwrap() - want.get(w.as_tensor()).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "gradient differs by {diff}");
        let main_v = main.to_scalar::<f32>().unwrap();
        assert!((losses.loss - main_v).abs() < 1e-6);
        assert!((losses.sub_loss.unwrap() - sub.to_scalar::<f32>().unwrap()).abs() < 1e-6);

        let plain = SubObjective::new(SubModel::None, LossKind::SoftCe).unwrap();
        seen.clear();
        let (l, _) = plain
            .step_observed(&model, &x, &t, None, &mut |p| {
                seen.push(p);
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, [MainForward, MainBackward]);
        assert_eq!(l.sub_loss, None);
    }

    #[test]
    fn per_sample_plans_do_not_depend_on_how_the_batch_is_split() {
        let obj = SubObjective::new(SubModel::Masking { ratio: 0.5 }, LossKind::SoftCe).unwrap();
        let grid = TokenGrid::new(4, 4);
        let rng = |j: usize| stream(9, crate::rng::purpose::MASK, j as u64);
        for kind in [MaskKind::DropTokens, MaskKind::MaskUnits] {
            let whole = obj.plan_per_sample(4, grid, kind, rng).unwrap().unwrap();
            // Two "ranks" of two samples each, keyed by their global positions.
            let lo = obj.plan_per_sample(2, grid, kind, rng).unwrap().unwrap();
            let hi = obj
                .plan_per_sample(2, grid, kind, |i| rng(i + 2))
                .unwrap()
                .unwrap();
            assert_eq!(MaskPlan::concat(&[lo, hi]).unwrap(), whole);
            assert_eq!(whole.batch_size(), 4);
        }
        let whole = obj
            .plan_per_sample(4, grid, MaskKind::DropTokens, rng)
            .unwrap()
            .unwrap();
        assert_ne!(
            whole.kept(0),
            whole.kept(1),
            "each sample draws its own mask"
        );
        let plain = SubObjective::new(SubModel::None, LossKind::SoftCe).unwrap();
        assert!(plain
            .plan_per_sample(4, grid, MaskKind::DropTokens, rng)
            .unwrap()
            .is_none());
    }

    #[test]
    fn strategy_follows_the_model_family_unless_overridden() {
        let obj = SubObjective::new(SubModel::Masking { ratio: 0.5 }, LossKind::SoftCe).unwrap();
        let grid = TokenGrid::new(4, 4);
        for kind in [MaskKind::DropTokens, MaskKind::MaskUnits] {
            let p = obj
                .plan(2, grid, kind, &mut stream(0, 1, 0))
                .unwrap()
                .unwrap();
            assert_eq!(p.kind(), kind);
        }
        let forced = obj.with_strategy(Box::new(RandomTokenDrop::new(0.25).unwrap()));
        let p = forced
            .plan(2, grid, MaskKind::MaskUnits, &mut stream(0, 1, 0))
            .unwrap()
            .unwrap();
        assert_eq!(p.kind(), MaskKind::DropTokens);
        assert_eq!(p.kept(0).len(), 12);
        let plain = SubObjective::new(SubModel::None, LossKind::SoftCe).unwrap();
        assert!(plain
            .plan(2, grid, MaskKind::MaskUnits, &mut stream(0, 1, 0))
            .unwrap()
            .is_none());
    }
}
