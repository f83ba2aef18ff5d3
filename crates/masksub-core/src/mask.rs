//! Mask strategies: plain per-sample plans drawn from a seeded RNG. A plan says *what* the sub
//! pass hides; the model decides *how* (token drop for ViT, mask token for Swin, ...).

use crate::{CoreError, Result};
use candle_core::{Device, Tensor};
use rand::seq::index::sample;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The patch-token grid of a model (e.g. 14x14 for a /16 ViT at 224 px).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenGrid {
    pub height: usize,
    pub width: usize,
}

impl TokenGrid {
    pub fn new(height: usize, width: usize) -> Self {
        Self { height, width }
    }
    pub fn len(&self) -> usize {
        self.height * self.width
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the sub pass of one step hides, per sample.
#[derive(Debug, Clone, PartialEq)]
pub enum MaskPlan {
    /// Keep these patch tokens (row-major indices into the grid), `keep_per_sample` per sample,
    /// sorted ascending; every other patch token is dropped from the computation.
    KeepTokens {
        num_tokens: usize,
        keep_per_sample: usize,
        keep: Vec<u32>,
    },
    /// Hide whole units of the grid in place: `masked[b * grid.len() + i] == 1` hides unit `i`
    /// (row-major) of sample `b`; exactly `masked_per_sample` units per sample. The model keeps
    /// the input size and replaces a hidden unit (Swin: a learnable mask token over u x u
    /// stage-1 tokens; CNN: zeros over a p x p pixel patch).
    MaskUnits {
        grid: TokenGrid,
        masked_per_sample: usize,
        masked: Vec<u8>,
    },
}

/// How a model family hides part of its input in the sub pass; picks the default strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskKind {
    /// Drop patch tokens from the sequence (ViT): real compute saving.
    DropTokens,
    /// Replace units in place (Swin mask token, CNN zeroed pixel patches).
    MaskUnits,
}

impl MaskPlan {
    pub fn batch_size(&self) -> usize {
        match self {
            MaskPlan::KeepTokens {
                keep_per_sample,
                keep,
                ..
            } => keep.len() / keep_per_sample.max(&1),
            MaskPlan::MaskUnits { grid, masked, .. } => masked.len() / grid.len().max(1),
        }
    }

    /// Which kind of masking this plan describes.
    pub fn kind(&self) -> MaskKind {
        match self {
            MaskPlan::KeepTokens { .. } => MaskKind::DropTokens,
            MaskPlan::MaskUnits { .. } => MaskKind::MaskUnits,
        }
    }

    /// Number of maskable units (tokens or grid cells) the plan was drawn for.
    pub fn num_units(&self) -> usize {
        match self {
            MaskPlan::KeepTokens { num_tokens, .. } => *num_tokens,
            MaskPlan::MaskUnits { grid, .. } => grid.len(),
        }
    }

    /// The 0/1 unit mask of sample `b` (1 = hidden); `None` for a token-drop plan.
    pub fn unit_mask(&self, b: usize) -> Option<&[u8]> {
        match self {
            MaskPlan::KeepTokens { .. } => None,
            MaskPlan::MaskUnits { grid, masked, .. } => {
                Some(&masked[b * grid.len()..(b + 1) * grid.len()])
            }
        }
    }

    /// The unit mask as a (B, grid.height, grid.width) f32 tensor of 0/1 (1 = hidden), the form
    /// a model upsamples to its tokens or pixels. Errors on a token-drop plan.
    pub fn unit_mask_tensor(&self, device: &Device) -> Result<Tensor> {
        match self {
            MaskPlan::KeepTokens { .. } => Err(CoreError::config(
                "mask_plan",
                "a token-drop plan has no unit mask",
            )),
            MaskPlan::MaskUnits { grid, masked, .. } => {
                let b = masked.len() / grid.len().max(1);
                let v: Vec<f32> = masked.iter().map(|&m| f32::from(m)).collect();
                Ok(Tensor::from_vec(v, (b, grid.height, grid.width), device)?)
            }
        }
    }

