//! The AdamW update in one pass over contiguous f32 CPU memory: read p, g, m, v once, write
//! p, m, v once, in parallel over chunks. The composed tensor version makes ~10 full-size
//! temporaries per parameter per step; this makes 3. Other devices and dtypes keep the composed
//! ops (which is also the reference the tests compare with).

use crate::Result;
use candle_core::{CpuStorage, Layout, Storage, Tensor};
use rayon::prelude::*;

/// Scalars of one AdamW step for one parameter group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamStep {
    /// 1 - lr * weight_decay (decoupled decay, applied to p before the update).
    pub decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// lr / (1 - beta1^t)
    pub step_size: f64,
    /// sqrt(1 - beta2^t)
    pub bc2_sqrt: f64,
    pub eps: f64,
}

/// Chunk size of the parallel loop: big enough that scheduling is noise.
const CHUNK: usize = 1 << 14;

fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout): (_, &Layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        return None;
    };
    let (start, end) = layout.contiguous_offsets()?;
    Some(f(&data[start..end]))
}

/// (p', m', v') for f32 CPU tensors, or None when any input is elsewhere or strided.
pub(crate) fn adamw(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: AdamStep,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let n = p.elem_count();
    let (mut po, mut mo, mut vo) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    let (decay, b1, b2) = (h.decay as f32, h.beta1 as f32, h.beta2 as f32);
    let (one_b1, one_b2) = ((1.0 - h.beta1) as f32, (1.0 - h.beta2) as f32);
    let (step, inv_bc2, eps) = (h.step_size as f32, (1.0 / h.bc2_sqrt) as f32, h.eps as f32);
    let done = with_f32(p, |ps| {
        with_f32(g, |gs| {
            with_f32(m, |ms| {
                with_f32(v, |vs| {
                    if ps.len() != n || gs.len() != n || ms.len() != n || vs.len() != n {
                        return false;
                    }
                    po.par_chunks_mut(CHUNK)
                        .zip(mo.par_chunks_mut(CHUNK))
                        .zip(vo.par_chunks_mut(CHUNK))
                        .enumerate()
                        .for_each(|(c, ((po, mo), vo))| {
                            let r = c * CHUNK..(c * CHUNK + po.len());
                            let (ps, gs, ms, vs) =
                                (&ps[r.clone()], &gs[r.clone()], &ms[r.clone()], &vs[r]);
                            for i in 0..po.len() {
                                let gi = gs[i];
                                let mi = ms[i] * b1 + gi * one_b1;
                                let vi = vs[i] * b2 + gi * gi * one_b2;
                                let denom = vi.sqrt() * inv_bc2 + eps;
                                po[i] = ps[i] * decay - step * (mi / denom);
                                mo[i] = mi;
                                vo[i] = vi;
                            }
                        });
                    true
                })
            })
        })
    });
    if done != Some(Some(Some(Some(true)))) {
        return Ok(None);
    }
    let (shape, dev) = (p.shape(), p.device());
    Ok(Some((
        Tensor::from_vec(po, shape, dev)?,
        Tensor::from_vec(mo, shape, dev)?,
        Tensor::from_vec(vo, shape, dev)?,
    )))
}

/// The same update as tensor ops, for any device and dtype (PyTorch's order of operations).
pub(crate) fn adamw_composed(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: AdamStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    let p = if h.decay != 1.0 {
        p.affine(h.decay, 0.0)?
    } else {
        p.clone()
    };
    let m = ((m * h.beta1)? + (g * (1.0 - h.beta1))?)?;
    let v = ((v * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?;
    let denom = ((v.sqrt()? / h.bc2_sqrt)? + h.eps)?;
    let update = ((&m / denom)? * h.step_size)?;
    Ok(((p - update)?, m, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap();
        let s = (b.abs().unwrap() + 1e-6).unwrap();
        (d / s)
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn one_pass_update_equals_the_composed_ops_on_many_chunks() {
        let dev = Device::Cpu;
        let n = 3 * CHUNK + 123;
        let p = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
        let g = Tensor::randn(0f32, 0.1, n, &dev).unwrap();
        let m = Tensor::randn(0f32, 0.01, n, &dev).unwrap();
        let v = Tensor::randn(0f32, 0.001, n, &dev).unwrap().abs().unwrap();
        let h = AdamStep {
            decay: 1.0 - 1e-3 * 0.05,
            beta1: 0.9,
            beta2: 0.999,
            step_size: 1e-3 / (1.0 - 0.9f64.powi(3)),
            bc2_sqrt: (1.0 - 0.999f64.powi(3)).sqrt(),
            eps: 1e-8,
        };
        let (pf, mf, vf) = adamw(&p, &g, &m, &v, h).unwrap().unwrap();
        let (pc, mc, vc) = adamw_composed(&p, &g, &m, &v, h).unwrap();
        for (what, a, b) in [("p", &pf, &pc), ("m", &mf, &mc), ("v", &vf, &vc)] {
            let e = max_rel(a, b);
            assert!(e < 1e-5, "{what}: relative difference {e}");
        }
        // The update moved p (a kernel that wrote nothing would fail here).
        assert!(max_rel(&pf, &p) > 1e-4);
    }

    #[test]
    fn other_dtypes_and_strided_tensors_fall_back() {
        let dev = Device::Cpu;
        let h = AdamStep {
            decay: 1.0,
            beta1: 0.9,
            beta2: 0.999,
            step_size: 0.1,
            bc2_sqrt: 0.1,
            eps: 1e-8,
        };
        let t = Tensor::ones(8, DType::F64, &dev).unwrap();
        assert!(adamw(&t, &t, &t, &t, h).unwrap().is_none());
        let s = Tensor::ones((4, 2), DType::F32, &dev).unwrap().t().unwrap();
        assert!(adamw(&s, &s, &s, &s, h).unwrap().is_none());
    }
}
