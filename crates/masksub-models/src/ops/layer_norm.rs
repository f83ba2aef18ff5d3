//! LayerNorm over the last dimension with affine weight and bias (timm: eps 1e-6).
//! Fused CPU forward; fused backward for dx and for (dw, db).

use super::{col_sums, f32_slice, use_fused, MIN_ROWS_PER_TASK};
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};
use masksub_simd::simd_kernel;
use rayon::prelude::*;

struct LnFwd {
    eps: f32,
}
struct LnBwdInput {
    eps: f32,
}
struct LnBwdParams {
    eps: f32,
}

/// Mean and 1/std of one row (two-pass variance, as PyTorch computes it).
#[inline(always)]
fn stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

simd_kernel! {
    /// One row of the forward: y = xhat * w + b.
    fn fwd_row(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
        let (mean, rstd) = stats(x, eps);
        let d = x.len();
        let (y, w, b) = (&mut y[..d], &w[..d], &b[..d]);
        for i in 0..d {
            y[i] = (x[i] - mean) * rstd * w[i] + b[i];
        }
    }
}

simd_kernel! {
    /// One row of dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * w.
    fn bwd_input_row(dx: &mut [f32], x: &[f32], w: &[f32], g: &[f32], eps: f32) {
        let (mean, rstd) = stats(x, eps);
        let d = x.len();
        let (dx, w, g) = (&mut dx[..d], &w[..d], &g[..d]);
        let (mut s_gw, mut s_gwx) = (0f32, 0f32);
        for i in 0..d {
            let gw = g[i] * w[i];
            s_gw += gw;
            s_gwx += gw * (x[i] - mean) * rstd;
        }
        let (m_gw, m_gwx) = (s_gw / d as f32, s_gwx / d as f32);
        for i in 0..d {
            let xhat = (x[i] - mean) * rstd;
            dx[i] = rstd * (g[i] * w[i] - m_gw - xhat * m_gwx);
        }
    }
}

simd_kernel! {
    /// One row's contribution to (dw, db): acc[..d] += g * xhat, acc[d..] += g.
    fn bwd_params_row(acc: &mut [f32], x: &[f32], g: &[f32], eps: f32) {
        let (mean, rstd) = stats(x, eps);
        let d = x.len();
        let g = &g[..d];
        let (dw, db) = acc.split_at_mut(d);
        let (dw, db) = (&mut dw[..d], &mut db[..d]);
        for i in 0..d {
            dw[i] += g[i] * (x[i] - mean) * rstd;
            db[i] += g[i];
        }
    }
}

fn dim_of(l: &Layout, op: &'static str) -> Result<usize> {
    match l.shape().dims().last() {
        Some(&d) if d > 0 => Ok(d),
        _ => bail!("{op}: input needs a non-empty last dimension"),
    }
}

impl CustomOp3 for LnFwd {
    fn name(&self) -> &'static str {
        "layer-norm"
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
        let (x, w, b) = (
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
            f32_slice(s3, l3, self.name())?,
        );
        let d = dim_of(l1, self.name())?;
        if w.len() != d || b.len() != d {
            bail!(
                "layer-norm: weight/bias of {}/{} for a last dimension of {d}",
                w.len(),
                b.len()
            );
        }
        let mut y = vec![0f32; x.len()];
        let eps = self.eps;
        y.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(y, x)| fwd_row(y, x, w, b, eps));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, w, g) = (x.detach(), w.detach(), g.detach().contiguous()?);
        let dx = x.apply_op3_no_bwd(&w, &g, &LnBwdInput { eps: self.eps })?;
        let dwdb = x.apply_op2_no_bwd(&g, &LnBwdParams { eps: self.eps })?;
        Ok((Some(dx), Some(dwdb.get(0)?), Some(dwdb.get(1)?)))
    }
}

