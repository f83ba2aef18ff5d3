//! Fused attention straight from the qkv projection: out = softmax(scale * q k^T [+ bias]) v,
//! per window and head. Swin's windows carry an additive bias; ViT's global attention is the
//! same kernel with one window of all tokens and no bias ([`attention`]).
//!
//! Swin runs B * num_windows * heads tiny attentions (49 x 49); as separate candle ops that is
//! thousands of small GEMM calls and several passes over the N x N scores. Here one task per
//! window keeps S (N x N) in cache, reads q/k/v from the (BW, N, 3C) qkv rows directly and writes
//! (BW, N, C) as the projection takes it (no permute copies); the per-head products go through
//! gemm's kernels on strided views of those rows (a hand loop reached half gemm's rate). The backward recomputes the
//! softmax (flash-style: the scores are never stored) and returns d_qkv and d_bias; d_bias is
//! summed over windows in fixed chunks, so it is bitwise reproducible.

use super::fast_math::exp;
use super::{f32_slice, use_fused};
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D,
};
use rayon::prelude::*;

/// Windows per partial d_bias sum (fixed: the summation order never depends on threads).
const WINDOWS_PER_PARTIAL: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Dims {
    /// windows in the batch (B * nW)
    bw: usize,
    /// tokens per window
    n: usize,
    heads: usize,
    head_dim: usize,
    /// bias groups: bias[bw % groups]; unused without a bias
    groups: usize,
}

impl Dims {
    fn c(&self) -> usize {
        self.heads * self.head_dim
    }
}

struct AttnFwd {
    d: Dims,
    scale: f32,
}
struct AttnBwd {
    d: Dims,
    scale: f32,
}

