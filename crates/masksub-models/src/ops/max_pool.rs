//! 2-D max pooling with padding and its own backward (PyTorch's `F.max_pool2d`, floor mode).
//!
//! candle 0.11's `max_pool2d` has no padding and no backward when kernel != stride, which the
//! ResNet stem needs (3x3, stride 2, padding 1). The CPU kernels (f32, f64) pick the first
//! maximum of a window in row-major order as PyTorch does, so the gradient goes to the same
//! element on ties; a NaN wins its window (PyTorch propagates NaN). Other devices and dtypes use
//! a composition of strided views and `maximum`, which autograd differentiates (on exact ties it
//! splits the gradient instead of picking one element).

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Window geometry of one pooling op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Pool2d {
    /// Output size of one spatial dimension (floor mode).
    pub fn out_size(&self, n: usize) -> Result<usize> {
        if self.kernel == 0 || self.stride == 0 {
            bail!("max-pool: kernel and stride must be positive");
        }
        if self.padding * 2 > self.kernel {
            bail!(
                "max-pool: padding {} exceeds half the kernel {}",
                self.padding,
                self.kernel
            );
        }
        let padded = n + 2 * self.padding;
        if padded < self.kernel {
            bail!("max-pool: input size {n} is smaller than the kernel");
        }
        Ok((padded - self.kernel) / self.stride + 1)
    }

    /// The input range `[lo, hi)` that window `o` covers along a dimension of size `n` (the
    /// padding clipped off).
    #[inline]
    fn span(&self, o: usize, n: usize) -> (usize, usize) {
        let start = o * self.stride;
        (
            start.saturating_sub(self.padding),
            (start + self.kernel).saturating_sub(self.padding).min(n),
        )
    }

    /// Flat index (within an h x w plane) of the first maximum of output cell (oy, ox), or None
    /// when the window lies entirely in the padding (cannot happen when padding <= kernel / 2).
    #[inline]
    fn argmax<T: Copy + PartialOrd>(
        &self,
        plane: &[T],
        (h, w): (usize, usize),
        (oy, ox): (usize, usize),
    ) -> Option<usize> {
        let ((y0, y1), (x0, x1)) = (self.span(oy, h), self.span(ox, w));
        if y0 >= y1 || x0 >= x1 {
            return None;
        }
        let mut best_i = y0 * w + x0;
        let mut best = plane[best_i];
        for iy in y0..y1 {
            let row = &plane[iy * w..][..x1];
            for (ix, &v) in row.iter().enumerate().skip(x0) {
                // PyTorch's rule: a larger value or a NaN (`v != v`) takes the window.
                #[allow(clippy::eq_op)]
                if v > best || v != v {
                    (best_i, best) = (iy * w + ix, v);
                }
            }
        }
        Some(best_i)
    }
}

struct MaxPoolFwd(Pool2d);
struct MaxPoolBwd(Pool2d);

/// (batch * channels, h, w) of a contiguous NCHW layout.
fn planes(l: &Layout, op: &'static str) -> Result<(usize, usize, usize)> {
    let (b, c, h, w) = l.shape().dims4()?;
    if !l.is_contiguous() {
        bail!("{op}: input must be contiguous");
    }
    Ok((b * c, h, w))
}

fn slice<'a, T: candle_core::WithDType>(s: &'a [T], l: &Layout) -> &'a [T] {
    &s[l.start_offset()..l.start_offset() + l.shape().elem_count()]
}

fn fwd_kernel<T: Copy + PartialOrd + Send + Sync + Default>(
    p: Pool2d,
    x: &[T],
    (n, h, w): (usize, usize, usize),
) -> Result<(Vec<T>, usize, usize)> {
    let (oh, ow) = (p.out_size(h)?, p.out_size(w)?);
    let mut y = vec![T::default(); n * oh * ow];
    y.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(y, plane)| {
            for oy in 0..oh {
                for ox in 0..ow {
                    if let Some(i) = p.argmax(plane, (h, w), (oy, ox)) {
                        y[oy * ow + ox] = plane[i];
                    }
                }
            }
        });
    Ok((y, oh, ow))
}

fn bwd_kernel<T>(p: Pool2d, x: &[T], g: &[T], (n, h, w): (usize, usize, usize)) -> Result<Vec<T>>
where
    T: Copy + PartialOrd + Send + Sync + Default + std::ops::AddAssign,
{
    let (oh, ow) = (p.out_size(h)?, p.out_size(w)?);
    if g.len() != n * oh * ow {
        bail!(
            "max-pool-bwd: gradient has {} elements, expected {}",
            g.len(),
            n * oh * ow
        );
    }
    let mut dx = vec![T::default(); n * h * w];
    dx.par_chunks_mut(h * w)
        .zip(x.par_chunks(h * w).zip(g.par_chunks(oh * ow)))
        .for_each(|(dx, (plane, g))| {
            for oy in 0..oh {
                for ox in 0..ow {
                    if let Some(i) = p.argmax(plane, (h, w), (oy, ox)) {
                        dx[i] += g[oy * ow + ox];
                    }
                }
            }
        });
    Ok(dx)
}

