//! BatchNorm over (N, H, W) per channel of an NCHW tensor (PyTorch's `F.batch_norm`).
//!
//! Train mode normalizes with the batch's mean and biased variance and back-propagates through
//! them; the fused f32 CPU kernels gather per-channel sums in one sweep (f64, in a fixed order,
//! so results do not depend on the thread count) and apply them in a second. Eval mode is a
//! per-channel affine map from the running statistics. Other devices and dtypes use candle
//! compositions, which autograd differentiates.

use super::use_fused;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result};
use candle_core::{Shape, Tensor};
use rayon::prelude::*;

/// (batch, channels, h * w) of a contiguous NCHW layout and its f32 data.
fn nchw<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<(&'a [f32], Dims)> {
    let (b, c, h, w) = l.shape().dims4()?;
    let x = super::f32_slice(s, l, op)?;
    Ok((x, Dims { b, c, hw: h * w }))
}

#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    c: usize,
    hw: usize,
}

impl Dims {
    fn n(&self) -> usize {
        self.b * self.hw
    }
    /// The `hw` values of channel `c` in sample `b`.
    fn plane<'a>(&self, x: &'a [f32], b: usize, c: usize) -> &'a [f32] {
        let o = (b * self.c + c) * self.hw;
        &x[o..o + self.hw]
    }
}

/// Per channel, sums over (N, H, W) in f64 of the given per-element terms, in one sweep.
fn channel_sums<const K: usize>(
    d: Dims,
    f: impl Fn(usize, usize, &mut [f64; K]) + Sync,
) -> Vec<[f64; K]> {
    (0..d.c)
        .into_par_iter()
        .map(|c| {
            let mut acc = [0f64; K];
            for b in 0..d.b {
                f(b, c, &mut acc);
            }
            acc
        })
        .collect()
}

/// Mean and biased variance of every channel, from one sweep of f64 sums of x and x^2 (f64
/// keeps E[x^2] - E[x]^2 exact to far below f32 resolution for activations).
fn stats(x: &[f32], d: Dims) -> Vec<(f64, f64)> {
    let n = d.n().max(1) as f64;
    channel_sums::<2>(d, |b, c, acc| {
        for &v in d.plane(x, b, c) {
            let v = v as f64;
            acc[0] += v;
            acc[1] += v * v;
        }
    })
    .into_iter()
    .map(|[s, ss]| {
        let mean = s / n;
        (mean, (ss / n - mean * mean).max(0.0))
    })
    .collect()
}

fn rstd(var: f64, eps: f32) -> f64 {
    1.0 / (var + eps as f64).sqrt()
}

/// Per channel: (mean, rstd, sum g, sum g * xhat), from one sweep over x and g.
fn grad_sums(x: &[f32], g: &[f32], d: Dims, eps: f32) -> Vec<[f64; 4]> {
    let n = d.n().max(1) as f64;
    channel_sums::<4>(d, |b, c, acc| {
        for (&xv, &gv) in d.plane(x, b, c).iter().zip(d.plane(g, b, c)) {
            let (xv, gv) = (xv as f64, gv as f64);
            acc[0] += xv;
            acc[1] += xv * xv;
            acc[2] += gv;
            acc[3] += gv * xv;
        }
    })
    .into_iter()
    .map(|[sx, sxx, sg, sgx]| {
        let mean = sx / n;
        let r = rstd((sxx / n - mean * mean).max(0.0), eps);
        // sum g * (x - mean) * r
        [mean, r, sg, (sgx - mean * sg) * r]
    })
    .collect()
}

struct BnStats;
struct BnFwd {
    eps: f32,
    /// Apply a ReLU to the output (conv-bn-relu without a separate pass).
    relu: bool,
}
struct BnBwdInput {
    eps: f32,
}
struct BnBwdParams {
    eps: f32,
}

impl CustomOp1 for BnStats {
    fn name(&self) -> &'static str {
        "batch-norm-stats"
    }
    /// (2, C): row 0 the mean, row 1 the biased variance.
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, d) = nchw(s, l, self.name())?;
        let st = stats(x, d);
        let mut out: Vec<f32> = st.iter().map(|s| s.0 as f32).collect();
        out.extend(st.iter().map(|s| s.1 as f32));
        Ok((CpuStorage::F32(out), Shape::from((2, d.c))))
    }
}

