//! Position-embedding resampling to another token grid, as timm's `resample_abs_pos_embed`:
//! `F.interpolate(mode='bicubic', align_corners=False, antialias=True)` on the (D, H, W) grid,
//! prefix (cls) tokens kept as they are. PyTorch's antialiased bicubic is PIL's separable
//! filter: cubic with a = -0.5, its support widened by the scale when shrinking.

use crate::{ModelError, Result};
use candle_core::{DType, Tensor};

fn cubic_aa(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output index: (first input index, normalized weights).
fn weights(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = n_in as f64 / n_out as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let inv = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..n_out)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(n_in);
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| cubic_aa((j as f64 - center + 0.5) * inv))
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (lo, w)
        })
        .collect()
}

/// Resize a (H, W, D) row-major grid to (h, w, D).
fn resize_grid(
    src: &[f64],
    (h0, w0): (usize, usize),
    (h1, w1): (usize, usize),
    d: usize,
) -> Vec<f64> {
    let wx = weights(w0, w1);
    let wy = weights(h0, h1);
    // Horizontal pass: (h0, w1, d).
    let mut tmp = vec![0.0; h0 * w1 * d];
    for y in 0..h0 {
        for (x, (lo, w)) in wx.iter().enumerate() {
            let out = &mut tmp[(y * w1 + x) * d..(y * w1 + x + 1) * d];
            for (k, wk) in w.iter().enumerate() {
                let row = &src[(y * w0 + lo + k) * d..(y * w0 + lo + k + 1) * d];
                out.iter_mut().zip(row).for_each(|(o, v)| *o += wk * v);
            }
        }
    }
    // Vertical pass: (h1, w1, d).
    let mut dst = vec![0.0; h1 * w1 * d];
    for (y, (lo, w)) in wy.iter().enumerate() {
        for x in 0..w1 {
            let out = &mut dst[(y * w1 + x) * d..(y * w1 + x + 1) * d];
            for (k, wk) in w.iter().enumerate() {
                let row = &tmp[((lo + k) * w1 + x) * d..((lo + k) * w1 + x + 1) * d];
                out.iter_mut().zip(row).for_each(|(o, v)| *o += wk * v);
            }
        }
    }
    dst
}

/// `pos_embed` (1, prefix + H0*W0, D) with a square old grid -> (1, prefix + h*w, D).
pub fn resample_pos_embed(
    pos_embed: &Tensor,
    new_grid: (usize, usize),
    num_prefix_tokens: usize,
) -> Result<Tensor> {
    let bad = |reason: String| ModelError::Input {
        got: pos_embed.dims().to_vec(),
        reason,
    };
    let (one, n, d) = pos_embed
        .dims3()
        .map_err(|_| bad("pos_embed must be (1, tokens, dim)".into()))?;
    if one != 1 || n < num_prefix_tokens {
        return Err(bad("pos_embed must be (1, tokens, dim)".into()));
    }
    let old = n - num_prefix_tokens;
    let side = (old as f64).sqrt().round() as usize;
    if side * side != old {
        return Err(bad(format!(
            "{old} position tokens after {num_prefix_tokens} prefix token(s) are not a square grid"
        )));
    }
    if (side, side) == new_grid {
        return Ok(pos_embed.clone());
    }
    let dtype = pos_embed.dtype();
    let v: Vec<f64> = pos_embed
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let (prefix, grid) = v.split_at(num_prefix_tokens * d);
    let mut out = prefix.to_vec();
    out.extend(resize_grid(grid, (side, side), new_grid, d));
    let len = num_prefix_tokens + new_grid.0 * new_grid.1;
    Ok(Tensor::from_vec(out, (1, len, d), pos_embed.device())?.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn weights_sum_to_one_and_identity_size_keeps_values() {
        for (a, b) in [(4, 7), (7, 4), (14, 16), (16, 14)] {
            for (_, w) in weights(a, b) {
                assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
        // A constant grid stays constant; the prefix token is untouched.
        let mut v = vec![5.0f32; 2];
        v.extend(vec![1.5f32; 9 * 2]);
        let t = Tensor::from_vec(v, (1, 10, 2), &Device::Cpu).unwrap();
        let r = resample_pos_embed(&t, (5, 5), 1).unwrap();
        assert_eq!(r.dims(), &[1, 26, 2]);
        let r = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(&r[..2], &[5.0, 5.0]);
        assert!(r[2..].iter().all(|x| (x - 1.5).abs() < 1e-6), "{r:?}");
        let e = resample_pos_embed(&t, (5, 5), 0).unwrap_err().to_string();
        assert!(e.contains("square"), "{e}");
    }
}
