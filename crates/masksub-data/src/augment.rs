//! Light training augmentation for small images: padded random crop + horizontal flip, fused
//! with the `u8 -> f32` normalization so each pixel is touched once.

use serde::{Deserialize, Serialize};

/// Augmentation settings (the CIFAR/MNIST-style "pad and crop, flip" recipe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Zero padding added on every side before a random crop back to HxW; 0 disables cropping.
    pub random_crop_padding: usize,
    /// Mirror left-right with probability 0.5.
    pub hflip: bool,
}

impl Default for AugmentConfig {
    /// Padding 2 (28x28 -> 32x32 -> random 28x28 crop) and random flips.
    fn default() -> Self {
        AugmentConfig {
            random_crop_padding: 2,
            hflip: true,
        }
    }
}

impl AugmentConfig {
    /// No augmentation: padding 0, no flip (output equals [`normalize_into`]).
    pub fn none() -> Self {
        AugmentConfig {
            random_crop_padding: 0,
            hflip: false,
        }
    }
}

/// Writes the augmented, normalized image into `out` (len `C*H*W`).
///
/// Zero-pads by `pad`, takes a random HxW crop (offsets uniform in `0..=2*pad`), flips
/// horizontally with p = 0.5 (if enabled), then maps each pixel to `(x/255 - mean[c]) / std[c]`.
/// Padding pixels are 0 (black) before normalization, as torchvision's `RandomCrop(padding)`.
/// Random draws happen in a fixed order (dy, dx, flip) and only for enabled steps.
///
/// # Panics
/// If `src` or `out` is not `c*h*w` long or `mean`/`std` have fewer than `c` entries.
#[allow(clippy::too_many_arguments)] // The flat signature is the crate's public contract.
pub fn augment_into(
    src: &[u8],
    c: usize,
    h: usize,
    w: usize,
    cfg: &AugmentConfig,
    mean: &[f32],
    std: &[f32],
    rng: &mut impl rand::Rng,
    out: &mut [f32],
) {
    let pad = cfg.random_crop_padding;
    let (dy, dx) = if pad > 0 {
        let span = pad.saturating_mul(2);
        (rng.random_range(0..=span), rng.random_range(0..=span))
    } else {
        (0, 0)
    };
    let flip = cfg.hflip && rng.random_bool(0.5);
    crop_flip_into(src, c, h, w, pad, dy, dx, flip, mean, std, out);
}

/// Writes `(x/255 - mean[c]) / std[c]` for every pixel of `src` into `out`.
///
/// # Panics
/// As [`augment_into`].
pub fn normalize_into(
    src: &[u8],
    c: usize,
    h: usize,
    w: usize,
    mean: &[f32],
    std: &[f32],
    out: &mut [f32],
) {
    crop_flip_into(src, c, h, w, 0, 0, 0, false, mean, std, out);
}

/// The deterministic core of [`augment_into`], with the crop offsets and flip given explicitly.
///
/// Output pixel (y, x) comes from the padded image at (y + dy, x' + dx), where x' is x, or
/// `w-1-x` when flipping (the flip is applied to the crop, as RandomCrop then
/// RandomHorizontalFlip). Offsets beyond `2*pad` are allowed and simply read more padding.
///
/// # Panics
/// As [`augment_into`].
#[allow(clippy::too_many_arguments)] // Explicit offsets make the crop testable.
pub fn crop_flip_into(
    src: &[u8],
    c: usize,
    h: usize,
    w: usize,
    pad: usize,
    dy: usize,
    dx: usize,
    flip: bool,
    mean: &[f32],
    std: &[f32],
    out: &mut [f32],
) {
    let plane = h * w;
    assert_eq!(
        src.len(),
        c * plane,
        "src must hold C*H*W = {c}x{h}x{w} bytes"
    );
    assert_eq!(
        out.len(),
        c * plane,
        "out must hold C*H*W = {c}x{h}x{w} floats"
    );
    assert!(
        mean.len() >= c && std.len() >= c,
        "mean/std need {c} channels"
    );
    if plane == 0 {
        return;
    }
    for (ch, (src_plane, out_plane)) in src.chunks(plane).zip(out.chunks_mut(plane)).enumerate() {
        let (m, s) = (mean[ch], std[ch]);
        let norm = |v: u8| (f32::from(v) / 255.0 - m) / s;
        let fill = norm(0);
        for (y, out_row) in out_plane.chunks_mut(w).enumerate() {
            let Some(sy) = source_coord(y, dy, pad, h) else {
                out_row.fill(fill);
                continue;
            };
            let src_row = &src_plane[sy * w..(sy + 1) * w];
            for (x, o) in out_row.iter_mut().enumerate() {
                let cx = if flip { w - 1 - x } else { x };
                *o = source_coord(cx, dx, pad, w).map_or(fill, |sx| norm(src_row[sx]));
            }
        }
    }
}

