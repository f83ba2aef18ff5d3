//! Pixel operations on 8-bit RGB images, after PIL's `ImageOps` / `ImageEnhance`, used by
//! 3-Augment and RandAugment. Blends round to nearest (PIL truncates): close, not bit-exact,
//! which training augmentation does not need.

use crate::decode::RgbImage;

/// PIL's `convert("L")` luma: (R*19595 + G*38470 + B*7471 + 2^15) >> 16.
#[inline]
pub fn luma(p: &[u8]) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Grayscale replicated to 3 channels (torchvision `Grayscale(3)`).
pub fn grayscale(img: &mut RgbImage) {
    for p in img.data.chunks_exact_mut(3) {
        let l = luma(p);
        p.fill(l);
    }
}

/// Inverts every value at or above `threshold` (PIL `solarize`).
pub fn solarize(img: &mut RgbImage, threshold: u16) {
    for v in &mut img.data {
        if *v as u16 >= threshold {
            *v = 255 - *v;
        }
    }
}

/// Adds `add` to values below `threshold` (timm's `solarize_add`).
pub fn solarize_add(img: &mut RgbImage, add: i32, threshold: u8) {
    for v in &mut img.data {
        if *v < threshold {
            *v = (*v as i32 + add).clamp(0, 255) as u8;
        }
    }
}

pub fn invert(img: &mut RgbImage) {
    for v in &mut img.data {
        *v = 255 - *v;
    }
}

/// Keeps the top `bits` bits of each value.
pub fn posterize(img: &mut RgbImage, bits: u32) {
    let bits = bits.min(8);
    let mask = if bits == 0 {
        0
    } else {
        !((1u16 << (8 - bits)) - 1) as u8
    };
    for v in &mut img.data {
        *v &= mask;
    }
}

/// `out = degenerate + factor * (img - degenerate)`, clipped; `degenerate(i)` is the value of
/// byte `i` of the degenerate image.
fn blend_with(img: &mut RgbImage, factor: f64, degenerate: impl Fn(usize) -> f64) {
    for (i, v) in img.data.iter_mut().enumerate() {
        let d = degenerate(i);
        *v = (d + factor * (*v as f64 - d)).round().clamp(0.0, 255.0) as u8;
    }
}

/// `ImageEnhance.Brightness`: blend with black.
pub fn brightness(img: &mut RgbImage, factor: f64) {
    blend_with(img, factor, |_| 0.0);
}

/// `ImageEnhance.Contrast`: blend with the mean luma (rounded), as PIL.
pub fn contrast(img: &mut RgbImage, factor: f64) {
    let n = (img.width * img.height).max(1) as f64;
    let sum: f64 = img.data.chunks_exact(3).map(|p| luma(p) as f64).sum();
    let mean = (sum / n + 0.5).floor();
    blend_with(img, factor, |_| mean);
}

/// `ImageEnhance.Color` (saturation): blend with the grayscale image.
pub fn saturation(img: &mut RgbImage, factor: f64) {
    let gray: Vec<u8> = img.data.chunks_exact(3).map(luma).collect();
    blend_with(img, factor, |i| gray[i / 3] as f64);
}

/// `ImageEnhance.Sharpness`: blend with PIL's SMOOTH filter (3x3, center 5, sum 13); the
/// border keeps its pixels.
pub fn sharpness(img: &mut RgbImage, factor: f64) {
    let (w, h) = (img.width, img.height);
    if w < 3 || h < 3 {
        return;
    }
    let src = img.data.clone();
    let mut smooth = src.clone();
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for c in 0..3 {
                let mut acc = 0u32;
                for dy in 0..3 {
                    for dx in 0..3 {
                        let k = if dy == 1 && dx == 1 { 5 } else { 1 };
                        acc += k * src[((y + dy - 1) * w + x + dx - 1) * 3 + c] as u32;
                    }
                }
                smooth[(y * w + x) * 3 + c] = ((acc + 6) / 13) as u8;
            }
        }
    }
    blend_with(img, factor, |i| smooth[i] as f64);
}

/// Per channel, stretches [min, max] to [0, 255] (`ImageOps.autocontrast`, cutoff 0).
pub fn autocontrast(img: &mut RgbImage) {
    for c in 0..3 {
        let vals = img.data.iter().skip(c).step_by(3);
        let (lo, hi) = vals.fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if hi <= lo {
            continue;
        }
        let scale = 255.0 / (hi - lo) as f64;
        let lut: Vec<u8> = (0..256)
            .map(|i| ((i as f64 - lo as f64) * scale).clamp(0.0, 255.0) as u8)
            .collect();
        for v in img.data.iter_mut().skip(c).step_by(3) {
            *v = lut[*v as usize];
        }
    }
}

/// Per channel histogram equalization (`ImageOps.equalize`).
pub fn equalize(img: &mut RgbImage) {
    for c in 0..3 {
        let mut hist = [0usize; 256];
        for &v in img.data.iter().skip(c).step_by(3) {
            hist[v as usize] += 1;
        }
        let last = hist.iter().rev().find(|&&n| n > 0).copied().unwrap_or(0);
        let step = (hist.iter().sum::<usize>() - last) / 255;
        if step == 0 {
            continue;
        }
        let mut lut = [0u8; 256];
        let mut n = step / 2;
        for (i, l) in lut.iter_mut().enumerate() {
            *l = (n / step).min(255) as u8;
            n += hist[i];
        }
        for v in img.data.iter_mut().skip(c).step_by(3) {
            *v = lut[*v as usize];
        }
    }
}

