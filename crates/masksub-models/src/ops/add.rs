//! a + b of equal shapes (residual connections): one parallel, vectorized pass into an
//! uninitialised output; candle's add runs on the calling thread alone for these sizes.

use super::{f32_slice, filled_vec, use_fused};
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use masksub_simd::simd_kernel;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per parallel task.
const CHUNK: usize = 16 * 1024;

simd_kernel! {
    fn add_slices(y: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32]) {
        for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
            y.write(a + b);
        }
    }
}

struct Add;

impl CustomOp2 for Add {
    fn name(&self) -> &'static str {
        "residual-add"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            bail!(
                "{}: shapes {:?} and {:?} differ",
                self.name(),
                l1.shape(),
                l2.shape()
            );
        }
        let (a, b) = (
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
        );
        // SAFETY: the chunks cover the buffer and add_slices writes each element of its chunk.
        let y = unsafe {
            filled_vec(a.len(), |y| {
                y.par_chunks_mut(CHUNK)
                    .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
                    .for_each(|(y, (a, b))| add_slices(y, a, b))
            })
        };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(g.clone()), Some(g.clone())))
    }
}

/// a + b (same shape), differentiable.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if use_fused(a) && use_fused(b) && a.shape() == b.shape() {
        a.contiguous()?.apply_op2(&b.contiguous()?, Add)
    } else {
        a + b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::*;

    #[test]
    fn matches_candles_add_and_passes_the_gradient_to_both() {
        let (a, b, w) = (
            randn(&[3, 50, 7], 1),
            randn(&[3, 50, 7], 2),
            randn(&[3, 50, 7], 3),
        );
        assert_eq!(
            max_abs_diff(&add(&a, &b).unwrap(), &(&a + &b).unwrap()),
            0.0
        );
        assert_eq!(
            max_abs_diff(&grad_of(|t| add(t, &b).unwrap(), &a, &w), &w),
            0.0
        );
        assert_eq!(
            max_abs_diff(&grad_of(|t| add(&a, t).unwrap(), &b, &w), &w),
            0.0
        );
        // A shape mismatch takes candle's path, which reports it.
        assert!(add(&a, &randn(&[3, 7], 4)).is_err());
    }
}
