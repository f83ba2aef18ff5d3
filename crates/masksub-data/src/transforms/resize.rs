//! Antialiased separable resampling with PIL's arithmetic (`Image.resize` with a `box`), so
//! the evaluation transform matches PIL/torchvision pixel for pixel up to rounding.
//!
//! As in PIL: the filter support is widened by the downscale factor, weights are normalized
//! and quantized to 22-bit fixed point, the horizontal pass runs first (only over the rows the
//! vertical pass needs) and each pass rounds and clips to 8 bits.

use std::cell::RefCell;

use masksub_simd::simd_kernel;
use serde::{Deserialize, Serialize};

use crate::decode::RgbImage;

pub(super) const PRECISION_BITS: u32 = 32 - 8 - 2;

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

/// Per output position: first input index, tap count and fixed-point weights.
pub(super) struct Coeffs {
    pub(super) starts: Vec<usize>,
    /// Taps actually inside the input (PIL's `bounds`), at most `ksize`.
    counts: Vec<usize>,
    /// `ksize` weights per output position (zero-padded).
    weights: Vec<i32>,
    pub(super) ksize: usize,
}

impl Coeffs {
    /// Input index range of output `xx`'s taps and their weights.
    #[inline(always)]
    pub(super) fn taps(&self, xx: usize) -> (usize, &[i32]) {
        let w0 = xx * self.ksize;
        (self.starts[xx], &self.weights[w0..w0 + self.counts[xx]])
    }
}

/// PIL's `precompute_coeffs` for input span `[in0, in1)` of an axis of length `in_size`.
fn coeffs(in_size: usize, in0: f64, in1: f64, out_size: usize, filter: Interpolation) -> Coeffs {
    let scale = (in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut starts = Vec::with_capacity(out_size);
    let mut counts = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // PIL truncates toward zero with a C cast.
        let xmin = ((center - support + 0.5) as i64).clamp(0, in_size as i64) as usize;
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
        counts.push(n);
    }
    Coeffs {
        starts,
        counts,
        weights,
        ksize,
    }
}

/// Rounding offset every accumulator starts from (PIL's `1 << (PRECISION_BITS - 1)`).
pub(super) const HALF: i32 = 1 << (PRECISION_BITS - 1);

#[inline(always)]
pub(super) fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal output pixel `xx` of the input row `src`, plainly.
#[inline(always)]
pub(super) fn pixel_plain(src: &[u8], xx: usize, c: &Coeffs) -> [u8; 3] {
    let (start, kw) = c.taps(xx);
    let mut acc = [HALF; 3];
    for (p, &w) in src[start * 3..].chunks_exact(3).zip(kw) {
        for l in 0..3 {
            acc[l] += p[l] as i32 * w;
        }
    }
    acc.map(clip8)
}

/// One row of the horizontal pass (`src`: an input row, `dst`: `out_w` RGB pixels), plainly:
/// the path for CPUs without AVX2 (and the reference the AVX2 path is tested against).
fn horizontal_row_plain(src: &[u8], dst: &mut [u8], c: &Coeffs) {
    for (xx, o) in dst.chunks_exact_mut(3).enumerate() {
        o.copy_from_slice(&pixel_plain(src, xx, c));
    }
}

/// The horizontal pass's coefficients, with the AVX2 layout of the weights where it runs.
struct Horizontal {
    c: Coeffs,
    #[cfg(target_arch = "x86_64")]
    avx2: Option<super::resize_avx2::SplitWeights>,
}

impl Horizontal {
    fn new(c: Coeffs, allow_simd: bool) -> Self {
        #[cfg(target_arch = "x86_64")]
        let avx2 = (allow_simd && masksub_simd::cpu_level() >= 3)
            .then(|| super::resize_avx2::SplitWeights::new(&c));
        #[cfg(not(target_arch = "x86_64"))]
        let _ = allow_simd;
        Horizontal {
            c,
            #[cfg(target_arch = "x86_64")]
            avx2,
        }
    }

    fn row(&self, src: &[u8], dst: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(sw) = &self.avx2 {
            // SAFETY: `avx2` is only built when the CPU has AVX2.
            return unsafe { super::resize_avx2::horizontal_row(src, dst, &self.c, sw) };
        }
        horizontal_row_plain(src, dst, &self.c)
    }
}

simd_kernel! {
    /// One output row of the vertical pass: `dst[j] = clip(sum_i src[(first + i) * stride + j]
    /// * kw[i])`, 32 bytes at a time so the accumulators stay in registers.
    fn vertical_row(src: &[u8], stride: usize, first: usize, kw: &[i32], dst: &mut [u8]) {
        const LANES: usize = 32;
        let mut chunks = dst.chunks_exact_mut(LANES);
        let mut x = 0;
        for d in &mut chunks {
            let mut acc = [HALF; LANES];
            for (i, &w) in kw.iter().enumerate() {
                let row = &src[(first + i) * stride + x..][..LANES];
                for l in 0..LANES {
                    acc[l] += row[l] as i32 * w;
                }
            }
            for l in 0..LANES {
                d[l] = clip8(acc[l]);
            }
            x += LANES;
        }
        for (j, d) in chunks.into_remainder().iter_mut().enumerate() {
            let mut a = HALF;
            for (i, &w) in kw.iter().enumerate() {
                a += src[(first + i) * stride + x + j] as i32 * w;
            }
            *d = clip8(a);
        }
    }
}

