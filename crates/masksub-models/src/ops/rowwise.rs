//! x + b and x * b where b spans the trailing dimensions of x (a bias, a LayerScale gamma, a
//! position embedding), with fused backward. candle's broadcast ops reduce the gradient of b
//! with a per-element div/mod loop, which cost ~17% of a ViT step on CPU; here it is a
//! column sum over contiguous rows.

use super::{col_sums, f32_slice, filled_vec, use_fused, MIN_ROWS_PER_TASK};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use masksub_simd::simd_kernel;
use rayon::prelude::*;
use std::mem::MaybeUninit;

#[derive(Clone, Copy)]
enum Kind {
    Add,
    Mul,
}

struct RowOp(Kind);

simd_kernel! {
    fn add_row(y: &mut [MaybeUninit<f32>], x: &[f32], b: &[f32]) {
        y.iter_mut().zip(x).zip(b).for_each(|((y, x), b)| {
            y.write(x + b);
        })
    }
}

simd_kernel! {
    fn mul_row(y: &mut [MaybeUninit<f32>], x: &[f32], b: &[f32]) {
        y.iter_mut().zip(x).zip(b).for_each(|((y, x), b)| {
            y.write(x * b);
        })
    }
}

simd_kernel! {
    /// acc += g, elementwise.
    fn acc_row(acc: &mut [f32], g: &[f32]) {
        acc.iter_mut().zip(g).for_each(|(a, g)| *a += g)
    }
}

simd_kernel! {
    /// acc += g * x, elementwise.
    fn acc_row_prod(acc: &mut [f32], g: &[f32], x: &[f32]) {
        acc.iter_mut().zip(g).zip(x).for_each(|((a, g), x)| *a += g * x)
    }
}
/// Column sums of g (rows of length k) -> (k).
struct ColSum {
    k: usize,
}
/// Column sums of g * x -> (k).
struct ColSumProd {
    k: usize,
}

fn row_len(x: &Layout, b: &Layout) -> Result<usize> {
    let k = b.shape().elem_count();
    if k == 0 || !x.shape().elem_count().is_multiple_of(k) {
        bail!(
            "row op: {:?} does not span the trailing dims of {:?}",
            b.shape(),
            x.shape()
        );
    }
    Ok(k)
}

impl CustomOp2 for RowOp {
    fn name(&self) -> &'static str {
        match self.0 {
            Kind::Add => "add-rows",
            Kind::Mul => "mul-rows",
        }
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
        let k = row_len(l1, l2)?;
        let kind = self.0;
        // SAFETY: x.len() is a multiple of k (row_len), so the k-chunks cover the buffer and
        // add_row / mul_row write each element of theirs.
        let y = unsafe {
            filled_vec(x.len(), |y| {
                y.par_chunks_mut(k)
                    .zip(x.par_chunks(k))
                    .with_min_len(MIN_ROWS_PER_TASK)
                    .for_each(|(y, x)| match kind {
                        Kind::Add => add_row(y, x, b),
                        Kind::Mul => mul_row(y, x, b),
                    })
            })
        };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.detach().contiguous()?;
        let k = b.elem_count();
        Ok(match self.0 {
            Kind::Add => (
                Some(g.clone()),
                Some(g.apply_op1_no_bwd(&ColSum { k })?.reshape(b.shape())?),
            ),
            Kind::Mul => {
                let dx = g.apply_op2_no_bwd(&b.detach(), &RowOp(Kind::Mul))?;
                let db = g
                    .apply_op2_no_bwd(&x.detach(), &ColSumProd { k })?
                    .reshape(b.shape())?;
                (Some(dx), Some(db))
            }
        })
    }
}

impl CustomOp1 for ColSum {
    fn name(&self) -> &'static str {
        "col-sum"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(s, l, self.name())?;
        let k = self.k;
        let out = col_sums(g.len() / k, k, |r, acc| {
            acc_row(acc, &g[r * k..(r + 1) * k])
        });
        Ok((CpuStorage::F32(out), Shape::from(k)))
    }
}

