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
            SubModel::None => (None, None),
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
        let z = model.forward_train(x, None)?;
        let main = self.loss.loss(&z, targets)?;
        let main_v = main.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let Some(plan) = plan else {
            let grads = main.backward()?;
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
        drop(z);
        let zs = model.forward_train(x, Some(plan))?;
        let sub = self.loss.loss(&zs, &teacher)?;
        let sub_v = sub.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let sub_grads = (sub * 0.5)?.backward()?;
        add_grads(&mut grads, sub_grads)?;
        let losses = StepLosses {
            loss: main_v,
            sub_loss: Some(sub_v),
            total: 0.5 * main_v + 0.5 * sub_v,
        };
        Ok((losses, grads))
    }
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