impl CustomOp1 for MaxPoolFwd {
    fn name(&self) -> &'static str {
        "max-pool2d"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, _, _) = l.shape().dims4()?;
        let dims = planes(l, self.name())?;
        let (storage, oh, ow) = match s {
            CpuStorage::F32(v) => {
                let (y, oh, ow) = fwd_kernel(self.0, slice(v, l), dims)?;
                (CpuStorage::F32(y), oh, ow)
            }
            CpuStorage::F64(v) => {
                let (y, oh, ow) = fwd_kernel(self.0, slice(v, l), dims)?;
                (CpuStorage::F64(y), oh, ow)
            }
            _ => bail!("max-pool2d: only f32 and f64 on the CPU"),
        };
        Ok((storage, Shape::from((b, c, oh, ow))))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.detach().contiguous()?;
        Ok(Some(
            arg.detach().apply_op2_no_bwd(&g, &MaxPoolBwd(self.0))?,
        ))
    }
}

impl CustomOp2 for MaxPoolBwd {
    fn name(&self) -> &'static str {
        "max-pool2d-bwd"
    }
    /// d/dx: each output gradient goes to the first maximum of its window.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = planes(l1, self.name())?;
        if !l2.is_contiguous() {
            bail!("max-pool2d-bwd: gradient must be contiguous");
        }
        let dx = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                CpuStorage::F32(bwd_kernel(self.0, slice(x, l1), slice(g, l2), dims)?)
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                CpuStorage::F64(bwd_kernel(self.0, slice(x, l1), slice(g, l2), dims)?)
            }
            _ => bail!("max-pool2d-bwd: only f32 and f64 on the CPU, both the same"),
        };
        Ok((dx, l1.shape().clone()))
    }
}

/// Max pooling of an NCHW tensor with a square `kernel`, `stride` and `padding` (padded cells
/// never win), floor mode, as `torch.nn.MaxPool2d(kernel, stride, padding)`.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let p = Pool2d {
        kernel,
        stride,
        padding,
    };
    x.dims4()?;
    if x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) {
        return x.contiguous()?.apply_op1(MaxPoolFwd(p));
    }
    max_pool2d_composed(x, p)
}

/// The composed fallback: the element-wise maximum of the k*k strided views of the input padded
/// with -inf. Every op in it has a backward on every device.
pub fn max_pool2d_composed(x: &Tensor, p: Pool2d) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = (p.out_size(h)?, p.out_size(w)?);
    // Pad so that every view `start .. start + stride * out` is in range (extra rows/cols at the
    // end are -inf too and never read as a maximum).
    let xp = pad_neg_inf(
        x,
        2,
        p.padding,
        p.kernel - 1 + p.stride * oh - h - p.padding,
    )?;
    let xp = pad_neg_inf(
        &xp,
        3,
        p.padding,
        p.kernel - 1 + p.stride * ow - w - p.padding,
    )?;
    let (b, c, _, _) = xp.dims4()?;
    let mut out: Option<Tensor> = None;
    for ky in 0..p.kernel {
        let rows = xp
            .narrow(2, ky, p.stride * oh)?
            .reshape((b, c, oh, p.stride, xp.dim(3)?))?
            .narrow(3, 0, 1)?
            .squeeze(3)?;
        for kx in 0..p.kernel {
            let view = rows
                .narrow(3, kx, p.stride * ow)?
                .reshape((b, c, oh, ow, p.stride))?
                .narrow(4, 0, 1)?
                .squeeze(4)?;
            out = Some(match out {
                None => view,
                Some(m) => m.maximum(&view)?,
            });
        }
    }
    match out {
        Some(o) => Ok(o),
        None => bail!("max-pool: empty kernel"),
    }
}

