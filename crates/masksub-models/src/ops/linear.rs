//! y = x W^T (+ b) for x of shape (rows, in) and W of (out, in), as timm's nn.Linear, with a
//! hand-written backward: every product is one gemm call on the operands as they lie in
//! memory. Composed from candle ops, the same layer costs a zero-filled output, a bias pass,
//! a transpose node whose weight gradient is copied back to row-major, and serial gradient
//! accumulations; here the bias is the gemm's initial destination and dW = g^T x comes out
//! row-major (out, in) directly.

use super::{f32_slice, rowwise::col_sum, use_fused};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;

/// dst (m x n, row-major) = [dst +] lhs (m x k) · rhs (k x n); strides are (row, column).
/// Without `accumulate` gemm only writes dst, so it may be uninitialised; with it, every
/// element must have been written before.
#[allow(clippy::too_many_arguments)]
fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [MaybeUninit<f32>],
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    let fits = |len: usize, (rs, cs): (usize, usize), rows: usize, cols: usize| {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
    };
    assert!(
        dst.len() == m * n
            && fits(lhs.len(), lhs_strides, m, k)
            && fits(rhs.len(), rhs_strides, k, n),
        "linear: gemm operands do not match their shapes"
    );
    // gemm's own rayon split scales poorly on these shapes (worst on a weight gradient g^T x:
    // long k, small output); one single-threaded gemm per block of destination rows is faster,
    // and each element is still one gemm's full k-sum, so the result does not depend on the
    // thread count.
    let threads = rayon::current_num_threads();
    let rows_per = m.div_ceil(threads.max(1)).next_multiple_of(16).max(16);
    let (dst_ptr, lhs_ptr, rhs_ptr) = (
        dst.as_mut_ptr() as usize,
        lhs.as_ptr() as usize,
        rhs.as_ptr() as usize,
    );
    let block = |b: usize| {
        let (r0, r1) = (b * rows_per, ((b + 1) * rows_per).min(m));
        // SAFETY: the assert keeps every index gemm reads or writes inside the three slices;
        // blocks write disjoint destination rows r0..r1, and dst is borrowed mutably so it
        // aliases neither input.
        unsafe {
            gemm::gemm(
                r1 - r0,
                n,
                k,
                (dst_ptr as *mut f32).add(r0 * n),
                1,
                n as isize,
                accumulate,
                (lhs_ptr as *const f32).add(r0 * lhs_strides.0),
                lhs_strides.1 as isize,
                lhs_strides.0 as isize,
                rhs_ptr as *const f32,
                rhs_strides.1 as isize,
                rhs_strides.0 as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    };
    let blocks = m.div_ceil(rows_per);
    if blocks <= 1 {
        block(0);
    } else {
        use rayon::prelude::*;
        (0..blocks).into_par_iter().for_each(block);
    }
}

/// (rows, in) and (out, in) of x and W, checked.
fn dims(x: &Layout, w: &Layout, op: &str) -> Result<(usize, usize, usize)> {
    match (x.shape().dims(), w.shape().dims()) {
        (&[rows, i], &[out, wi]) if i == wi => Ok((rows, i, out)),
        (xd, wd) => {
            bail!("{op}: input {xd:?} and weight {wd:?} do not match (rows, in) x (out, in)")
        }
    }
}

/// An (m x n) result that `gemm_into` writes; `init` rows, if given, are its starting value.
fn gemm_out(
    m: usize,
    n: usize,
    init: Option<&[f32]>,
    run: impl FnOnce(&mut [MaybeUninit<f32>], bool),
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(m * n);
    let dst = &mut v.spare_capacity_mut()[..m * n];
    if let Some(row) = init {
        use rayon::prelude::*;
        dst.par_chunks_mut(n).with_min_len(64).for_each(|d| {
            d.iter_mut().zip(row).for_each(|(d, &b)| {
                d.write(b);
            })
        });
    }
    run(dst, init.is_some());
    // SAFETY: gemm wrote all m * n elements (and with `init` they were written before).
    unsafe { v.set_len(m * n) };
    v
}

/// y = x W^T (+ b), row-major (rows, out).
fn forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    rows: usize,
    inp: usize,
    out: usize,
) -> Vec<f32> {
    // W^T (in x out): row stride 1, column stride `in`.
    gemm_out(rows, out, b, |y, acc| {
        gemm_into(rows, out, inp, y, acc, x, (inp, 1), w, (1, inp))
    })
}

struct LinearFwd;
struct LinearBiasFwd;
/// dx = g W.
struct LinearBwdInput;
/// dW = g^T x.
struct LinearBwdWeight;

fn backward(x: &Tensor, w: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let g = g.detach().contiguous()?;
    let dx = g.apply_op2_no_bwd(&w.detach(), &LinearBwdInput)?;
    let dw = g.apply_op2_no_bwd(&x.detach(), &LinearBwdWeight)?;
    Ok((dx, dw, g))
}

