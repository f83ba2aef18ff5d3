//! Geometry of the standard crops: timm's RandomResizedCrop parameters and the evaluation
//! resize + center crop (`scale_size = floor(img_size / crop_pct)`).

use rand::Rng;

use super::resize::{resize_box, Interpolation};
use crate::decode::RgbImage;

/// A crop rectangle: top, left, height, width in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropRect {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// timm/torchvision `RandomResizedCrop.get_params`: 10 tries of an area fraction uniform in
/// `scale` and a log-uniform aspect ratio in `ratio`, then a central crop clamped to `ratio`.
pub fn rrc_params(
    w: usize,
    h: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut impl Rng,
) -> CropRect {
    let area = (w * h) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, lr0, lr1).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let top = rng.random_range(0..=h - ch);
            let left = rng.random_range(0..=w - cw);
            return CropRect {
                top,
                left,
                height: ch,
                width: cw,
            };
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < ratio.0 {
        (w, ((w as f64 / ratio.0).round() as usize).max(1))
    } else if in_ratio > ratio.1 {
        (((h as f64 * ratio.1).round() as usize).max(1), h)
    } else {
        (w, h)
    };
    CropRect {
        top: (h - ch.min(h)) / 2,
        left: (w - cw.min(w)) / 2,
        height: ch.min(h),
        width: cw.min(w),
    }
}

/// Uniform in `[lo, hi)` (`lo` if the range is empty), as Python's `random.uniform`.
pub(crate) fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Crops `r` and resizes it to `size x size` in one resampling pass.
pub fn resized_crop(img: &RgbImage, r: CropRect, size: usize, filter: Interpolation) -> RgbImage {
    let bx = (
        r.left as f64,
        r.top as f64,
        (r.left + r.width) as f64,
        (r.top + r.height) as f64,
    );
    resize_box(img, bx, size, size, filter)
}

/// Python's `round` (half to even), which torchvision's center crop uses.
fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - x.signum()) as i64
    } else {
        r as i64
    }
}

/// timm's evaluation geometry: resize the shorter side to `floor(size / crop_pct)` (the longer
/// side `int(new_short * long / short)`, as torchvision's `Resize(int)`), then center-crop
/// `size x size` (zero padding if the image is smaller, as torchvision's `CenterCrop`).
pub fn eval_resize_crop(
    img: &RgbImage,
    size: usize,
    crop_pct: f64,
    filter: Interpolation,
) -> RgbImage {
    let scale_size = ((size as f64 / crop_pct).floor() as usize).max(1);
    let (w, h) = (img.width, img.height);
    let (nw, nh) = if w <= h {
        (
            scale_size,
            (scale_size as u64 * h as u64 / w as u64) as usize,
        )
    } else {
        (
            (scale_size as u64 * w as u64 / h as u64) as usize,
            scale_size,
        )
    };
    let resized = super::resize::resize(img, nw.max(1), nh.max(1), filter);
    center_crop(&resized, size)
}

/// torchvision's `CenterCrop(size)`: offsets `round((dim - size) / 2)`, zero padding if smaller.
pub fn center_crop(img: &RgbImage, size: usize) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let top = round_half_even((h as f64 - size as f64) / 2.0);
    let left = round_half_even((w as f64 - size as f64) / 2.0);
    let mut out = RgbImage::filled(size, size, [0, 0, 0]);
    for y in 0..size {
        let sy = y as i64 + top;
        if sy < 0 || sy >= h as i64 {
            continue;
        }
        for x in 0..size {
            let sx = x as i64 + left;
            if sx < 0 || sx >= w as i64 {
                continue;
            }
            let s = (sy as usize * w + sx as usize) * 3;
            let d = (y * size + x) * 3;
            out.data[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn rrc_rects_fit_and_respect_scale_bounds() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..500 {
            let r = rrc_params(500, 375, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(r.top + r.height <= 375 && r.left + r.width <= 500);
            let frac = (r.width * r.height) as f64 / (500.0 * 375.0);
            assert!(frac > 0.07 && frac <= 1.0, "{frac}");
        }
        // Impossible scale forces the fallback: central crop clamped to the ratio range.
        let r = rrc_params(1000, 100, (2.0, 3.0), (0.75, 4.0 / 3.0), &mut rng);
        assert_eq!((r.width, r.height, r.left, r.top), (133, 100, 433, 0));
    }

    #[test]
    fn eval_geometry_matches_torchvision_sizes() {
        // 500x375, size 224, crop_pct 0.875 -> short side 256, long int(256*500/375) = 341.
        let img = RgbImage::filled(500, 375, [9, 9, 9]);
        let out = eval_resize_crop(&img, 224, 0.875, Interpolation::Bilinear);
        assert_eq!((out.width, out.height), (224, 224));
        assert_eq!(round_half_even(58.5), 58);
        assert_eq!(round_half_even(59.5), 60);
        let small = center_crop(&RgbImage::filled(2, 2, [7, 7, 7]), 4);
        assert_eq!(&small.data[0..3], &[0, 0, 0]);
        assert_eq!(&small.data[(4 + 1) * 3..(4 + 1) * 3 + 3], &[7, 7, 7]);
    }
}