/// Dot product with 8 independent accumulators, so it vectorizes (a plain f32 sum is serial).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Sum with 8 independent accumulators (vectorizes).
#[inline(always)]
fn lane_sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let c = a.chunks_exact(8);
    let tail: f32 = c.remainder().iter().sum();
    for x in c {
        for l in 0..8 {
            acc[l] += x[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// A strided matrix view: element (r, c) at `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    fn new(data: &'a [f32], rs: usize, cs: usize) -> Self {
        Self { data, rs, cs }
    }
    /// Whether a rows x cols view fits inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// dst (m x n, row stride `dst_rs`) = beta * lhs (m x k) · rhs (k x n), through gemm's
/// register-blocked kernels on strided views: q/k/v are read in place from the qkv rows.
#[allow(clippy::too_many_arguments)]
fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    lhs: View,
    rhs: View,
    beta: f32,
) {
    assert!(
        lhs.fits(m, k) && rhs.fits(k, n) && (m == 0 || n == 0 || (m - 1) * dst_rs + n <= dst.len()),
        "attention: a strided view runs past its buffer"
    );
    // SAFETY: the assert above keeps every index gemm touches inside the three slices; dst is
    // borrowed mutably, so it aliases neither input; gemm runs on this thread (no Parallelism).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            false,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            0.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Softmax probabilities of window `w`, head `h` into `p` (N x N, row-major).
#[inline(always)]
fn probs(
    d: &Dims,
    scale: f32,
    qkv: &[f32],
    bias: Option<&[f32]>,
    w: usize,
    h: usize,
    p: &mut [f32],
) {
    let (n, hd, c) = (d.n, d.head_dim, d.c());
    let rows = &qkv[w * n * 3 * c..(w + 1) * n * 3 * c];
    let bias = bias.map(|b| {
        let g = w % d.groups;
        &b[(g * d.heads + h) * n * n..(g * d.heads + h + 1) * n * n]
    });
    // S = scale Q K^T: Q rows at column h*hd, K^T read as K with strides swapped.
    let q = View::new(&rows[h * hd..], 3 * c, 1);
    let kt = View::new(&rows[c + h * hd..], 1, 3 * c);
    mm(n, n, hd, p, n, q, kt, scale);
    for i in 0..n {
        let pi = &mut p[i * n..(i + 1) * n];
        if let Some(b) = bias {
            pi.iter_mut()
                .zip(&b[i * n..(i + 1) * n])
                .for_each(|(v, b)| *v += b);
        }
        let max = pi.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // exp in its own loop and the sum with lane accumulators: both vectorize.
        pi.iter_mut().for_each(|v| *v = exp(*v - max));
        let inv = 1.0 / lane_sum(pi);
        pi.iter_mut().for_each(|v| *v *= inv);
    }
}

fn check(d: &Dims, qkv: &Layout, bias: Option<&Layout>) -> Result<()> {
    let (bw, n, c3) = qkv.shape().dims3()?;
    let want = [d.groups, d.heads, d.n, d.n];
    if (bw, n, c3) != (d.bw, d.n, 3 * d.c()) || bias.is_some_and(|b| b.shape().dims() != want) {
        bail!(
            "attention: qkv {:?} / bias {:?} do not fit {d:?}",
            qkv.shape(),
            bias.map(|b| b.shape())
        );
    }
    Ok(())
}

/// The forward kernel: one task per window, (BW, N, C) out.
fn fwd_kernel(d: &Dims, scale: f32, qkv: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (n, c) = (d.n, d.c());
    let mut out = vec![0f32; d.bw * n * c];
    out.par_chunks_mut(n * c).enumerate().for_each_init(
        || vec![0f32; n * n],
        |p, (w, o)| simd::fwd_window(d, scale, qkv, bias, w, o, p),
    );
    out
}

/// Window `w`'s output rows `o` (N x C).
#[inline(always)]
fn fwd_window(
    d: &Dims,
    scale: f32,
    qkv: &[f32],
    bias: Option<&[f32]>,
    w: usize,
    o: &mut [f32],
    p: &mut [f32],
) {
    let (n, hd, c) = (d.n, d.head_dim, d.c());
    let rows = &qkv[w * n * 3 * c..(w + 1) * n * 3 * c];
    for h in 0..d.heads {
        probs(d, scale, qkv, bias, w, h, p);
        // O_h = P V, written into the head's columns of the (N, C) output rows.
        let v = View::new(&rows[2 * c + h * hd..], 3 * c, 1);
        mm(n, hd, n, &mut o[h * hd..], c, View::new(p, n, 1), v, 1.0);
    }
}

/// The per-window kernels built for AVX-512 / AVX2 + FMA when the CPU has them (the crate
/// targets baseline x86-64, where these loops only get 4-wide SSE). Same operations in the
/// same order (no FMA contraction), so every path gives the same bits.
mod simd {
    use super::Dims;
    use masksub_simd::simd_kernel;

    simd_kernel! {
        pub(super) fn fwd_window(
            d: &Dims,
            scale: f32,
            qkv: &[f32],
            bias: Option<&[f32]>,
            w: usize,
            o: &mut [f32],
            p: &mut [f32],
        ) {
            super::fwd_window(d, scale, qkv, bias, w, o, p)
        }
    }

    simd_kernel! {
        #[allow(clippy::too_many_arguments)]
        pub(super) fn bwd_window(
            d: &Dims,
            scale: f32,
            qkv: &[f32],
            bias: Option<&[f32]>,
            grad: &[f32],
            w: usize,
            dq: &mut [f32],
            dbias: Option<&mut [f32]>,
            p: &mut [f32],
            ds: &mut [f32],
        ) {
            super::bwd_window(d, scale, qkv, bias, grad, w, dq, dbias, p, ds)
        }
    }
}

/// Window `w`'s d_qkv rows (`dq`, N x 3C), adding its d_bias into `dbias` when there is a bias.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn bwd_window(
    d: &Dims,
    scale: f32,
    qkv: &[f32],
    bias: Option<&[f32]>,
    grad: &[f32],
    w: usize,
    dq: &mut [f32],
    mut dbias: Option<&mut [f32]>,
    p: &mut [f32],
    ds: &mut [f32],
) {
    let (n, hd, c) = (d.n, d.head_dim, d.c());
    let rows = &qkv[w * n * 3 * c..(w + 1) * n * 3 * c];
    let go = &grad[w * n * c..(w + 1) * n * c];
    let gi = w % d.groups.max(1);
    let ds = &mut ds[..n * n];
    for h in 0..d.heads {
        probs(d, scale, qkv, bias, w, h, p);
        let (qo, ko, vo) = (h * hd, c + h * hd, 2 * c + h * hd);
        let head = |off: usize| View::new(&rows[off..], 3 * c, 1);
        let head_t = |off: usize| View::new(&rows[off..], 1, 3 * c);
        let d_o = View::new(&go[h * hd..], c, 1);
        // dV = P^T dO; dP = dO V^T; dS = P * (dP - rowsum(dP * P)).
        mm(n, hd, n, &mut dq[vo..], 3 * c, View::new(p, 1, n), d_o, 1.0);
        mm(n, n, hd, ds, n, d_o, head_t(vo), 1.0);
        for (dsi, pi) in ds.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
            let rowdot = dot(dsi, pi);
            dsi.iter_mut()
                .zip(pi)
                .for_each(|(s, &pij)| *s = pij * (*s - rowdot));
        }
        if let Some(dbias) = dbias.as_deref_mut() {
            let db = &mut dbias[(gi * d.heads + h) * n * n..][..n * n];
            db.iter_mut().zip(ds.iter()).for_each(|(a, b)| *a += b);
        }
        // dQ = scale dS K; dK = scale dS^T Q.
        let dsv = View::new(ds, n, 1);
        let dst = View::new(ds, 1, n);
        mm(n, hd, n, &mut dq[qo..], 3 * c, dsv, head(ko), scale);
        mm(n, hd, n, &mut dq[ko..], 3 * c, dst, head(qo), scale);
    }
}