impl CustomOp3 for LnBwdInput {
    fn name(&self) -> &'static str {
        "layer-norm-bwd-input"
    }
    /// dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * w.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, g) = (
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
            f32_slice(s3, l3, self.name())?,
        );
        let d = dim_of(l1, self.name())?;
        let mut dx = vec![0f32; x.len()];
        let eps = self.eps;
        dx.par_chunks_mut(d)
            .zip(x.par_chunks(d).zip(g.par_chunks(d)))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(dx, (x, g))| bwd_input_row(dx, x, w, g, eps));
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

impl CustomOp2 for LnBwdParams {
    fn name(&self) -> &'static str {
        "layer-norm-bwd-params"
    }
    /// (2, D): row 0 = sum over rows of g * xhat (dw), row 1 = sum of g (db).
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
        );
        let d = dim_of(l1, self.name())?;
        let eps = self.eps;
        let sums = col_sums(x.len() / d, 2 * d, |r, acc| {
            bwd_params_row(acc, &x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d], eps)
        });
        Ok((CpuStorage::F32(sums), Shape::from((2, d))))
    }
}

/// LayerNorm over the last dimension: (x - mean) / sqrt(var + eps) * weight + bias.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if use_fused(x) && weight.dtype() == DType::F32 {
        return x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LnFwd { eps: eps as f32 },
        );
    }
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xhat.broadcast_mul(weight)?.broadcast_add(bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::*;
    use candle_core::Var;

    fn composed(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        let mean = x.mean_keepdim(D::Minus1).unwrap();
        let xc = x.broadcast_sub(&mean).unwrap();
        let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let xhat = xc
            .broadcast_div(&(var + 1e-6).unwrap().sqrt().unwrap())
            .unwrap();
        xhat.broadcast_mul(w).unwrap().broadcast_add(b).unwrap()
    }

    #[test]
    fn forward_and_all_three_gradients_match_the_composed_version() {
        let x = (randn(&[4, 9, 48], 5) * 3.0).unwrap();
        let gw = randn(&[4, 9, 48], 6);
        let w0 = randn(&[48], 7);
        let b0 = randn(&[48], 8);
        let run = |fused: bool| {
            let (xv, wv, bv) = (
                Var::from_tensor(&x).unwrap(),
                Var::from_tensor(&w0).unwrap(),
                Var::from_tensor(&b0).unwrap(),
            );
            let y = if fused {
                layer_norm(xv.as_tensor(), wv.as_tensor(), bv.as_tensor(), 1e-6).unwrap()
            } else {
                composed(xv.as_tensor(), wv.as_tensor(), bv.as_tensor())
            };
            let g = (&y * &gw).unwrap().sum_all().unwrap().backward().unwrap();
            let get = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
            (y, get(&xv), get(&wv), get(&bv))
        };
        let (a, b) = (run(true), run(false));
        assert!(max_abs_diff(&a.0, &b.0) < 1e-5);
        assert!(
            max_abs_diff(&a.1, &b.1) < 1e-4,
            "dx {}",
            max_abs_diff(&a.1, &b.1)
        );
        assert!(
            max_abs_diff(&a.2, &b.2) < 1e-4,
            "dw {}",
            max_abs_diff(&a.2, &b.2)
        );
        assert!(
            max_abs_diff(&a.3, &b.3) < 1e-4,
            "db {}",
            max_abs_diff(&a.3, &b.3)
        );
    }

    #[test]
    fn normalizes_rows() {
        let x = randn(&[3, 64], 9);
        let y = layer_norm(
            &x,
            &Tensor::ones(64, DType::F32, x.device()).unwrap(),
            &Tensor::zeros(64, DType::F32, x.device()).unwrap(),
            1e-6,
        )
        .unwrap();
        let m = y.mean(D::Minus1).unwrap().to_vec1::<f32>().unwrap();
        let v = y
            .sqr()
            .unwrap()
            .mean(D::Minus1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(m.iter().all(|m| m.abs() < 1e-5) && v.iter().all(|v| (v - 1.0).abs() < 1e-3));
    }
}
