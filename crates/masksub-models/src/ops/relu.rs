//! ReLU and the residual `relu(a + b)` with fused f32 CPU forward and backward.
//!
//! candle's ReLU backward is five tensor passes (zeros, compare, cast, multiply, add); here the
//! backward is one pass that keeps the gradient where the output is positive. Other devices
//! and dtypes use candle's ops.

use super::{f32_slice, use_fused};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per rayon task.
const CHUNK: usize = 4096;

struct Relu;
struct AddRelu;
/// g where y > 0, else 0 (the gradient through a ReLU whose output is y).
struct ReluGrad;

fn map1(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &x)| *y = f(x)));
    y
}

fn map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = vec![0f32; a.len()];
    y.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(y, (a, b))| {
            y.iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(y, (&a, &b))| *y = f(a, b))
        });
    y
}

fn same_shape(l1: &Layout, l2: &Layout, op: &str) -> Result<()> {
    if l1.shape() != l2.shape() {
        bail!("{op}: shapes {:?} and {:?} differ", l1.shape(), l2.shape());
    }
    Ok(())
}

/// The gradient of a ReLU with output `y`: one fused pass on the CPU.
pub(crate) fn relu_backward(grad: &Tensor, y: &Tensor) -> Result<Tensor> {
    let (g, y) = (grad.detach().contiguous()?, y.detach());
    if use_fused(&g) {
        return g.apply_op2_no_bwd(&y.contiguous()?, &ReluGrad);
    }
    let mask = y.gt(0.0)?.to_dtype(g.dtype())?;
    g * mask
}

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu-fused"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        Ok((CpuStorage::F32(map1(x, |v| v.max(0.0))), l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(relu_backward(grad, y)?))
    }
}

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "add-relu-fused"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_shape(l1, l2, self.name())?;
        let (a, b) = (
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
        );
        Ok((
            CpuStorage::F32(map2(a, b, |a, b| (a + b).max(0.0))),
            l1.shape().clone(),
        ))
    }
    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = relu_backward(grad, y)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "relu-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_shape(l1, l2, self.name())?;
        let (g, y) = (
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
        );
        Ok((
            CpuStorage::F32(map2(g, y, |g, y| if y > 0.0 { g } else { 0.0 })),
            l1.shape().clone(),
        ))
    }
}

/// `max(x, 0)`; the gradient at 0 is 0, as PyTorch's.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if use_fused(x) {
        return x.contiguous()?.apply_op1(Relu);
    }
    x.relu()
}

/// `relu(a + b)`: the end of a residual block.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if use_fused(a) && use_fused(b) {
        return a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu);
    }
    (a + b)?.relu()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::*;

    #[test]
    fn values_and_gradients_match_candles_relu() {
        let (a, b) = (randn(&[3, 5, 7, 2], 1), randn(&[3, 5, 7, 2], 2));
        let gw = randn(&[3, 5, 7, 2], 3);
        assert_eq!(max_abs_diff(&relu(&a).unwrap(), &a.relu().unwrap()), 0.0);
        let ours = grad_of(|t| relu(t).unwrap(), &a, &gw);
        let theirs = grad_of(|t| t.relu().unwrap(), &a, &gw);
        assert_eq!(max_abs_diff(&ours, &theirs), 0.0);
        let y = add_relu(&a, &b).unwrap();
        assert_eq!(max_abs_diff(&y, &(&a + &b).unwrap().relu().unwrap()), 0.0);
        // Both inputs get the same gradient: g where a + b > 0.
        let ga = grad_of(|t| add_relu(t, &b).unwrap(), &a, &gw);
        let gb = grad_of(|t| add_relu(&a, t).unwrap(), &b, &gw);
        let want = grad_of(|t| (t + &b).unwrap().relu().unwrap(), &a, &gw);
        assert_eq!(max_abs_diff(&ga, &want), 0.0);
        assert_eq!(max_abs_diff(&gb, &want), 0.0);
        let (ys, gs) = (
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            ga.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        let g = gw.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..ys.len() {
            assert_eq!(gs[i], if ys[i] > 0.0 { g[i] } else { 0.0 });
        }
        assert!(ys.contains(&0.0) && ys.iter().any(|&v| v > 0.0));
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let (a, b) = (randn(&[2, 3], 1), randn(&[3, 2], 2));
        assert!(add_relu(&a, &b).is_err());
    }
}
