//! Softmax over the last dimension (attention scores), with a fused backward
//! dx = y * (g - sum(g * y)).

use super::fast_math::exp;
use super::{f32_slice, use_fused, MIN_ROWS_PER_TASK};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// softmax(scale * x): attention folds its 1/sqrt(d) into the softmax instead of a pass over q.
struct SoftmaxFwd {
    scale: f32,
}
struct SoftmaxBwd {
    scale: f32,
}

fn row_len(l: &Layout) -> Result<usize> {
    l.shape()
        .dims()
        .last()
        .copied()
        .ok_or_else(|| candle_core::Error::Msg("softmax of a scalar".into()))
}

impl CustomOp1 for SoftmaxFwd {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let n = row_len(l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(n)
            .zip(x.par_chunks(n))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(y, x)| {
                let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let s = self.scale;
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = exp(s * (x - max));
                }
                let sum: f32 = y.iter().sum();
                let inv = 1.0 / sum;
                y.iter_mut().for_each(|y| *y *= inv);
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.detach().apply_op2_no_bwd(
            &g.detach().contiguous()?,
            &SoftmaxBwd { scale: self.scale },
        )?))
    }
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "softmax-last-dim-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let n = row_len(l1)?;
        let mut dx = vec![0f32; y.len()];
        dx.par_chunks_mut(n)
            .zip(y.par_chunks(n).zip(g.par_chunks(n)))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(d, (y, g))| {
                let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
                for ((d, &y), &g) in d.iter_mut().zip(y).zip(g) {
                    *d = self.scale * y * (g - dot);
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    softmax_scaled(x, 1.0)
}

/// softmax(scale * x) over the last dimension, differentiable (scale > 0).
pub fn softmax_scaled(x: &Tensor, scale: f64) -> Result<Tensor> {
    if use_fused(x) {
        x.contiguous()?.apply_op1(SoftmaxFwd {
            scale: scale as f32,
        })
    } else {
        let x = (x * scale)?;
        let max = x.max_keepdim(D::Minus1)?;
        let e = x.broadcast_sub(&max)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::*;

    #[test]
    fn matches_composed_softmax_forward_and_backward() {
        let x = (randn(&[2, 3, 7, 9], 3) * 4.0).unwrap();
        let w = randn(&[2, 3, 7, 9], 4);
        let composed = |t: &Tensor| candle_nn::ops::softmax(t, D::Minus1).unwrap();
        assert!(max_abs_diff(&softmax_last_dim(&x).unwrap(), &composed(&x)) < 1e-6);
        let a = grad_of(|t| softmax_last_dim(t).unwrap(), &x, &w);
        let b = grad_of(composed, &x, &w);
        assert!(max_abs_diff(&a, &b) < 1e-5, "{}", max_abs_diff(&a, &b));
        let scaled = |t: &Tensor| softmax_scaled(t, 0.25).unwrap();
        let composed_scaled =
            |t: &Tensor| candle_nn::ops::softmax(&(t * 0.25).unwrap(), D::Minus1).unwrap();
        assert!(max_abs_diff(&scaled(&x), &composed_scaled(&x)) < 1e-6);
        let (a, b) = (grad_of(scaled, &x, &w), grad_of(composed_scaled, &x, &w));
        assert!(
            max_abs_diff(&a, &b) < 1e-5,
            "scaled grad {}",
            max_abs_diff(&a, &b)
        );
        let rows = softmax_last_dim(&x)
            .unwrap()
            .sum(D::Minus1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(rows.iter().all(|s| (s - 1.0).abs() < 1e-5));
    }
}