impl CustomOp2 for AttnFwd {
    fn name(&self) -> &'static str {
        "window-attention"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.d;
        check(&d, l1, Some(l2))?;
        let (qkv, bias) = (
            f32_slice(s1, l1, self.name())?,
            f32_slice(s2, l2, self.name())?,
        );
        let out = fwd_kernel(&d, self.scale, qkv, Some(bias));
        Ok((CpuStorage::F32(out), Shape::from((d.bw, d.n, d.c()))))
    }
    fn bwd(
        &self,
        qkv: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let both = qkv.detach().apply_op3_no_bwd(
            &bias.detach(),
            &g.detach().contiguous()?,
            &AttnBwd {
                d: self.d,
                scale: self.scale,
            },
        )?;
        let n1 = qkv.elem_count();
        let dqkv = both.narrow(0, 0, n1)?.reshape(qkv.shape())?;
        let dbias = both
            .narrow(0, n1, bias.elem_count())?
            .reshape(bias.shape())?;
        Ok((Some(dqkv), Some(dbias)))
    }
}

impl CustomOp3 for AttnBwd {
    fn name(&self) -> &'static str {
        "window-attention-bwd"
    }
    /// Returns d_qkv and d_bias flattened one after the other.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.d;
        check(&d, l1, Some(l2))?;
        let qkv = f32_slice(s1, l1, self.name())?;
        let bias = f32_slice(s2, l2, self.name())?;
        let grad = f32_slice(s3, l3, self.name())?;
        let (n, c) = (d.n, d.c());
        let nb = bias.len();
        let mut dqkv = vec![0f32; qkv.len()];
        let partials: Vec<Vec<f32>> = dqkv
            .par_chunks_mut(WINDOWS_PER_PARTIAL * n * 3 * c)
            .enumerate()
            .map(|(chunk, dq_chunk)| {
                let mut dbias = vec![0f32; nb];
                let mut p = vec![0f32; n * n];
                let mut ds = vec![0f32; n * n];
                for (k, dq) in dq_chunk.chunks_mut(n * 3 * c).enumerate() {
                    let w = chunk * WINDOWS_PER_PARTIAL + k;
                    let db = Some(dbias.as_mut_slice());
                    simd::bwd_window(
                        &d,
                        self.scale,
                        qkv,
                        Some(bias),
                        grad,
                        w,
                        dq,
                        db,
                        &mut p,
                        &mut ds,
                    );
                }
                dbias
            })
            .collect();
        let mut out = dqkv;
        let mut dbias = vec![0f32; nb];
        for part in partials {
            dbias.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        out.extend_from_slice(&dbias);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// Bias-free attention (ViT): one window of all tokens.
struct GlobalFwd {
    d: Dims,
    scale: f32,
}
struct GlobalBwd {
    d: Dims,
    scale: f32,
}

impl CustomOp1 for GlobalFwd {
    fn name(&self) -> &'static str {
        "attention"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        check(&self.d, l, None)?;
        let out = fwd_kernel(&self.d, self.scale, f32_slice(s, l, self.name())?, None);
        Ok((
            CpuStorage::F32(out),
            Shape::from((self.d.bw, self.d.n, self.d.c())),
        ))
    }
    fn bwd(&self, qkv: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let bwd = GlobalBwd {
            d: self.d,
            scale: self.scale,
        };
        Ok(Some(
            qkv.detach()
                .apply_op2_no_bwd(&g.detach().contiguous()?, &bwd)?,
        ))
    }
}

impl CustomOp2 for GlobalBwd {
    fn name(&self) -> &'static str {
        "attention-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.d;
        check(&d, l1, None)?;
        let qkv = f32_slice(s1, l1, self.name())?;
        let grad = f32_slice(s2, l2, self.name())?;
        let (n, c) = (d.n, d.c());
        let mut dqkv = vec![0f32; qkv.len()];
        // No d_bias to sum: one task per window, each writes only its own rows.
        dqkv.par_chunks_mut(n * 3 * c).enumerate().for_each_init(
            || (vec![0f32; n * n], vec![0f32; n * n]),
            |(p, ds), (w, dq)| {
                simd::bwd_window(&d, self.scale, qkv, None, grad, w, dq, None, p, ds)
            },
        );
        Ok((CpuStorage::F32(dqkv), l1.shape().clone()))
    }
}