/// Concatenate `before` and `after` slices of -inf along `dim`.
fn pad_neg_inf(x: &Tensor, dim: usize, before: usize, after: usize) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(3);
    let side = |n: usize| -> Result<Option<Tensor>> {
        if n == 0 {
            return Ok(None);
        }
        let mut shape = x.dims().to_vec();
        shape[dim] = n;
        Ok(Some(
            Tensor::full(f32::NEG_INFINITY, shape, x.device())?.to_dtype(x.dtype())?,
        ))
    };
    let (a, z) = (side(before)?, side(after)?);
    if let Some(a) = a {
        parts.push(a);
    }
    parts.push(x.clone());
    if let Some(z) = z {
        parts.push(z);
    }
    Tensor::cat(&parts, dim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::*;
    use candle_core::{Device, Var};

    const STEM: Pool2d = Pool2d {
        kernel: 3,
        stride: 2,
        padding: 1,
    };

    fn pool(x: &Tensor) -> Tensor {
        max_pool2d(x, 3, 2, 1).unwrap()
    }

    #[test]
    fn forward_matches_a_direct_definition_and_the_composed_version() {
        // 7x8: odd and even sizes; output (4, 4).
        let x = randn(&[2, 3, 7, 8], 11);
        let y = pool(&x);
        assert_eq!(y.dims(), &[2, 3, 4, 4]);
        let flat = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let yf = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for n in 0..6 {
            for oy in 0..4 {
                for ox in 0..4 {
                    let mut m = f32::NEG_INFINITY;
                    for iy in (2 * oy as i64 - 1)..=(2 * oy as i64 + 1) {
                        for ix in (2 * ox as i64 - 1)..=(2 * ox as i64 + 1) {
                            if (0..7).contains(&iy) && (0..8).contains(&ix) {
                                m = m.max(flat[n * 56 + iy as usize * 8 + ix as usize]);
                            }
                        }
                    }
                    assert_eq!(yf[n * 16 + oy * 4 + ox], m);
                }
            }
        }
        let c = max_pool2d_composed(&x, STEM).unwrap();
        assert_eq!(max_abs_diff(&y, &c), 0.0);
    }

    #[test]
    fn backward_matches_finite_differences_in_f64() {
        // Distinct values so the maxima are unique and the function is locally linear.
        let n = 2 * 2 * 6 * 5;
        let mut v: Vec<f64> = (0..n).map(|i| ((i * 37) % n) as f64 * 0.01).collect();
        v.reverse();
        let x = Tensor::from_vec(v.clone(), (2, 2, 6, 5), &Device::Cpu).unwrap();
        let w = randn(&[2, 2, 3, 3], 3).to_dtype(DType::F64).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let loss = (pool(xv.as_tensor()) * &w).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        let g = g
            .get(xv.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let f = |v: &[f64]| {
            let t = Tensor::from_slice(v, (2, 2, 6, 5), &Device::Cpu).unwrap();
            (pool(&t) * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let h = 1e-4; // values are 0.01 apart: a step of 1e-4 never changes an argmax
        for i in 0..n {
            let (mut a, mut b) = (v.clone(), v.clone());
            a[i] += h;
            b[i] -= h;
            let fd = (f(&a) - f(&b)) / (2.0 * h);
            assert!((fd - g[i]).abs() < 1e-8, "element {i}: fd {fd} vs {}", g[i]);
        }
        assert!(g.iter().any(|&d| d != 0.0));
    }

    #[test]
    fn backward_matches_the_composed_version_and_routes_ties_to_the_first_maximum() {
        let x = (randn(&[3, 4, 9, 10], 21) * 2.0).unwrap();
        let gw = randn(&[3, 4, 5, 5], 22);
        let grad = |fused: bool| {
            grad_of(
                |t| {
                    if fused {
                        pool(t)
                    } else {
                        max_pool2d_composed(t, STEM).unwrap()
                    }
                },
                &x,
                &gw,
            )
        };
        assert!(max_abs_diff(&grad(true), &grad(false)) < 1e-6);

        // A window of equal values (ReLU zeros): the whole gradient goes to its first element.
        let z = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let g = grad_of(
            |t| max_pool2d(t, 2, 2, 0).unwrap(),
            &z,
            &Tensor::ones((1, 1, 1, 1), DType::F32, &Device::Cpu).unwrap(),
        );
        assert_eq!(
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn nan_propagates_and_bad_geometry_is_an_error() {
        let mut v = vec![0.5f32; 16];
        v[0] = f32::NAN; // only window (0, 0) covers pixel (0, 0)
        let x = Tensor::from_vec(v, (1, 1, 4, 4), &Device::Cpu).unwrap();
        let y = pool(&x).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(y[0].is_nan() && y[3] == 0.5, "{y:?}");
        let small = Tensor::zeros((1, 1, 1, 1), DType::F32, &Device::Cpu).unwrap();
        assert!(max_pool2d(&small, 3, 2, 0).is_err());
        assert!(max_pool2d(&small, 3, 2, 2).is_err(), "padding > kernel / 2");
    }
}
