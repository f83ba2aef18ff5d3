//! GELU with the exact erf form (PyTorch's `nn.GELU()` default, used by timm).

use super::fast_math::{erf, exp};
use super::{f32_slice, use_fused, MIN_ROWS_PER_TASK};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 4096;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi)
const INV_SQRT_2PI: f32 = 0.398_942_3;

#[inline]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

#[inline]
fn gelu_grad(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x)
}

struct GeluFwd;
struct GeluBwd;

impl CustomOp1 for GeluFwd {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .with_min_len(MIN_ROWS_PER_TASK / 4)
            .for_each(|(y, x)| {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = gelu(x);
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.detach()
                .apply_op2_no_bwd(&g.detach().contiguous()?, &GeluBwd)?,
        ))
    }
}

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "gelu-erf-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(d, (x, g))| {
                for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
                    *d = g * gelu_grad(x);
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// GELU(x) = x * Phi(x), differentiable.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if use_fused(x) {
        x.contiguous()?.apply_op1(GeluFwd)
    } else {
        x.gelu_erf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::*;

    #[test]
    fn matches_candle_gelu_erf_forward_and_backward() {
        let x = randn(&[3, 5, 70], 1);
        let w = randn(&[3, 5, 70], 2);
        assert!(max_abs_diff(&gelu_erf(&x).unwrap(), &x.gelu_erf().unwrap()) < 1e-6);
        let a = grad_of(|t| gelu_erf(t).unwrap(), &x, &w);
        let b = grad_of(|t| t.gelu_erf().unwrap(), &x, &w);
        assert!(max_abs_diff(&a, &b) < 1e-5);
    }

    #[test]
    fn known_values() {
        // GELU(1) = 0.8413447, GELU(-1) = -0.1586553
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_3).abs() < 1e-6);
        assert!(gelu(0.0).abs() < 1e-9);
    }
}