/// softmax(scale * q k^T) v over all N tokens for `qkv` (B, N, 3C) laid out [q | k | v] (timm's
/// qkv Linear output), split into `heads` heads. Returns (B, N, C), heads concatenated, read
/// and written in place so the head split costs no permute copies.
pub fn attention(qkv: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    let (b, n, c3) = qkv.dims3()?;
    if heads == 0 || c3 % (3 * heads) != 0 {
        bail!(
            "attention: qkv {:?} does not split into {heads} heads",
            qkv.dims()
        );
    }
    let c = c3 / 3;
    let d = Dims {
        bw: b,
        n,
        heads,
        head_dim: c / heads,
        groups: 1,
    };
    if use_fused(qkv) {
        return qkv.contiguous()?.apply_op1(GlobalFwd {
            d,
            scale: scale as f32,
        });
    }
    // Composed fallback (other devices / dtypes).
    let (q, k, v) = split_heads(qkv, heads)?;
    let p = softmax_rows(&(q.matmul(&k.t()?)? * scale)?)?;
    p.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))
}

/// q, k, v as contiguous (B, heads, N, hd).
fn split_heads(qkv: &Tensor, heads: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, n, c3) = qkv.dims3()?;
    let t = qkv
        .reshape((b, n, 3, heads, c3 / 3 / heads))?
        .permute((2, 0, 3, 1, 4))?;
    Ok((
        t.get(0)?.contiguous()?,
        t.get(1)?.contiguous()?,
        t.get(2)?.contiguous()?,
    ))
}

