//! Depthwise 2-D convolution (`groups = channels`, one k x k filter per channel, square
//! kernel, no dilation), as MobileNetV2 uses it: a direct loop per (sample, channel) plane.
//!
//! im2col + GEMM (ops::conv2d) would turn each channel into its own tiny GEMM; candle's grouped
//! conv has no fused CPU backward. Forward and both gradients here run on rayon over planes
//! (input gradient) or channels (weight gradient, summed over the batch in a fixed order, so
//! results do not depend on the thread count). Other devices and dtypes use candle's grouped
//! conv2d.

use super::f32_slice;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geom {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

impl Geom {
    fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Input index of output `o` at kernel offset `off`, if inside the image.
    fn src(&self, o: usize, off: usize, n: usize) -> Option<usize> {
        (o * self.stride + off)
            .checked_sub(self.pad)
            .filter(|&i| i < n)
    }
}

/// y = dwconv(x, w).
struct Fwd(Geom);
/// dL/dx from (dL/dy, w).
struct BackInput(Geom);
/// dL/dw from (x, dL/dy).
struct BackWeight(Geom);

fn forward(g: Geom, x: &[f32], wt: &[f32]) -> Vec<f32> {
    let (oh, ow, kk) = (g.oh(), g.ow(), g.k * g.k);
    let mut out = vec![0f32; g.b * g.c * oh * ow];
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(plane, o)| {
            let ch = plane % g.c;
            let xp = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
            let wp = &wt[ch * kk..(ch + 1) * kk];
            for oy in 0..oh {
                for ky in 0..g.k {
                    let Some(iy) = g.src(oy, ky, g.h) else {
                        continue;
                    };
                    let row = &xp[iy * g.w..(iy + 1) * g.w];
                    let orow = &mut o[oy * ow..(oy + 1) * ow];
                    for kx in 0..g.k {
                        let wv = wp[ky * g.k + kx];
                        for (ox, ov) in orow.iter_mut().enumerate() {
                            if let Some(ix) = g.src(ox, kx, g.w) {
                                *ov += wv * row[ix];
                            }
                        }
                    }
                }
            }
        });
    out
}

fn back_input(g: Geom, dy: &[f32], wt: &[f32]) -> Vec<f32> {
    let (oh, ow, kk) = (g.oh(), g.ow(), g.k * g.k);
    let mut dx = vec![0f32; g.b * g.c * g.h * g.w];
    dx.par_chunks_mut(g.h * g.w)
        .enumerate()
        .for_each(|(plane, d)| {
            let ch = plane % g.c;
            let gp = &dy[plane * oh * ow..(plane + 1) * oh * ow];
            let wp = &wt[ch * kk..(ch + 1) * kk];
            for oy in 0..oh {
                for ky in 0..g.k {
                    let Some(iy) = g.src(oy, ky, g.h) else {
                        continue;
                    };
                    for kx in 0..g.k {
                        let wv = wp[ky * g.k + kx];
                        for ox in 0..ow {
                            if let Some(ix) = g.src(ox, kx, g.w) {
                                d[iy * g.w + ix] += wv * gp[oy * ow + ox];
                            }
                        }
                    }
                }
            }
        });
    dx
}

fn back_weight(g: Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (oh, ow, kk) = (g.oh(), g.ow(), g.k * g.k);
    let mut dw = vec![0f32; g.c * kk];
    dw.par_chunks_mut(kk).enumerate().for_each(|(ch, d)| {
        for bi in 0..g.b {
            let plane = bi * g.c + ch;
            let xp = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
            let gp = &dy[plane * oh * ow..(plane + 1) * oh * ow];
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let mut acc = 0f32;
                    for oy in 0..oh {
                        let Some(iy) = g.src(oy, ky, g.h) else {
                            continue;
                        };
                        for ox in 0..ow {
                            if let Some(ix) = g.src(ox, kx, g.w) {
                                acc += xp[iy * g.w + ix] * gp[oy * ow + ox];
                            }
                        }
                    }
                    d[ky * g.k + kx] += acc;
                }
            }
        }
    });
    dw
}

impl CustomOp2 for Fwd {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = forward(
            g,
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
        );
        Ok((
            CpuStorage::F32(out),
            Shape::from((g.b, g.c, g.oh(), g.ow())),
        ))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2_no_bwd(w, &BackInput(self.0))?;
        let dw = x.apply_op2_no_bwd(&dy, &BackWeight(self.0))?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp2 for BackInput {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-back-input"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = back_input(
            g,
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
        );
        Ok((CpuStorage::F32(out), Shape::from((g.b, g.c, g.h, g.w))))
    }
}