impl CustomOp2 for LinearFwd {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, inp, out) = dims(l1, l2, self.name())?;
        let (x, w) = (
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
        );
        let y = forward(x, w, None, rows, inp, out);
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = backward(x, w, g)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for LinearBiasFwd {
    fn name(&self) -> &'static str {
        "linear-bias"
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
        let (rows, inp, out) = dims(l1, l2, self.name())?;
        let (x, w, b) = (
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
            f32_slice(s3, l3, self.name())?,
        );
        if b.len() != out {
            bail!("{}: bias of {} for {out} outputs", self.name(), b.len());
        }
        let y = forward(x, w, Some(b), rows, inp, out);
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, g) = backward(x, w, g)?;
        let db = col_sum(&g)?.reshape(b.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp2 for LinearBwdInput {
    fn name(&self) -> &'static str {
        "linear-bwd-input"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, w) = (
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
        );
        let (rows, out) = l1.shape().dims2()?;
        let (w_out, inp) = l2.shape().dims2()?;
        if w_out != out {
            bail!(
                "{}: gradient {:?} for weight {:?}",
                self.name(),
                l1.shape(),
                l2.shape()
            );
        }
        let dx = gemm_out(rows, inp, None, |d, acc| {
            gemm_into(rows, inp, out, d, acc, g, (out, 1), w, (inp, 1))
        });
        Ok((CpuStorage::F32(dx), Shape::from((rows, inp))))
    }
}

impl CustomOp2 for LinearBwdWeight {
    fn name(&self) -> &'static str {
        "linear-bwd-weight"
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
        let (rows, out) = l1.shape().dims2()?;
        let (x_rows, inp) = l2.shape().dims2()?;
        if x_rows != rows {
            bail!(
                "{}: gradient {:?} for input {:?}",
                self.name(),
                l1.shape(),
                l2.shape()
            );
        }
        // g^T (out x rows): row stride 1, column stride `out`.
        let dw = gemm_out(out, inp, None, |d, acc| {
            gemm_into(out, inp, rows, d, acc, g, (1, out), x, (inp, 1))
        });
        Ok((CpuStorage::F32(dw), Shape::from((out, inp))))
    }
}

/// x (rows, in) · W^T (+ b), differentiable. On the CPU in f32 each product is one gemm;
/// elsewhere candle's matmul and a broadcast add.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    if use_fused(x) && w.dtype() == x.dtype() {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        match b {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, LinearBiasFwd),
            None => x.apply_op2(&w, LinearFwd),
        }
    } else {
        let y = x.matmul(&w.t()?)?;
        match b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::*;
    use candle_core::Var;

    fn composed(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
        let y = x.matmul(&w.t().unwrap()).unwrap();
        match b {
            Some(b) => y.broadcast_add(b).unwrap(),
            None => y,
        }
    }

    /// Gradients of sum(f(x, w, b) * r) w.r.t. x, w and b.
    fn grads(
        f: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        r: &Tensor,
    ) -> [Tensor; 3] {
        let (vx, vw, vb) = (
            Var::from_tensor(x).unwrap(),
            Var::from_tensor(w).unwrap(),
            Var::from_tensor(b).unwrap(),
        );
        let loss = (f(vx.as_tensor(), vw.as_tensor(), vb.as_tensor()) * r)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = loss.backward().unwrap();
        // A b the function ignores gets zeros.
        [&vx, &vw, &vb].map(|v| {
            g.get(v.as_tensor())
                .cloned()
                .unwrap_or_else(|| v.zeros_like().unwrap())
        })
    }

    #[test]
    fn matches_matmul_plus_bias_forward_and_backward() {
        // Shapes that are not multiples of any SIMD width or gemm block.
        let (x, w, b, r) = (
            randn(&[37, 23], 1),
            randn(&[19, 23], 2),
            randn(&[19], 3),
            randn(&[37, 19], 4),
        );
        assert!(
            max_abs_diff(
                &linear(&x, &w, Some(&b)).unwrap(),
                &composed(&x, &w, Some(&b))
            ) < 1e-5
        );
        assert!(max_abs_diff(&linear(&x, &w, None).unwrap(), &composed(&x, &w, None)) < 1e-5);
        let ours = grads(|x, w, b| linear(x, w, Some(b)).unwrap(), &x, &w, &b, &r);
        let want = grads(|x, w, b| composed(x, w, Some(b)), &x, &w, &b, &r);
        for (o, w) in ours.iter().zip(&want) {
            assert_eq!(o.dims(), w.dims());
            assert!(max_abs_diff(o, w) < 1e-4, "{}", max_abs_diff(o, w));
        }
        let ours = grads(|x, w, _| linear(x, w, None).unwrap(), &x, &w, &b, &r);
        assert!(max_abs_diff(&ours[0], &want[0]) < 1e-4 && max_abs_diff(&ours[1], &want[1]) < 1e-4);
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let (x, w) = (randn(&[4, 5], 1), randn(&[3, 6], 2));
        assert!(linear(&x, &w, None).is_err());
        assert!(linear(&randn(&[4, 6], 3), &w, Some(&randn(&[4], 4))).is_err());
    }
}