fn check_affine(w: &[f32], b: &[f32], c: usize) -> Result<()> {
    if w.len() != c || b.len() != c {
        bail!(
            "batch-norm: weight/bias of {}/{} for {c} channels",
            w.len(),
            b.len()
        );
    }
    Ok(())
}

impl CustomOp3 for BnFwd {
    fn name(&self) -> &'static str {
        "batch-norm-train"
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
        let (x, d) = nchw(s1, l1, self.name())?;
        let (w, b) = (
            super::f32_slice(s2, l2, self.name())?,
            super::f32_slice(s3, l3, self.name())?,
        );
        check_affine(w, b, d.c)?;
        // y = x * scale + shift per channel.
        let coef: Vec<(f32, f32)> = stats(x, d)
            .iter()
            .enumerate()
            .map(|(c, &(mean, var))| {
                let scale = w[c] as f64 * rstd(var, self.eps);
                (scale as f32, (b[c] as f64 - mean * scale) as f32)
            })
            .collect();
        let mut y = vec![0f32; x.len()];
        let relu = self.relu;
        y.par_chunks_mut(d.hw.max(1))
            .zip(x.par_chunks(d.hw.max(1)))
            .enumerate()
            .for_each(|(i, (y, x))| {
                let (scale, shift) = coef[i % d.c];
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = x * scale + shift;
                }
                if relu {
                    y.iter_mut().for_each(|v| *v = v.max(0.0));
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = if self.relu {
            super::relu::relu_backward(g, res)?
        } else {
            g.detach().contiguous()?
        };
        let (x, w) = (x.detach(), w.detach());
        let dx = x.apply_op3_no_bwd(&w, &g, &BnBwdInput { eps: self.eps })?;
        let dwdb = x.apply_op2_no_bwd(&g, &BnBwdParams { eps: self.eps })?;
        Ok((Some(dx), Some(dwdb.get(0)?), Some(dwdb.get(1)?)))
    }
}

impl CustomOp3 for BnBwdInput {
    fn name(&self) -> &'static str {
        "batch-norm-train-bwd-input"
    }
    /// dx = w * rstd * (g - mean(g) - xhat * mean(g * xhat)), means over (N, H, W).
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, d) = nchw(s1, l1, self.name())?;
        let w = super::f32_slice(s2, l2, self.name())?;
        let g = super::f32_slice(s3, l3, self.name())?;
        if w.len() != d.c || g.len() != x.len() {
            bail!("batch-norm-bwd: weight or gradient does not fit the input");
        }
        let n = d.n().max(1) as f64;
        let sums = grad_sums(x, g, d, self.eps);
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(d.hw.max(1))
            .enumerate()
            .for_each(|(i, dx)| {
                let c = i % d.c;
                let [mean, r, sg, sgx] = sums[c];
                let (x, g) = (&x[i * d.hw..(i + 1) * d.hw], &g[i * d.hw..(i + 1) * d.hw]);
                let k = w[c] as f64 * r;
                let (mg, mgx) = (sg / n, sgx / n);
                for j in 0..d.hw {
                    let xhat = (x[j] as f64 - mean) * r;
                    dx[j] = (k * (g[j] as f64 - mg - xhat * mgx)) as f32;
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

impl CustomOp2 for BnBwdParams {
    fn name(&self) -> &'static str {
        "batch-norm-train-bwd-params"
    }
    /// (2, C): row 0 = sum of g * xhat (dw), row 1 = sum of g (db).
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, d) = nchw(s1, l1, self.name())?;
        let g = super::f32_slice(s2, l2, self.name())?;
        if g.len() != x.len() {
            bail!("batch-norm-bwd: gradient does not fit the input");
        }
        let sums = grad_sums(x, g, d, self.eps);
        let mut out: Vec<f32> = sums.iter().map(|s| s[3] as f32).collect();
        out.extend(sums.iter().map(|s| s[2] as f32));
        Ok((CpuStorage::F32(out), Shape::from((2, d.c))))
    }
}

/// Per-channel mean and biased variance of an NCHW tensor, each of shape (C,), without a
/// gradient (they feed the running statistics).
pub fn channel_stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    x.dims4()?;
    let x = x.detach();
    if use_fused(&x) {
        let s = x.contiguous()?.apply_op1_no_bwd(&BnStats)?;
        return Ok((s.get(0)?, s.get(1)?));
    }
    let mean = x.mean_keepdim((0, 2, 3))?;
    let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim((0, 2, 3))?;
    Ok((mean.flatten_all()?, var.flatten_all()?))
}