    /// The plans of consecutive sample groups as one plan (the same kind and grid throughout).
    pub fn concat(plans: &[MaskPlan]) -> Result<MaskPlan> {
        let first = plans
            .first()
            .ok_or_else(|| CoreError::config("mask_plan", "no plans to concatenate"))?;
        let mismatch = || CoreError::config("mask_plan", "plans of different kinds or grids");
        match first {
            MaskPlan::KeepTokens {
                num_tokens,
                keep_per_sample,
                ..
            } => {
                let mut keep = Vec::new();
                for p in plans {
                    match p {
                        MaskPlan::KeepTokens {
                            num_tokens: n,
                            keep_per_sample: k,
                            keep: part,
                        } if n == num_tokens && k == keep_per_sample => {
                            keep.extend_from_slice(part)
                        }
                        _ => return Err(mismatch()),
                    }
                }
                Ok(MaskPlan::KeepTokens {
                    num_tokens: *num_tokens,
                    keep_per_sample: *keep_per_sample,
                    keep,
                })
            }
            MaskPlan::MaskUnits {
                grid,
                masked_per_sample,
                ..
            } => {
                let mut masked = Vec::new();
                for p in plans {
                    match p {
                        MaskPlan::MaskUnits {
                            grid: g,
                            masked_per_sample: m,
                            masked: part,
                        } if g == grid && m == masked_per_sample => masked.extend_from_slice(part),
                        _ => return Err(mismatch()),
                    }
                }
                Ok(MaskPlan::MaskUnits {
                    grid: *grid,
                    masked_per_sample: *masked_per_sample,
                    masked,
                })
            }
        }
    }

    /// Kept token indices of sample `b`; empty for a unit-mask plan.
    pub fn kept(&self, b: usize) -> &[u32] {
        match self {
            MaskPlan::KeepTokens {
                keep_per_sample,
                keep,
                ..
            } => &keep[b * keep_per_sample..(b + 1) * keep_per_sample],
            MaskPlan::MaskUnits { .. } => &[],
        }
    }

    /// The keep indices as a (B, keep_per_sample) u32 tensor, as the ViT gather takes them.
    /// Errors on a unit-mask plan.
    pub fn keep_tensor(&self, device: &Device) -> Result<Tensor> {
        match self {
            MaskPlan::KeepTokens {
                keep_per_sample,
                keep,
                ..
            } => {
                let b = keep.len() / (*keep_per_sample).max(1);
                Ok(Tensor::from_slice(keep, (b, *keep_per_sample), device)?)
            }
            MaskPlan::MaskUnits { .. } => Err(CoreError::config(
                "mask_plan",
                "a unit-mask plan has no kept-token list",
            )),
        }
    }
}

/// Turns (batch size, token grid, seeded RNG) into a per-sample [`MaskPlan`].
pub trait MaskStrategy: Send + Sync + std::fmt::Debug {
    fn plan(&self, batch: usize, grid: TokenGrid, rng: &mut dyn RngCore) -> Result<MaskPlan>;
}

/// The number of units kept when `ratio` of `num_units` is hidden: floor(L * (1 - ratio)),
/// at least one. Token drop and unit masking share it, so r means the same for every family.
fn keep_count(ratio: f64, num_units: usize) -> usize {
    ((num_units as f64 * (1.0 - ratio)).floor() as usize).clamp(1, num_units.max(1))
}

fn check_ratio(ratio: f64) -> Result<()> {
    if !(0.0..1.0).contains(&ratio) {
        return Err(CoreError::config(
            "mask_ratio",
            format!("{ratio} is not in [0, 1)"),
        ));
    }
    Ok(())
}

/// Random token drop: each sample keeps floor(L * (1 - ratio)) distinct patch tokens, drawn
/// independently per sample (and per call, i.e. per step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomTokenDrop {
    ratio: f64,
}

