//! Differentiable building blocks with fused CPU kernels.
//!
//! candle_nn's fused `layer_norm` and `softmax_last_dim` have no backward (they silently drop the
//! gradient), and the primitive compositions are slow on CPU. Each op here has a fused f32 CPU
//! forward AND backward (rayon over rows); other devices and dtypes use a composition of candle
//! primitives, which autograd differentiates.

pub use add::add;
pub use attention::{attention, window_attention};
pub use batch_norm::{
    batch_norm_eval, batch_norm_train, batch_norm_train_composed, batch_norm_train_relu,
    channel_stats,
};
pub use conv::conv2d;
pub use depthwise_conv::depthwise_conv2d;
pub use gelu::{bias_gelu_erf, gelu_erf};
pub use layer_norm::layer_norm;
pub use linear::linear;
pub use max_pool::{max_pool2d, max_pool2d_composed, Pool2d};
pub use permute_tokens::TokenPermutation;
pub use relu::{add_relu, relu};
pub use rowwise::{add_rows, mul_rows};
pub use softmax::{softmax_last_dim, softmax_scaled};

use candle_core::{bail, CpuStorage, Layout, Result, Tensor};

mod add;
mod attention;
mod batch_norm;
mod conv;
mod depthwise_conv;
mod fast_math;
mod gelu;
mod layer_norm;
mod linear;
mod max_pool;
mod permute_tokens;
mod relu;
mod rowwise;
mod softmax;

/// Rows per rayon task: keeps tasks large enough that scheduling is noise.
const MIN_ROWS_PER_TASK: usize = 16;

/// Rows per partial sum in [`col_sums`]; fixed so the summation order never depends on threads.
const ROWS_PER_PARTIAL: usize = 64;

/// sum over rows r of f(r) (each call adds its row's contribution into a k-vector).
/// Partial sums over fixed row chunks run in parallel and are added in chunk order, so the
/// result is bitwise reproducible whatever the thread count or scheduling (a resumed run
/// must retrace the uninterrupted one).
fn col_sums(rows: usize, k: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    let partials: Vec<Vec<f32>> = (0..rows.div_ceil(ROWS_PER_PARTIAL))
        .into_par_iter()
        .map(|c| {
            let mut acc = vec![0f32; k];
            for r in c * ROWS_PER_PARTIAL..((c + 1) * ROWS_PER_PARTIAL).min(rows) {
                f(r, &mut acc);
            }
            acc
        })
        .collect();
    let mut out = vec![0f32; k];
    for p in partials {
        out.iter_mut().zip(p).for_each(|(o, p)| *o += p);
    }
    out
}

/// The contiguous f32 slice behind a CPU storage + layout.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// An output buffer of `n` f32 that `fill` writes completely, without zeroing it first (a
/// zeroing pass costs as much memory traffic as an elementwise kernel's write).
///
/// # Safety
/// `fill` must write every element of the slice it is given.
unsafe fn filled_vec(n: usize, fill: impl FnOnce(&mut [std::mem::MaybeUninit<f32>])) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the caller's contract: all n elements were written.
    unsafe { v.set_len(n) };
    v
}

/// Whether the fused CPU kernel applies.
fn use_fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

#[cfg(test)]
pub(crate) mod test_util {
    use candle_core::{Device, Tensor, Var};
    use rand::{Rng, SeedableRng};

    pub fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Gradient of sum(f(x) * w) for a fixed random w, w.r.t. x.
    pub fn grad_of(f: impl Fn(&Tensor) -> Tensor, x: &Tensor, w: &Tensor) -> Tensor {
        let v = Var::from_tensor(x).unwrap();
        let loss = (f(v.as_tensor()) * w).unwrap().sum_all().unwrap();
        loss.backward().unwrap().get(v.as_tensor()).unwrap().clone()
    }
}
