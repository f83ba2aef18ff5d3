//! `y[b, i, :] = x[b, perm[i], :]` for a fixed permutation of the token axis: Swin's cyclic
//! shift and window partition (and its reverse, and patch merging) as ONE parallel row gather. The
//! backward of a permutation is the gather with the inverse permutation, so no scatter-add is
//! needed (candle's index_select backward is a serial index_add).

use super::{f32_slice, use_fused, MIN_ROWS_PER_TASK};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// A permutation of the token axis and its inverse, built once per layer.
#[derive(Debug, Clone)]
pub struct TokenPermutation {
    perm: Arc<[u32]>,
    inv: Arc<[u32]>,
}

impl TokenPermutation {
    /// `perm` must be a permutation of 0..perm.len().
    pub fn new(perm: Vec<u32>) -> Result<Self> {
        let n = perm.len();
        let mut inv = vec![u32::MAX; n];
        for (i, &p) in perm.iter().enumerate() {
            match inv.get_mut(p as usize) {
                Some(slot) if *slot == u32::MAX => *slot = i as u32,
                _ => bail!("permute_tokens: {p} is out of range or repeated (len {n})"),
            }
        }
        Ok(Self {
            perm: perm.into(),
            inv: inv.into(),
        })
    }

    pub fn len(&self) -> usize {
        self.perm.len()
    }

    pub fn is_empty(&self) -> bool {
        self.perm.is_empty()
    }

    fn inverse(&self) -> Self {
        Self {
            perm: self.inv.clone(),
            inv: self.perm.clone(),
        }
    }

    /// Apply to a (B, L, C) tensor, L = self.len().
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (_, l, _) = x.dims3()?;
        if l != self.len() {
            bail!(
                "permute_tokens: {} tokens, permutation of {}",
                l,
                self.len()
            );
        }
        if use_fused(x) {
            return x.contiguous()?.apply_op1(self.clone());
        }
        let idx = Tensor::from_slice(&self.perm[..], self.len(), x.device())?;
        x.index_select(&idx, 1)
    }

    /// Undo [`Self::apply`].
    pub fn apply_inverse(&self, x: &Tensor) -> Result<Tensor> {
        self.inverse().apply(x)
    }
}

impl CustomOp1 for TokenPermutation {
    fn name(&self) -> &'static str {
        "permute-tokens"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let (_, n, c) = l.shape().dims3()?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(c)
            .enumerate()
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(r, row)| {
                let src = (r / n) * n + self.perm[r % n] as usize;
                row.copy_from_slice(&x[src * c..(src + 1) * c]);
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            g.detach().contiguous()?.apply_op1_no_bwd(&self.inverse())?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::*;
    use candle_core::Device;

    #[test]
    fn matches_index_select_forward_and_backward() {
        let perm = vec![3u32, 0, 4, 1, 2];
        let p = TokenPermutation::new(perm.clone()).unwrap();
        let x = randn(&[2, 5, 3], 1);
        let w = randn(&[2, 5, 3], 2);
        let idx = Tensor::from_slice(&perm, 5, &Device::Cpu).unwrap();
        let composed = |t: &Tensor| t.index_select(&idx, 1).unwrap();
        assert_eq!(max_abs_diff(&p.apply(&x).unwrap(), &composed(&x)), 0.0);
        let back = p.apply_inverse(&p.apply(&x).unwrap()).unwrap();
        assert_eq!(max_abs_diff(&back, &x), 0.0);
        let a = grad_of(|t| p.apply(t).unwrap(), &x, &w);
        let b = grad_of(composed, &x, &w);
        assert_eq!(max_abs_diff(&a, &b), 0.0);
    }

    #[test]
    fn rejects_non_permutations_and_wrong_lengths() {
        assert!(TokenPermutation::new(vec![0, 0, 1]).is_err());
        assert!(TokenPermutation::new(vec![0, 3]).is_err());
        let p = TokenPermutation::new(vec![1, 0]).unwrap();
        assert!(p.apply(&randn(&[1, 3, 2], 0)).is_err());
    }
}
