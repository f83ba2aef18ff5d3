//! GELU with the exact erf form (PyTorch's `nn.GELU()` default, used by timm).

use super::fast_math::{erf, erf_and_gauss};
use super::{f32_slice, filled_vec, use_fused, MIN_ROWS_PER_TASK};
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor,
};
use masksub_simd::simd_kernel;
use rayon::prelude::*;
use std::mem::MaybeUninit;

const CHUNK: usize = 4096;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi)
const INV_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// GELU'(x) = Phi(x) + x phi(x); phi's exp(-x^2 / 2) is the one erf(x / sqrt 2) needs, so it
/// is computed once.
#[inline(always)]
fn gelu_grad(x: f32) -> f32 {
    let (erf, e) = erf_and_gauss(x * FRAC_1_SQRT_2);
    0.5 * (1.0 + erf) + x * INV_SQRT_2PI * e
}

simd_kernel! {
    /// y = GELU(x + b) for the rows of x (b spans a row; empty b = no bias). Plain index
    /// loops: iterator adaptors over row chunks compile to out-of-line folds that miss the
    /// kernel's target features.
    fn gelu_rows(y: &mut [MaybeUninit<f32>], x: &[f32], b: &[f32]) {
        let k = if b.is_empty() { x.len() } else { b.len() };
        for r in 0..x.len() / k.max(1) {
            let (y, x) = (&mut y[r * k..(r + 1) * k], &x[r * k..(r + 1) * k]);
            if b.is_empty() {
                for j in 0..k {
                    y[j].write(gelu(x[j]));
                }
            } else {
                let b = &b[..k];
                for j in 0..k {
                    y[j].write(gelu(x[j] + b[j]));
                }
            }
        }
    }
}

simd_kernel! {
    /// d = g * GELU'(x + b) for the rows of x (empty b = no bias).
    fn gelu_grad_rows(d: &mut [MaybeUninit<f32>], x: &[f32], b: &[f32], g: &[f32]) {
        let k = if b.is_empty() { x.len() } else { b.len() };
        for r in 0..x.len() / k.max(1) {
            let span = r * k..(r + 1) * k;
            let (d, x, g) = (&mut d[span.clone()], &x[span.clone()], &g[span]);
            if b.is_empty() {
                for j in 0..k {
                    d[j].write(g[j] * gelu_grad(x[j]));
                }
            } else {
                let b = &b[..k];
                for j in 0..k {
                    d[j].write(g[j] * gelu_grad(x[j] + b[j]));
                }
            }
        }
    }
}

/// Whole rows per parallel task, at least CHUNK elements.
fn task_len(row: usize) -> usize {
    row * CHUNK.div_ceil(row.max(1))
}

/// GELU(x + b) over rows of x, `b` of one row's length (or empty); elementwise, in parallel.
fn gelu_fwd(x: &[f32], b: &[f32]) -> Vec<f32> {
    let t = task_len(b.len().max(1));
    // SAFETY: the chunks cover the buffer and gelu_rows writes each element of its chunk.
    unsafe {
        filled_vec(x.len(), |y| {
            y.par_chunks_mut(t)
                .zip(x.par_chunks(t))
                .with_min_len(MIN_ROWS_PER_TASK / 4)
                .for_each(|(y, x)| gelu_rows(y, x, b))
        })
    }
}

fn gelu_bwd(x: &[f32], b: &[f32], g: &[f32]) -> Vec<f32> {
    let t = task_len(b.len().max(1));
    // SAFETY: as in gelu_fwd.
    unsafe {
        filled_vec(x.len(), |d| {
            d.par_chunks_mut(t)
                .zip(x.par_chunks(t).zip(g.par_chunks(t)))
                .for_each(|(d, (x, g))| gelu_grad_rows(d, x, b, g))
        })
    }
}

struct GeluFwd;
struct GeluBwd;
/// GELU(x + b) with b a bias row: the pre-activation is never stored; the backward
/// recomputes it from x and b.
struct BiasGeluFwd;
struct BiasGeluBwd;

impl CustomOp1 for GeluFwd {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        Ok((CpuStorage::F32(gelu_fwd(x, &[])), l.shape().clone()))
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
        Ok((CpuStorage::F32(gelu_bwd(x, &[], g)), l1.shape().clone()))
    }
}

/// The bias length, checked to span x's rows.
fn bias_len(x: &Layout, b: &Layout, op: &str) -> Result<usize> {
    let k = b.shape().elem_count();
    if k == 0 || x.shape().dims().last() != Some(&k) {
        bail!(
            "{op}: bias {:?} is not one row of {:?}",
            b.shape(),
            x.shape()
        );
    }
    Ok(k)
}

impl CustomOp2 for BiasGeluFwd {
    fn name(&self) -> &'static str {
        "bias-gelu-erf"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
        );
        bias_len(l1, l2, self.name())?;
        Ok((CpuStorage::F32(gelu_fwd(x, b)), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.detach().contiguous()?;
        let dx = x.detach().apply_op3_no_bwd(&b.detach(), &g, &BiasGeluBwd)?;
        let db = super::rowwise::col_sum(&dx)?.reshape(b.shape())?;
        Ok((Some(dx), Some(db)))
    }
}

impl CustomOp3 for BiasGeluBwd {
    fn name(&self) -> &'static str {
        "bias-gelu-erf-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let b = f32_slice(s2, l2, self.name())?;
        let g = f32_slice(s3, l3, self.name())?;
        bias_len(l1, l2, self.name())?;
        if g.len() != x.len() {
            bail!(
                "{}: gradient of {} values for {}",
                self.name(),
                g.len(),
                x.len()
            );
        }
        Ok((CpuStorage::F32(gelu_bwd(x, b, g)), l1.shape().clone()))
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

/// GELU(x + b), `b` of x's last dimension (a linear layer's bias), differentiable. On the CPU
/// one pass: the pre-activation x + b is neither written nor read back.
pub fn bias_gelu_erf(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    if use_fused(x) && b.dtype() == x.dtype() {
        x.contiguous()?.apply_op2(&b.contiguous()?, BiasGeluFwd)
    } else {
        x.broadcast_add(b)?.gelu_erf()
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
    fn bias_gelu_matches_add_then_gelu_forward_and_backward() {
        let x = randn(&[3, 5, 70], 3);
        let b = randn(&[70], 4);
        let w = randn(&[3, 5, 70], 5);
        let want = x.broadcast_add(&b).unwrap().gelu_erf().unwrap();
        assert!(max_abs_diff(&bias_gelu_erf(&x, &b).unwrap(), &want) < 1e-6);
        let dx = grad_of(|t| bias_gelu_erf(t, &b).unwrap(), &x, &w);
        let dx_ref = grad_of(|t| t.broadcast_add(&b).unwrap().gelu_erf().unwrap(), &x, &w);
        assert!(max_abs_diff(&dx, &dx_ref) < 1e-5);
        let db = grad_of(|t| bias_gelu_erf(&x, t).unwrap(), &b, &w);
        let db_ref = grad_of(|t| x.broadcast_add(t).unwrap().gelu_erf().unwrap(), &b, &w);
        assert!(max_abs_diff(&db, &db_ref) < 1e-4);
        assert!(bias_gelu_erf(&x, &randn(&[7], 6)).is_err());
    }

    #[test]
    fn known_values() {
        // GELU(1) = 0.8413447, GELU(-1) = -0.1586553
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_3).abs() < 1e-6);
        assert!(gelu(0.0).abs() < 1e-9);
    }
}