/// Maps a crop coordinate to the unpadded source, or `None` if it lands in the padding.
fn source_coord(i: usize, offset: usize, pad: usize, len: usize) -> Option<usize> {
    i.checked_add(offset)?.checked_sub(pad).filter(|&s| s < len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const MEAN: [f32; 2] = [0.25, 0.5];
    const STD: [f32; 2] = [0.5, 0.25];

    /// 2 channels of 4x5 with all-distinct non-zero pixels, so every crop/flip is unique.
    fn image() -> Vec<u8> {
        (0..40).map(|i| 5 + 6 * i as u8).collect()
    }

    fn norm(v: u8, ch: usize) -> f32 {
        (v as f32 / 255.0 - MEAN[ch]) / STD[ch]
    }

    fn crop(pad: usize, dy: usize, dx: usize, flip: bool) -> Vec<f32> {
        let mut out = vec![f32::NAN; 40];
        crop_flip_into(&image(), 2, 4, 5, pad, dy, dx, flip, &MEAN, &STD, &mut out);
        out
    }

    #[test]
    fn normalize_gives_expected_values() {
        let mut out = vec![0.0; 40];
        normalize_into(&image(), 2, 4, 5, &MEAN, &STD, &mut out);
        // Pixel 0 of channel 0 is 5; pixel 0 of channel 1 is 5 + 6*20 = 125.
        assert!((out[0] - (5.0 / 255.0 - 0.25) / 0.5).abs() < 1e-6);
        assert!((out[20] - (125.0 / 255.0 - 0.5) / 0.25).abs() < 1e-6);
        for (i, (&o, &v)) in out.iter().zip(&image()).enumerate() {
            assert!((o - norm(v, i / 20)).abs() < 1e-6, "pixel {i}");
        }
    }

    #[test]
    fn no_augmentation_equals_normalize() {
        let mut expected = vec![0.0; 40];
        normalize_into(&image(), 2, 4, 5, &MEAN, &STD, &mut expected);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut out = vec![0.0; 40];
        augment_into(
            &image(),
            2,
            4,
            5,
            &AugmentConfig::none(),
            &MEAN,
            &STD,
            &mut rng,
            &mut out,
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn flip_mirrors_each_row() {
        let (plain, flipped) = (crop(0, 0, 0, false), crop(0, 0, 0, true));
        for ch in 0..2 {
            for y in 0..4 {
                for x in 0..5 {
                    let i = ch * 20 + y * 5 + x;
                    assert_eq!(flipped[i], plain[ch * 20 + y * 5 + (4 - x)]);
                }
            }
        }
        assert_ne!(plain, flipped);
    }

    #[test]
    fn centered_crop_is_identity() {
        assert_eq!(crop(2, 2, 2, false), crop(0, 0, 0, false));
    }

    #[test]
    fn top_left_crop_has_zero_border_top_and_left() {
        let img = image();
        let out = crop(2, 0, 0, false);
        for ch in 0..2 {
            for y in 0..4 {
                for x in 0..5 {
                    let got = out[ch * 20 + y * 5 + x];
                    let want = if y < 2 || x < 2 {
                        norm(0, ch)
                    } else {
                        norm(img[ch * 20 + (y - 2) * 5 + (x - 2)], ch)
                    };
                    assert_eq!(got, want, "ch {ch} y {y} x {x}");
                }
            }
        }
    }

    #[test]
    fn bottom_right_crop_has_zero_border_bottom_and_right() {
        let img = image();
        let out = crop(1, 2, 2, false);
        // Row 3 and column 4 read padding; (0, 0) reads source (1, 1).
        assert_eq!(out[0], norm(img[5 + 1], 0));
        for x in 0..5 {
            assert_eq!(out[3 * 5 + x], norm(0, 0));
        }
        for y in 0..4 {
            assert_eq!(out[20 + y * 5 + 4], norm(0, 1));
        }
    }

    #[test]
    fn flip_applies_after_crop() {
        // Crop with dx = 0 puts padding on the left; flipping must move it to the right.
        let out = crop(1, 1, 0, true);
        let img = image();
        assert_eq!(out[4], norm(0, 0));
        assert_eq!(out[0], norm(img[3], 0));
    }

    #[test]
    fn random_offsets_stay_in_range_and_cover_all() {
        let cfg = AugmentConfig {
            random_crop_padding: 2,
            hflip: true,
        };
        let candidates: Vec<((usize, usize, bool), Vec<f32>)> = (0..=4)
            .flat_map(|dy| (0..=4).flat_map(move |dx| [(dy, dx, false), (dy, dx, true)]))
            .map(|k| (k, crop(2, k.0, k.1, k.2)))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for seed in 0..600 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut out = vec![0.0; 40];
            augment_into(&image(), 2, 4, 5, &cfg, &MEAN, &STD, &mut rng, &mut out);
            let hit = candidates.iter().find(|(_, c)| *c == out);
            let Some((k, _)) = hit else {
                panic!("seed {seed}: output is not any in-range crop/flip");
            };
            seen.insert(*k);
        }
        assert_eq!(seen.len(), 50, "all 25 offsets x 2 flips should occur");
    }

    #[test]
    fn config_defaults_and_strict_fields() {
        let cfg: AugmentConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(
            cfg,
            AugmentConfig {
                random_crop_padding: 2,
                hflip: true
            }
        );
        let cfg: AugmentConfig = serde_json::from_str(r#"{"hflip": false}"#).unwrap();
        assert_eq!(cfg.random_crop_padding, 2);
        assert!(!cfg.hflip);
        let err = serde_json::from_str::<AugmentConfig>(r#"{"padding": 4}"#).unwrap_err();
        assert!(err.to_string().contains("padding"), "{err}");
    }
}