impl RandomTokenDrop {
    /// `ratio` in [0, 1): the share of patch tokens dropped.
    pub fn new(ratio: f64) -> Result<Self> {
        check_ratio(ratio)?;
        Ok(Self { ratio })
    }

    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Number of kept tokens for a grid of `num_tokens` (at least one).
    pub fn keep_count(&self, num_tokens: usize) -> usize {
        keep_count(self.ratio, num_tokens)
    }
}

impl MaskStrategy for RandomTokenDrop {
    fn plan(&self, batch: usize, grid: TokenGrid, rng: &mut dyn RngCore) -> Result<MaskPlan> {
        let num_tokens = grid.len();
        if num_tokens == 0 {
            return Err(CoreError::config("token_grid", "empty token grid"));
        }
        let keep_per_sample = self.keep_count(num_tokens);
        let mut keep = Vec::with_capacity(batch * keep_per_sample);
        for _ in 0..batch {
            let mut idx: Vec<u32> = sample(rng, num_tokens, keep_per_sample)
                .into_iter()
                .map(|i| i as u32)
                .collect();
            idx.sort_unstable();
            keep.extend_from_slice(&idx);
        }
        Ok(MaskPlan::KeepTokens {
            num_tokens,
            keep_per_sample,
            keep,
        })
    }
}

/// Random unit masking: each sample hides L - floor(L * (1 - ratio)) distinct units of the
/// grid, drawn independently per sample and per step (Swin mask-token units, CNN pixel patches).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomUnitMask {
    ratio: f64,
}

impl RandomUnitMask {
    /// `ratio` in [0, 1): the share of units hidden.
    pub fn new(ratio: f64) -> Result<Self> {
        check_ratio(ratio)?;
        Ok(Self { ratio })
    }

    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Number of hidden units for a grid of `num_units`.
    pub fn masked_count(&self, num_units: usize) -> usize {
        num_units - keep_count(self.ratio, num_units)
    }
}

impl MaskStrategy for RandomUnitMask {
    fn plan(&self, batch: usize, grid: TokenGrid, rng: &mut dyn RngCore) -> Result<MaskPlan> {
        let n = grid.len();
        if n == 0 {
            return Err(CoreError::config("token_grid", "empty unit grid"));
        }
        let masked_per_sample = self.masked_count(n);
        let mut masked = vec![0u8; batch * n];
        for b in 0..batch {
            for i in sample(rng, n, masked_per_sample) {
                masked[b * n + i] = 1;
            }
        }
        Ok(MaskPlan::MaskUnits {
            grid,
            masked_per_sample,
            masked,
        })
    }
}