/// Train-mode BatchNorm: `(x - mean) / sqrt(var + eps) * weight + bias` with the batch's
/// per-channel mean and biased variance; differentiable in `x`, `weight` and `bias`.
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    bn_train(x, weight, bias, eps, false)
}

/// `relu(batch_norm_train(..))` in one pass each way on the CPU.
pub fn batch_norm_train_relu(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    bn_train(x, weight, bias, eps, true)
}

fn bn_train(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64, relu: bool) -> Result<Tensor> {
    x.dims4()?;
    if use_fused(x) && weight.dtype() == DType::F32 && bias.dtype() == DType::F32 {
        return x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            BnFwd {
                eps: eps as f32,
                relu,
            },
        );
    }
    let y = batch_norm_train_composed(x, weight, bias, eps)?;
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// [`batch_norm_train`] from candle primitives (every device and dtype).
pub fn batch_norm_train_composed(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let c = x.dim(1)?;
    let mean = x.mean_keepdim((0, 2, 3))?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim((0, 2, 3))?;
    let xhat = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xhat.broadcast_mul(&weight.reshape((1, c, 1, 1))?)?
        .broadcast_add(&bias.reshape((1, c, 1, 1))?)
}

/// Eval-mode BatchNorm with given statistics: `x * scale + shift` per channel, with
/// `scale = weight / sqrt(var + eps)` and `shift = bias - mean * scale` (as PyTorch computes it).
pub fn batch_norm_eval(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let c = x.dim(1)?;
    let scale = (weight / (var + eps)?.sqrt()?)?;
    let shift = (bias - (mean * &scale)?)?;
    x.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
        .broadcast_add(&shift.reshape((1, c, 1, 1))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::*;
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_all_three_gradients_match_the_composed_version() {
        let x = ((randn(&[5, 6, 7, 3], 1) * 3.0).unwrap() + 1.5).unwrap();
        let gw = randn(&[5, 6, 7, 3], 2);
        let (w0, b0) = (randn(&[6], 3), randn(&[6], 4));
        let run = |fused: bool| {
            let (xv, wv, bv) = (
                Var::from_tensor(&x).unwrap(),
                Var::from_tensor(&w0).unwrap(),
                Var::from_tensor(&b0).unwrap(),
            );
            let f = if fused {
                batch_norm_train
            } else {
                batch_norm_train_composed
            };
            let y = f(xv.as_tensor(), wv.as_tensor(), bv.as_tensor(), 1e-5).unwrap();
            let g = (&y * &gw).unwrap().sum_all().unwrap().backward().unwrap();
            let get = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
            (y, get(&xv), get(&wv), get(&bv))
        };
        let (a, b) = (run(true), run(false));
        for (what, u, v, tol) in [
            ("y", &a.0, &b.0, 1e-5),
            ("dx", &a.1, &b.1, 1e-4),
            ("dw", &a.2, &b.2, 1e-4),
            ("db", &a.3, &b.3, 1e-4),
        ] {
            let d = max_abs_diff(u, v);
            assert!(d < tol, "{what}: {d}");
        }
        // With the ReLU fused in: the same as a separate ReLU after the composed version.
        let (xv, wv) = (
            Var::from_tensor(&x).unwrap(),
            Var::from_tensor(&w0).unwrap(),
        );
        let y = batch_norm_train_relu(xv.as_tensor(), wv.as_tensor(), &b0, 1e-5).unwrap();
        let g = (&y * &gw).unwrap().sum_all().unwrap().backward().unwrap();
        let (xc, wc) = (
            Var::from_tensor(&x).unwrap(),
            Var::from_tensor(&w0).unwrap(),
        );
        let yc = batch_norm_train_composed(xc.as_tensor(), wc.as_tensor(), &b0, 1e-5)
            .unwrap()
            .relu()
            .unwrap();
        let gc = (&yc * &gw).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_abs_diff(&y, &yc) < 1e-5);
        for (u, v) in [(&xv, &xc), (&wv, &wc)] {
            let d = max_abs_diff(
                g.get(u.as_tensor()).unwrap(),
                gc.get(v.as_tensor()).unwrap(),
            );
            assert!(d < 1e-4, "bn+relu gradient: {d}");
        }
        // The input gradient of a BatchNorm sums to zero per channel (the mean is removed).
        let per_channel = a.1.sum((0, 2, 3)).unwrap().to_vec1::<f32>().unwrap();
        assert!(
            per_channel.iter().all(|s| s.abs() < 1e-4),
            "{per_channel:?}"
        );
    }

    #[test]
    fn composed_backward_matches_finite_differences_in_f64() {
        let x = randn(&[3, 2, 2, 2], 7).to_dtype(DType::F64).unwrap();
        let gw = randn(&[3, 2, 2, 2], 8).to_dtype(DType::F64).unwrap();
        let (w, b) = (
            Tensor::new(&[0.7f64, -1.3], &Device::Cpu).unwrap(),
            Tensor::new(&[0.1f64, 0.2], &Device::Cpu).unwrap(),
        );
        let f = |x: &Tensor| {
            (batch_norm_train(x, &w, &b, 1e-5).unwrap() * &gw)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let xv = Var::from_tensor(&x).unwrap();
        let g = f(xv.as_tensor()).backward().unwrap();
        let g = host64(g.get(xv.as_tensor()).unwrap());
        let v = host64(&x);
        let h = 1e-6;
        for i in 0..v.len() {
            let (mut a, mut c) = (v.clone(), v.clone());
            a[i] += h;
            c[i] -= h;
            let t = |v: &[f64]| {
                f(&Tensor::from_slice(v, x.dims(), &Device::Cpu).unwrap())
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let fd = (t(&a) - t(&c)) / (2.0 * h);
            assert!((fd - g[i]).abs() < 1e-6, "element {i}: fd {fd} vs {}", g[i]);
        }
    }

    fn host64(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    #[test]
    fn stats_are_the_per_channel_mean_and_biased_variance() {
        // Channel 0 holds 1..=8 (mean 4.5, biased var 5.25), channel 1 holds 10 * that.
        let v: Vec<f32> = (0..2)
            .flat_map(|b| {
                (0..2).flat_map(move |c| {
                    (0..4).map(move |i| (b * 4 + i + 1) as f32 * if c == 0 { 1.0 } else { 10.0 })
                })
            })
            .collect();
        let x = Tensor::from_vec(v, (2, 2, 2, 2), &Device::Cpu).unwrap();
        let (m, var) = channel_stats(&x).unwrap();
        assert_eq!(m.to_vec1::<f32>().unwrap(), vec![4.5, 45.0]);
        assert_eq!(var.to_vec1::<f32>().unwrap(), vec![5.25, 525.0]);
        let (m64, v64) = channel_stats(&x.to_dtype(DType::F64).unwrap()).unwrap();
        assert_eq!(m64.to_vec1::<f64>().unwrap(), vec![4.5, 45.0]);
        assert_eq!(v64.to_vec1::<f64>().unwrap(), vec![5.25, 525.0]);
    }

    #[test]
    fn eval_mode_is_the_affine_map_of_the_given_statistics() {
        let x = randn(&[2, 3, 2, 2], 9);
        let dev = &Device::Cpu;
        let mean = Tensor::new(&[0.5f32, -1.0, 0.0], dev).unwrap();
        let var = Tensor::new(&[4.0f32, 1.0, 0.25], dev).unwrap();
        let w = Tensor::new(&[1.0f32, 2.0, -1.0], dev).unwrap();
        let b = Tensor::new(&[0.0f32, 1.0, 3.0], dev).unwrap();
        let y = batch_norm_eval(&x, &mean, &var, &w, &b, 0.0).unwrap();
        let (xs, ys) = (
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        let (m, v, wv, bv) = (
            [0.5, -1.0, 0.0],
            [4.0f32, 1.0, 0.25],
            [1.0, 2.0, -1.0],
            [0.0, 1.0, 3.0],
        );
        for i in 0..xs.len() {
            let c = (i / 4) % 3;
            let want = (xs[i] - m[c]) / v[c].sqrt() * wv[c] + bv[c];
            assert!((ys[i] - want).abs() < 1e-6, "{i}: {} vs {want}", ys[i]);
        }
    }
}