fn softmax_rows(s: &Tensor) -> Result<Tensor> {
    let max = s.max_keepdim(D::Minus1)?;
    let e = s.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// softmax(scale * q k^T + bias) v for `qkv` (BW, N, 3C) laid out [q | k | v], each split into
/// `heads` heads (timm's qkv Linear output), and `bias` (G, heads, N, N) added to window w's
/// scores as bias[w % G]. Returns (BW, N, C), heads concatenated. Differentiable in both inputs.
pub fn window_attention(qkv: &Tensor, bias: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    let (bw, n, c3) = qkv.dims3()?;
    let (groups, bh, bn, bn2) = bias.dims4()?;
    if c3 % (3 * heads.max(1)) != 0 || bh != heads || bn != n || bn2 != n || bw % groups != 0 {
        bail!(
            "window attention: qkv {:?}, bias {:?}, {heads} heads do not fit",
            qkv.dims(),
            bias.dims()
        );
    }
    let c = c3 / 3;
    let d = Dims {
        bw,
        n,
        heads,
        head_dim: c / heads,
        groups,
    };
    if use_fused(qkv) && bias.dtype() == qkv.dtype() {
        return qkv.contiguous()?.apply_op2(
            &bias.contiguous()?,
            AttnFwd {
                d,
                scale: scale as f32,
            },
        );
    }
    // Composed fallback (other devices / dtypes).
    let (q, k, v) = split_heads(qkv, heads)?;
    let s = (q.matmul(&k.t()?)? * scale)?
        .reshape((bw / groups, groups, heads, n, n))?
        .broadcast_add(bias)?
        .reshape((bw, heads, n, n))?;
    softmax_rows(&s)?
        .matmul(&v)?
        .transpose(1, 2)?
        .reshape((bw, n, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::*;
    use candle_core::Var;

    fn composed(qkv: &Tensor, bias: &Tensor, heads: usize, scale: f64) -> Tensor {
        let (bw, n, c3) = qkv.dims3().unwrap();
        let (g, ..) = bias.dims4().unwrap();
        let hd = c3 / 3 / heads;
        let t = qkv
            .reshape((bw, n, 3, heads, hd))
            .unwrap()
            .permute((2, 0, 3, 1, 4))
            .unwrap();
        let q = t.get(0).unwrap().contiguous().unwrap();
        let k = t.get(1).unwrap().contiguous().unwrap();
        let v = t.get(2).unwrap().contiguous().unwrap();
        let s = (q.matmul(&k.t().unwrap()).unwrap() * scale)
            .unwrap()
            .reshape((bw / g, g, heads, n, n))
            .unwrap()
            .broadcast_add(bias)
            .unwrap()
            .reshape((bw, heads, n, n))
            .unwrap();
        let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
        p.matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((bw, n, c3 / 3))
            .unwrap()
    }

    #[test]
    fn matches_composed_attention_values_and_gradients() {
        // 20 windows (more than one partial chunk), 2 bias groups, 3 heads of 4, 5 tokens.
        let (bw, n, heads, hd, g) = (20, 5, 3, 4, 2);
        let qkv0 = randn(&[bw, n, 3 * heads * hd], 1);
        let bias0 = randn(&[g, heads, n, n], 2);
        let w = randn(&[bw, n, heads * hd], 3);
        let run = |fused: bool| {
            let (qkv, bias) = (
                Var::from_tensor(&qkv0).unwrap(),
                Var::from_tensor(&bias0).unwrap(),
            );
            let y = if fused {
                window_attention(qkv.as_tensor(), bias.as_tensor(), heads, 0.5).unwrap()
            } else {
                composed(qkv.as_tensor(), bias.as_tensor(), heads, 0.5)
            };
            let gs = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            (
                y,
                gs.get(qkv.as_tensor()).unwrap().clone(),
                gs.get(bias.as_tensor()).unwrap().clone(),
            )
        };
        let (a, b) = (run(true), run(false));
        assert!(
            max_abs_diff(&a.0, &b.0) < 1e-5,
            "out {}",
            max_abs_diff(&a.0, &b.0)
        );
        assert!(
            max_abs_diff(&a.1, &b.1) < 1e-4,
            "dqkv {}",
            max_abs_diff(&a.1, &b.1)
        );
        assert!(
            max_abs_diff(&a.2, &b.2) < 1e-4,
            "dbias {}",
            max_abs_diff(&a.2, &b.2)
        );
        // Gradients are not trivially zero.
        assert!(max_abs_diff(&a.2, &a.2.zeros_like().unwrap()) > 1e-2);
    }

    /// ViT's attention as timm composes it: per-head q k^T, softmax, v.
    fn composed_global(qkv: &Tensor, heads: usize, scale: f64) -> Tensor {
        let (b, n, c3) = qkv.dims3().unwrap();
        let t = qkv
            .reshape((b, n, 3, heads, c3 / 3 / heads))
            .unwrap()
            .permute((2, 0, 3, 1, 4))
            .unwrap();
        let q = t.get(0).unwrap().contiguous().unwrap();
        let k = t.get(1).unwrap().contiguous().unwrap();
        let v = t.get(2).unwrap().contiguous().unwrap();
        let s = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        candle_nn::ops::softmax(&s, D::Minus1)
            .unwrap()
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, n, c3 / 3))
            .unwrap()
    }

    fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
        let scale = max_abs_diff(b, &b.zeros_like().unwrap());
        max_abs_diff(a, b) / scale
    }

    #[test]
    fn global_attention_matches_composed_values_and_gradients() {
        // 3 images, 2 heads of 12, 17 tokens (odd: exercises the dot-product tails).
        let (b, n, heads, hd) = (3, 17, 2, 12);
        let qkv0 = randn(&[b, n, 3 * heads * hd], 4);
        let w = randn(&[b, n, heads * hd], 5);
        let scale = (hd as f64).powf(-0.5);
        let fused = |x: &Tensor| attention(x, heads, scale).unwrap();
        let comp = |x: &Tensor| composed_global(x, heads, scale);
        let (ya, yb) = (fused(&qkv0), comp(&qkv0));
        let (ga, gb) = (grad_of(fused, &qkv0, &w), grad_of(comp, &qkv0, &w));
        assert!(rel_err(&ya, &yb) < 1e-4, "out {}", rel_err(&ya, &yb));
        assert!(rel_err(&ga, &gb) < 1e-4, "dqkv {}", rel_err(&ga, &gb));
        // q, k and v all receive gradient.
        for part in 0..3 {
            let g = ga.narrow(2, part * heads * hd, heads * hd).unwrap();
            assert!(
                max_abs_diff(&g, &g.zeros_like().unwrap()) > 1e-3,
                "part {part}"
            );
        }
        assert!(attention(&qkv0, 5, scale).is_err());
        assert!(attention(&qkv0, 0, scale).is_err());
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let qkv = randn(&[4, 5, 24], 1);
        assert!(window_attention(&qkv, &randn(&[3, 2, 5, 5], 2), 2, 1.0).is_err());
        assert!(window_attention(&qkv, &randn(&[2, 2, 4, 4], 2), 2, 1.0).is_err());
        assert!(window_attention(&qkv, &randn(&[2, 3, 5, 5], 2), 2, 1.0).is_err());
    }
}
