//! Antialiased separable resampling with PIL's arithmetic (`Image.resize` with a `box`), so
//! the evaluation transform matches PIL/torchvision pixel for pixel up to rounding.
//!
//! As in PIL: the filter support is widened by the downscale factor, weights are normalized
//! and quantized to 22-bit fixed point, the horizontal pass runs first (only over the rows the
//! vertical pass needs) and each pass rounds and clips to 8 bits.

use serde::{Deserialize, Serialize};

use crate::decode::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

impl Interpolation {
    fn support(self) -> f64 {
        match self {
            Interpolation::Bilinear => 1.0,
            Interpolation::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Interpolation::Bilinear => (1.0 - x).max(0.0),
            Interpolation::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Per output position: first input index and fixed-point weights.
struct Coeffs {
    starts: Vec<usize>,
    /// `ksize` weights per output position (zero-padded).
    weights: Vec<i32>,
    ksize: usize,
}

/// PIL's `precompute_coeffs` for input span `[in0, in1)` of an axis of length `in_size`.
fn coeffs(in_size: usize, in0: f64, in1: f64, out_size: usize, filter: Interpolation) -> Coeffs {
    let scale = (in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut starts = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // PIL truncates toward zero with a C cast.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut total = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            total += w;
        }
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
        for x in 0..n {
            let w = if total != 0.0 { k[x] / total } else { 0.0 };
            let f = w * (1u32 << PRECISION_BITS) as f64;
            row[x] = if f < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        starts.push(xmin);
    }
    Coeffs {
        starts,
        weights,
        ksize,
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes the region `bx = (x0, y0, x1, y1)` (in input pixels) of `img` to `out_w x out_h`.
pub fn resize_box(
    img: &RgbImage,
    bx: (f64, f64, f64, f64),
    out_w: usize,
    out_h: usize,
    filter: Interpolation,
) -> RgbImage {
    let (x0, y0, x1, y1) = bx;
    let (w, h) = (img.width, img.height);
    let need_h = out_w != w || x0 != 0.0 || x1 != w as f64;
    let need_v = out_h != h || y0 != 0.0 || y1 != h as f64;
    let cv = coeffs(h, y0, y1, out_h, filter);
    // Rows the vertical pass reads.
    let (row0, row1) = if need_v {
        let first = cv.starts.first().copied().unwrap_or(0);
        let last = cv
            .starts
            .iter()
            .map(|&s| (s + cv.ksize).min(h))
            .max()
            .unwrap_or(h);
        (first, last)
    } else {
        (y0 as usize, y0 as usize + out_h)
    };
    let horiz = if need_h {
        let ch = coeffs(w, x0, x1, out_w, filter);
        let rows = row1 - row0;
        let mut out = vec![0u8; rows * out_w * 3];
        for (r, orow) in out.chunks_exact_mut(out_w * 3).enumerate() {
            let src = &img.data[(row0 + r) * w * 3..(row0 + r + 1) * w * 3];
            for xx in 0..out_w {
                let start = ch.starts[xx];
                let kw = &ch.weights[xx * ch.ksize..(xx + 1) * ch.ksize];
                let n = ch.ksize.min(w - start);
                let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
                let px = src[start * 3..(start + n) * 3].chunks_exact(3);
                for (p, &k) in px.zip(&kw[..n]) {
                    acc[0] += p[0] as i32 * k;
                    acc[1] += p[1] as i32 * k;
                    acc[2] += p[2] as i32 * k;
                }
                orow[xx * 3] = clip8(acc[0]);
                orow[xx * 3 + 1] = clip8(acc[1]);
                orow[xx * 3 + 2] = clip8(acc[2]);
            }
        }
        RgbImage {
            width: out_w,
            height: rows,
            data: out,
        }
    } else {
        let (xs, xe) = (x0 as usize * 3, (x0 as usize + out_w) * 3);
        let mut data = Vec::with_capacity((row1 - row0) * out_w * 3);
        for r in row0..row1 {
            data.extend_from_slice(&img.data[r * w * 3 + xs..r * w * 3 + xe]);
        }
        RgbImage {
            width: out_w,
            height: row1 - row0,
            data,
        }
    };
    if !need_v {
        return horiz;
    }
    let stride = out_w * 3;
    let mut out = vec![0u8; out_h * stride];
    let mut acc = vec![0i32; stride];
    for (yy, orow) in out.chunks_exact_mut(stride).enumerate() {
        let start = cv.starts[yy];
        let kw = &cv.weights[yy * cv.ksize..(yy + 1) * cv.ksize];
        let n = cv.ksize.min(h - start);
        acc.fill(1i32 << (PRECISION_BITS - 1));
        for (i, &k) in kw[..n].iter().enumerate() {
            if k == 0 {
                continue;
            }
            let r = start + i - row0;
            let src = &horiz.data[r * stride..(r + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(src) {
                *a += p as i32 * k;
            }
        }
        for (o, &a) in orow.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    RgbImage {
        width: out_w,
        height: out_h,
        data: out,
    }
}

/// Resizes the whole image.
pub fn resize(img: &RgbImage, out_w: usize, out_h: usize, filter: Interpolation) -> RgbImage {
    resize_box(
        img,
        (0.0, 0.0, img.width as f64, img.height as f64),
        out_w,
        out_h,
        filter,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity_and_constant_stays_constant() {
        let img =
            RgbImage::from_raw(5, 4, (0..60).map(|i| (i * 37 % 256) as u8).collect()).unwrap();
        for f in [Interpolation::Bilinear, Interpolation::Bicubic] {
            assert_eq!(resize(&img, 5, 4, f), img);
            let c = RgbImage::filled(37, 23, [10, 128, 250]);
            let r = resize(&c, 11, 29, f);
            assert!(r.data.chunks(3).all(|p| p == [10, 128, 250]));
        }
    }

    #[test]
    fn two_to_one_bilinear_averages_pairs() {
        // PIL: a 4x1 row [0, 100, 200, 50] halved with bilinear -> support 2 at scale 2.
        let img = RgbImage::from_raw(
            4,
            1,
            [0u8, 100, 200, 50].iter().flat_map(|&v| [v; 3]).collect(),
        )
        .unwrap();
        let r = resize(&img, 2, 1, Interpolation::Bilinear);
        // Weights for out 0 (center 1.0): x=0..2 -> (0.75, 0.25)+... normalized: [0.75,0.25]/1 over
        // inputs 0,1 plus 0.25/0.75 of input 2 -> computed by hand: (0*3 + 100*3 + 200*1)/7.
        let expect0 = ((0.0 * 3.0 + 100.0 * 3.0 + 200.0 * 1.0) / 7.0f64).round() as u8;
        assert_eq!(r.data[0], expect0);
    }
}