/// The default strategy of a mask kind at `ratio`.
pub fn default_strategy(kind: MaskKind, ratio: f64) -> Result<Box<dyn MaskStrategy>> {
    Ok(match kind {
        MaskKind::DropTokens => Box::new(RandomTokenDrop::new(ratio)?),
        MaskKind::MaskUnits => Box::new(RandomUnitMask::new(ratio)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;
    use std::collections::HashSet;

    fn plan(seed: u64, step: u64) -> MaskPlan {
        let s = RandomTokenDrop::new(0.5).unwrap();
        s.plan(8, TokenGrid::new(7, 7), &mut stream(seed, 1, step))
            .unwrap()
    }

    #[test]
    fn keeps_floor_of_remaining_share_distinct_and_in_range() {
        let p = plan(0, 0);
        let MaskPlan::KeepTokens {
            num_tokens,
            keep_per_sample,
            ..
        } = &p
        else {
            panic!("token drop gives a keep plan")
        };
        assert_eq!((*num_tokens, *keep_per_sample), (49, 24)); // floor(49 * 0.5)
        assert_eq!(p.batch_size(), 8);
        for b in 0..8 {
            let k = p.kept(b);
            assert_eq!(k.iter().collect::<HashSet<_>>().len(), 24);
            assert!(k.iter().all(|&i| i < 49));
            assert!(k.windows(2).all(|w| w[0] < w[1]), "sorted");
        }
        let s = RandomTokenDrop::new(0.75).unwrap();
        assert_eq!(s.keep_count(196), 49);
        assert_eq!(RandomTokenDrop::new(0.0).unwrap().keep_count(196), 196);
    }

    #[test]
    fn reproducible_by_seed_and_fresh_per_sample_and_step() {
        assert_eq!(plan(7, 3), plan(7, 3));
        assert_ne!(plan(7, 3), plan(7, 4));
        assert_ne!(plan(7, 3), plan(8, 3));
        let p = plan(7, 3);
        let distinct: HashSet<&[u32]> = (0..8).map(|b| p.kept(b)).collect();
        assert_eq!(distinct.len(), 8, "every sample draws its own subset");
    }

    #[test]
    fn rejects_bad_ratio_naming_the_field() {
        for r in [-0.1, 1.0, 1.5, f64::NAN] {
            let e = RandomTokenDrop::new(r).unwrap_err().to_string();
            assert!(e.contains("mask_ratio"), "{e}");
        }
    }

    #[test]
    fn concat_joins_sample_groups_and_rejects_mixed_plans() {
        let (a, b) = (plan(1, 1), plan(2, 1));
        let ab = MaskPlan::concat(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(ab.batch_size(), 16);
        assert_eq!(ab.kept(3), a.kept(3));
        assert_eq!(ab.kept(8 + 5), b.kept(5));
        let units = RandomUnitMask::new(0.5)
            .unwrap()
            .plan(2, TokenGrid::new(2, 2), &mut stream(0, 1, 0))
            .unwrap();
        let uu = MaskPlan::concat(&[units.clone(), units.clone()]).unwrap();
        assert_eq!(uu.unit_mask(3), units.unit_mask(1));
        assert!(MaskPlan::concat(&[a, units]).is_err());
        assert!(MaskPlan::concat(&[]).is_err());
    }

    #[test]
    fn keep_tensor_has_batch_by_keep_shape() {
        let p = plan(1, 1);
        let t = p.keep_tensor(&Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[8, 24]);
        assert_eq!(t.get(2).unwrap().to_vec1::<u32>().unwrap(), p.kept(2));
    }

    #[test]
    fn unit_mask_hides_the_complement_of_the_keep_count_per_sample() {
        let s = RandomUnitMask::new(0.5).unwrap();
        let p = s
            .plan(6, TokenGrid::new(7, 7), &mut stream(3, 1, 0))
            .unwrap();
        assert_eq!(p.kind(), MaskKind::MaskUnits);
        assert_eq!((p.batch_size(), p.num_units()), (6, 49));
        let MaskPlan::MaskUnits {
            masked_per_sample, ..
        } = &p
        else {
            panic!("unit mask gives a unit plan")
        };
        assert_eq!(*masked_per_sample, 25); // 49 - floor(49 * 0.5)
        let masks: Vec<&[u8]> = (0..6).map(|b| p.unit_mask(b).unwrap()).collect();
        for m in &masks {
            assert_eq!(m.iter().map(|&v| v as usize).sum::<usize>(), 25);
        }
        assert_eq!(
            masks.iter().collect::<HashSet<_>>().len(),
            6,
            "fresh per sample"
        );
        let again = s
            .plan(6, TokenGrid::new(7, 7), &mut stream(3, 1, 0))
            .unwrap();
        assert_eq!(p, again);
        let next = s
            .plan(6, TokenGrid::new(7, 7), &mut stream(3, 1, 1))
            .unwrap();
        assert_ne!(p, next, "fresh per step");
        assert!(p.keep_tensor(&Device::Cpu).is_err());
        let t = p.unit_mask_tensor(&Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[6, 7, 7]);
        let row: Vec<f32> = t.get(4).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = masks[4].iter().map(|&v| v as f32).collect();
        assert_eq!(row, want);
        assert_eq!(RandomUnitMask::new(0.0).unwrap().masked_count(16), 0);
        assert!(RandomUnitMask::new(1.0).is_err());
    }
}