/// Separable Gaussian blur with standard deviation `sigma` px (edge pixels repeat).
pub fn gaussian_blur(img: &mut RgbImage, sigma: f64) {
    let radius = (3.0 * sigma).ceil().max(1.0) as usize;
    let kernel: Vec<f64> = (0..=2 * radius)
        .map(|i| {
            let d = i as f64 - radius as f64;
            (-(d * d) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f64 = kernel.iter().sum();
    let kernel: Vec<f64> = kernel.iter().map(|k| k / total).collect();
    let (w, h) = (img.width, img.height);
    let mut tmp = vec![0f64; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0.0;
                for (i, k) in kernel.iter().enumerate() {
                    let sx = (x + i).saturating_sub(radius).min(w - 1);
                    acc += k * img.data[(y * w + sx) * 3 + c] as f64;
                }
                tmp[(y * w + x) * 3 + c] = acc;
            }
        }
    }
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0.0;
                for (i, k) in kernel.iter().enumerate() {
                    let sy = (y + i).saturating_sub(radius).min(h - 1);
                    acc += k * tmp[(sy * w + x) * 3 + c];
                }
                img.data[(y * w + x) * 3 + c] = acc.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Inverse-mapped affine warp with bilinear sampling: output pixel center (x, y) samples the
/// input at `(m[0] x + m[1] y + m[2], m[3] x + m[4] y + m[5])`; outside points get `fill`.
pub fn affine(img: &RgbImage, m: [f64; 6], fill: [u8; 3]) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let mut out = RgbImage::filled(w, h, fill);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f64 + 0.5, y as f64 + 0.5);
            let sx = m[0] * fx + m[1] * fy + m[2] - 0.5;
            let sy = m[3] * fx + m[4] * fy + m[5] - 0.5;
            if sx < -0.5 || sy < -0.5 || sx > w as f64 - 0.5 || sy > h as f64 - 0.5 {
                continue;
            }
            let (x0, y0) = (sx.floor(), sy.floor());
            let (ax, ay) = (sx - x0, sy - y0);
            let px = |xi: f64, yi: f64, c: usize| -> f64 {
                let xi = xi.clamp(0.0, (w - 1) as f64) as usize;
                let yi = yi.clamp(0.0, (h - 1) as f64) as usize;
                img.data[(yi * w + xi) * 3 + c] as f64
            };
            for c in 0..3 {
                let top = px(x0, y0, c) * (1.0 - ax) + px(x0 + 1.0, y0, c) * ax;
                let bot = px(x0, y0 + 1.0, c) * (1.0 - ax) + px(x0 + 1.0, y0 + 1.0, c) * ax;
                out.data[(y * w + x) * 3 + c] =
                    (top * (1.0 - ay) + bot * ay).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> RgbImage {
        RgbImage::from_raw(8, 8, (0..192).map(|i| (i + 40) as u8).collect()).unwrap()
    }

    #[test]
    fn point_ops_match_their_definitions() {
        let mut g = RgbImage::from_raw(1, 1, vec![255, 0, 0]).unwrap();
        grayscale(&mut g);
        assert_eq!(g.data, vec![76, 76, 76]);
        let mut s = RgbImage::from_raw(1, 1, vec![10, 128, 200]).unwrap();
        solarize(&mut s, 128);
        assert_eq!(s.data, vec![10, 127, 55]);
        let mut p = RgbImage::from_raw(1, 1, vec![0xff, 0x81, 0x3f]).unwrap();
        posterize(&mut p, 2);
        assert_eq!(p.data, vec![0xc0, 0x80, 0x00]);
        let mut a = ramp();
        autocontrast(&mut a);
        assert_eq!((a.data[0], a.data[191]), (0, 255));
        let mut b = ramp();
        brightness(&mut b, 0.5);
        assert_eq!(b.data[0], 20);
        // 64 levels x 16 pixels each: equalization spreads them over the full range.
        let mut e =
            RgbImage::from_raw(32, 32, (0..3072).map(|i| (i / 48) as u8).collect()).unwrap();
        equalize(&mut e);
        assert_eq!((e.data[0], e.data[3071]), (0, 255));
        assert_eq!(e.data[1536], 171); // PIL: (step/2 + 16 * 32) / step, step = 3
    }

    #[test]
    fn identity_affine_and_unit_factors_change_nothing() {
        let img = ramp();
        assert_eq!(affine(&img, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [0; 3]), img);
        let mut c = img.clone();
        contrast(&mut c, 1.0);
        saturation(&mut c, 1.0);
        sharpness(&mut c, 1.0);
        assert_eq!(c, img);
        let shifted = affine(&img, [1.0, 0.0, 100.0, 0.0, 1.0, 0.0], [1, 2, 3]);
        assert!(shifted.data.chunks(3).all(|p| p == [1, 2, 3]));
        let mut flat = RgbImage::filled(9, 9, [50, 60, 70]);
        gaussian_blur(&mut flat, 1.5);
        assert!(flat.data.chunks(3).all(|p| p == [50, 60, 70]));
    }
}
