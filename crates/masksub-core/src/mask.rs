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
}

impl MaskPlan {
    pub fn batch_size(&self) -> usize {
        match self {
            MaskPlan::KeepTokens {
                keep_per_sample,
                keep,
                ..
            } => keep.len() / keep_per_sample.max(&1),
        }
    }

    /// Kept token indices of sample `b`.
    pub fn kept(&self, b: usize) -> &[u32] {
        match self {
            MaskPlan::KeepTokens {
                keep_per_sample,
                keep,
                ..
            } => &keep[b * keep_per_sample..(b + 1) * keep_per_sample],
        }
    }

    /// The keep indices as a (B, keep_per_sample) u32 tensor, as the ViT gather takes them.
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
        }
    }
}

/// Turns (batch size, token grid, seeded RNG) into a per-sample [`MaskPlan`].
pub trait MaskStrategy: Send + Sync + std::fmt::Debug {
    fn plan(&self, batch: usize, grid: TokenGrid, rng: &mut dyn RngCore) -> Result<MaskPlan>;
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
        if !(0.0..1.0).contains(&ratio) {
            return Err(CoreError::config(
                "mask_ratio",
                format!("{ratio} is not in [0, 1)"),
            ));
        }
        Ok(Self { ratio })
    }

    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Number of kept tokens for a grid of `num_tokens` (at least one).
    pub fn keep_count(&self, num_tokens: usize) -> usize {
        ((num_tokens as f64 * (1.0 - self.ratio)).floor() as usize).clamp(1, num_tokens.max(1))
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
        } = &p;
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
    fn keep_tensor_has_batch_by_keep_shape() {
        let p = plan(1, 1);
        let t = p.keep_tensor(&Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[8, 24]);
        assert_eq!(t.get(2).unwrap().to_vec1::<u32>().unwrap(), p.kept(2));
    }
}