thread_local! {
    /// The horizontal pass's output, kept per thread: a resize allocates only its result.
    static HORIZONTAL: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Resizes the region `bx = (x0, y0, x1, y1)` (in input pixels) of `img` to `out_w x out_h`.
pub fn resize_box(
    img: &RgbImage,
    bx: (f64, f64, f64, f64),
    out_w: usize,
    out_h: usize,
    filter: Interpolation,
) -> RgbImage {
    resize_box_with(img, bx, out_w, out_h, filter, true)
}

/// [`resize_box`], with the AVX2 horizontal pass allowed or not (tests compare the two).
fn resize_box_with(
    img: &RgbImage,
    bx: (f64, f64, f64, f64),
    out_w: usize,
    out_h: usize,
    filter: Interpolation,
    allow_simd: bool,
) -> RgbImage {
    let (x0, y0, x1, y1) = bx;
    let (w, h) = (img.width, img.height);
    let need_h = out_w != w || x0 != 0.0 || x1 != w as f64;
    let need_v = out_h != h || y0 != 0.0 || y1 != h as f64;
    let stride = out_w * 3;
    let mut out = vec![0u8; out_h * stride];
    let ch = need_h.then(|| Horizontal::new(coeffs(w, x0, x1, out_w, filter), allow_simd));
    // Rows `row0..row1` of the input through the horizontal pass into `dst`.
    let horizontal = |row0: usize, row1: usize, dst: &mut [u8]| {
        for (r, orow) in (row0..row1).zip(dst.chunks_exact_mut(stride)) {
            let src = &img.data[r * w * 3..(r + 1) * w * 3];
            match &ch {
                Some(hz) => hz.row(src, orow),
                None => {
                    let xs = x0 as usize * 3;
                    orow.copy_from_slice(&src[xs..xs + stride]);
                }
            }
        }
    };
    if !need_v {
        let row0 = y0 as usize;
        horizontal(row0, row0 + out_h, &mut out);
        return RgbImage {
            width: out_w,
            height: out_h,
            data: out,
        };
    }
    let cv = coeffs(h, y0, y1, out_h, filter);
    // Rows the vertical pass reads.
    let row0 = cv.starts.first().copied().unwrap_or(0);
    let row1 = (0..out_h)
        .map(|yy| cv.starts[yy] + cv.counts[yy])
        .max()
        .unwrap_or(row0)
        .max(row0);
    let vertical = |src: &[u8], src_stride: usize, base: usize, out: &mut [u8]| {
        for (yy, orow) in out.chunks_exact_mut(stride).enumerate() {
            let (start, kw) = cv.taps(yy);
            vertical_row(src, src_stride, start - base, kw, orow);
        }
    };
    if need_h {
        HORIZONTAL.with(|tmp| {
            let mut tmp = tmp.borrow_mut();
            let len = (row1 - row0) * stride;
            if tmp.len() < len {
                tmp.resize(len, 0);
            }
            horizontal(row0, row1, &mut tmp[..len]);
            vertical(&tmp[..len], stride, row0, &mut out);
        });
    } else {
        // Crop only across: the vertical pass reads the input rows in place.
        let xs = x0 as usize * 3;
        vertical(&img.data[xs..], w * 3, 0, &mut out);
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

    /// PIL's two passes written plainly (one channel at a time, every tap), the reference the
    /// vectorized rows must equal byte for byte.
    fn reference(
        img: &RgbImage,
        bx: (f64, f64, f64, f64),
        ow: usize,
        oh: usize,
        f: Interpolation,
    ) -> RgbImage {
        let (x0, y0, x1, y1) = bx;
        let (w, h) = (img.width, img.height);
        let ch = coeffs(w, x0, x1, ow, f);
        let cv = coeffs(h, y0, y1, oh, f);
        let mut horiz = vec![0u8; h * ow * 3];
        for y in 0..h {
            for xx in 0..ow {
                for c in 0..3 {
                    let mut acc = HALF;
                    for k in 0..ch.counts[xx] {
                        let x = ch.starts[xx] + k;
                        acc += img.data[(y * w + x) * 3 + c] as i32 * ch.weights[xx * ch.ksize + k];
                    }
                    horiz[(y * ow + xx) * 3 + c] = clip8(acc);
                }
            }
        }
        let mut out = vec![0u8; oh * ow * 3];
        for yy in 0..oh {
            for j in 0..ow * 3 {
                let mut acc = HALF;
                for k in 0..cv.counts[yy] {
                    let y = cv.starts[yy] + k;
                    acc += horiz[y * ow * 3 + j] as i32 * cv.weights[yy * cv.ksize + k];
                }
                out[yy * ow * 3 + j] = clip8(acc);
            }
        }
        RgbImage::from_raw(ow, oh, out).unwrap()
    }

    #[test]
    fn vectorized_passes_equal_the_plain_reference() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..60 {
            let (w, h) = (rng.random_range(1..300), rng.random_range(1..300));
            let img =
                RgbImage::from_raw(w, h, (0..w * h * 3).map(|_| rng.random()).collect()).unwrap();
            // Boxes that touch the right and bottom edges, crops, up- and downscales.
            let bx0 = rng.random_range(0..w) as f64;
            let by0 = rng.random_range(0..h) as f64;
            let bx = if case % 3 == 0 {
                (0.0, 0.0, w as f64, h as f64)
            } else {
                (bx0, by0, w as f64, h as f64)
            };
            let (mut ow, mut oh) = (rng.random_range(1..80), rng.random_range(1..80));
            // One pass only: the other axis keeps its size.
            match case % 6 {
                0 => ow = w,
                3 => oh = h,
                _ => {}
            }
            for f in [Interpolation::Bilinear, Interpolation::Bicubic] {
                assert_eq!(
                    resize_box(&img, bx, ow, oh, f),
                    reference(&img, bx, ow, oh, f),
                    "case {case} {w}x{h} {bx:?} -> {ow}x{oh} {f:?}"
                );
            }
        }
    }
}