impl CustomOp2 for ColSumProd {
    fn name(&self) -> &'static str {
        "col-sum-prod"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, x) = (
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
        );
        let k = self.k;
        let out = col_sums(g.len() / k, k, |r, acc| {
            acc_row_prod(acc, &g[r * k..(r + 1) * k], &x[r * k..(r + 1) * k])
        });
        Ok((CpuStorage::F32(out), Shape::from(k)))
    }
}

/// The trailing dims of `x` that `b` must equal (b may carry leading 1s, like (1, L, D)).
fn check_trailing(x: &Tensor, b: &Tensor) -> Result<()> {
    let bd: Vec<usize> = b.dims().iter().copied().skip_while(|&d| d == 1).collect();
    let xd = x.dims();
    if bd.len() > xd.len() || xd[xd.len() - bd.len()..] != bd[..] {
        bail!(
            "row op: {:?} is not the trailing shape of {:?}",
            b.dims(),
            xd
        );
    }
    Ok(())
}

fn row_op(x: &Tensor, b: &Tensor, kind: Kind) -> Result<Tensor> {
    check_trailing(x, b)?;
    if use_fused(x) && b.dtype() == x.dtype() {
        return x.contiguous()?.apply_op2(&b.contiguous()?, RowOp(kind));
    }
    match kind {
        Kind::Add => x.broadcast_add(b),
        Kind::Mul => x.broadcast_mul(b),
    }
}

/// x + b, b broadcast over the leading dims of x.
/// Column sums of a contiguous f32 CPU tensor over its last dimension (no gradient).
pub(super) fn col_sum(g: &Tensor) -> Result<Tensor> {
    let k = g.dims().last().copied().unwrap_or(1);
    g.apply_op1_no_bwd(&ColSum { k })
}

pub fn add_rows(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    row_op(x, b, Kind::Add)
}

/// x * b, b broadcast over the leading dims of x.
pub fn mul_rows(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    row_op(x, b, Kind::Mul)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::*;
    use candle_core::Var;

    fn check(kind: Kind, b_shape: &[usize]) {
        let x0 = randn(&[3, 5, 8], 11);
        let b0 = randn(b_shape, 12);
        let gw = randn(&[3, 5, 8], 13);
        let run = |fused: bool| {
            let (x, b) = (
                Var::from_tensor(&x0).unwrap(),
                Var::from_tensor(&b0).unwrap(),
            );
            let y = match (fused, kind) {
                (true, _) => row_op(x.as_tensor(), b.as_tensor(), kind).unwrap(),
                (false, Kind::Add) => x.as_tensor().broadcast_add(b.as_tensor()).unwrap(),
                (false, Kind::Mul) => x.as_tensor().broadcast_mul(b.as_tensor()).unwrap(),
            };
            let g = (&y * &gw).unwrap().sum_all().unwrap().backward().unwrap();
            (
                y,
                g.get(x.as_tensor()).unwrap().clone(),
                g.get(b.as_tensor()).unwrap().clone(),
            )
        };
        let (a, c) = (run(true), run(false));
        assert!(max_abs_diff(&a.0, &c.0) < 1e-6);
        assert!(max_abs_diff(&a.1, &c.1) < 1e-5);
        assert_eq!(a.2.dims(), b_shape);
        assert!(
            max_abs_diff(&a.2, &c.2) < 1e-4,
            "{}",
            max_abs_diff(&a.2, &c.2)
        );
    }

    #[test]
    fn add_and_mul_match_candle_broadcast_ops_with_gradients() {
        for kind in [Kind::Add, Kind::Mul] {
            check(kind, &[8]);
            check(kind, &[1, 5, 8]);
        }
    }

    #[test]
    fn rejects_non_trailing_shapes() {
        let x = randn(&[3, 5, 8], 1);
        assert!(add_rows(&x, &randn(&[5], 2)).is_err());
        assert!(mul_rows(&x, &randn(&[3, 1, 8], 2)).is_err());
    }
}