impl CustomOp2 for BackWeight {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-back-weight"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = back_weight(
            g,
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
        );
        Ok((CpuStorage::F32(out), Shape::from((g.c, 1, g.k, g.k))))
    }
}

/// `F.conv2d(x, weight, stride=stride, padding=padding, groups=C)` for NCHW `x` and a
/// (C, 1, k, k) `weight`; differentiable in both.
pub fn depthwise_conv2d(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (co, one, kh, kw) = weight.dims4()?;
    if co != c || one != 1 || kh != kw || stride == 0 {
        bail!(
            "depthwise conv2d: kernel {:?} (stride {stride}) does not fit input {:?}",
            weight.dims(),
            x.dims()
        );
    }
    if h + 2 * padding < kh || w + 2 * padding < kw {
        bail!(
            "depthwise conv2d: input {:?} with padding {padding} is smaller than the kernel {kh}",
            x.dims()
        );
    }
    let fused = x.device().is_cpu() && x.dtype() == DType::F32 && weight.dtype() == DType::F32;
    if !fused {
        return x.conv2d(weight, padding, stride, 1, c);
    }
    let g = Geom {
        b,
        c,
        h,
        w,
        k: kh,
        stride,
        pad: padding,
    };
    x.contiguous()?.apply_op2(&weight.contiguous()?, Fwd(g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        crate::ops::test_util::randn(shape, seed)
    }

    const CASES: &[([usize; 4], usize, usize, usize)] = &[
        ([2, 3, 7, 6], 3, 1, 1),
        ([2, 4, 8, 8], 3, 2, 1),
        ([1, 2, 7, 7], 3, 2, 1),
        ([2, 2, 5, 6], 5, 1, 2),
        ([1, 3, 4, 4], 1, 1, 0),
    ];

    #[test]
    fn forward_matches_candles_grouped_conv() {
        for (i, &(shape, k, s, p)) in CASES.iter().enumerate() {
            let x = randn(&shape, i as u64);
            let w = randn(&[shape[1], 1, k, k], 100 + i as u64);
            let want = x.conv2d(&w, p, s, 1, shape[1]).unwrap();
            let got = depthwise_conv2d(&x, &w, s, p).unwrap();
            assert_eq!(got.dims(), want.dims());
            let d = crate::ops::test_util::max_abs_diff(&got, &want);
            assert!(d < 1e-5, "case {i}: {d}");
        }
    }

    /// Central differences in f64 of L = sum(y * r) against the fused f32 gradients.
    #[test]
    fn gradients_match_finite_differences() {
        for (i, &(shape, k, s, p)) in CASES.iter().enumerate() {
            let x = Var::from_tensor(&randn(&shape, 10 + i as u64)).unwrap();
            let w = Var::from_tensor(&randn(&[shape[1], 1, k, k], 20 + i as u64)).unwrap();
            let y = depthwise_conv2d(x.as_tensor(), w.as_tensor(), s, p).unwrap();
            let r = randn(y.dims(), 30 + i as u64);
            let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let loss64 = |xv: &Tensor, wv: &Tensor| -> f64 {
                let c = shape[1];
                xv.to_dtype(DType::F64)
                    .unwrap()
                    .conv2d(&wv.to_dtype(DType::F64).unwrap(), p, s, 1, c)
                    .unwrap()
                    .mul(&r.to_dtype(DType::F64).unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            for (var, bump_w) in [(&x, false), (&w, true)] {
                let g = grads.get(var.as_tensor()).unwrap();
                let gv = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let base = var
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let eps = 1e-3f32;
                for j in (0..base.len()).step_by(base.len().div_ceil(17)) {
                    let bump = |d: f32| {
                        let mut v = base.clone();
                        v[j] += d;
                        Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap()
                    };
                    let (lp, lm) = if bump_w {
                        (
                            loss64(x.as_tensor(), &bump(eps)),
                            loss64(x.as_tensor(), &bump(-eps)),
                        )
                    } else {
                        (
                            loss64(&bump(eps), w.as_tensor()),
                            loss64(&bump(-eps), w.as_tensor()),
                        )
                    };
                    let fd = (lp - lm) / (2.0 * eps as f64);
                    assert!(
                        (fd - gv[j] as f64).abs() < 2e-3 * (1.0 + fd.abs()),
                        "case {i} grad[{j}]: fd {fd} vs {}",
                        gv[j]
                    );
                }
            }
        }
    }
}
