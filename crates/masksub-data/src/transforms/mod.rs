//! Per-sample image transforms: decoded RGB bytes in, normalized CHW `f32` out.
//!
//! Training follows timm's `transforms_imagenet_train` (RandomResizedCrop, flip, then
//! RandAugment or 3-Augment or nothing, ToTensor + Normalize, RandomErasing); evaluation its
//! `transforms_imagenet_eval` (resize to `img_size / crop_pct`, center crop, normalize).

pub mod color;
pub mod crop;
pub mod resize;
#[cfg(target_arch = "x86_64")]
mod resize_avx2;

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::decode::RgbImage;
use crate::rand_augment::RandAugment;
use crate::random_erasing::RandomErasing;
pub use crop::{eval_resize_crop, rrc_params, CropRect};
pub use resize::Interpolation;

/// ImageNet channel statistics (timm's IMAGENET_DEFAULT_MEAN / _STD).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Training interpolation; `random` picks bilinear or bicubic per sample, as timm's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainInterpolation {
    Bilinear,
    Bicubic,
    Random,
}

/// The augmentation recipe for RGB photos (the recipe flags of `masksub train`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageAugConfig {
    /// Output side in pixels.
    pub img_size: usize,
    /// RandomResizedCrop area fraction range.
    pub scale: (f64, f64),
    /// RandomResizedCrop aspect-ratio range.
    pub ratio: (f64, f64),
    pub interpolation: TrainInterpolation,
    /// Horizontal flip probability.
    pub hflip: f64,
    /// DeiT-III 3-Augment: one of grayscale / solarize / gaussian blur, then color jitter.
    pub three_augment: bool,
    /// Color jitter strength (brightness, contrast, saturation); 0 disables.
    pub color_jitter: f64,
    /// timm's `--aa` RandAugment policy, e.g. `rand-m9-mstd0.5-inc1`.
    pub auto_augment: Option<String>,
    /// RandomErasing probability (timm's `--reprob`) and max count (`--recount`).
    pub reprob: f64,
    pub recount: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Evaluation: resize the shorter side to `img_size / crop_pct`, then center crop.
    pub crop_pct: f64,
    pub eval_interpolation: Interpolation,
}

impl Default for ImageAugConfig {
    /// timm's ImageNet defaults at 224: RRC (0.08-1, 3/4-4/3, random interpolation), flip 0.5,
    /// no color jitter, no RandAugment, no erasing; eval crop_pct 0.875 bicubic.
    fn default() -> Self {
        ImageAugConfig {
            img_size: 224,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            interpolation: TrainInterpolation::Random,
            hflip: 0.5,
            three_augment: false,
            color_jitter: 0.0,
            auto_augment: None,
            reprob: 0.0,
            recount: 1,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            crop_pct: 0.875,
            eval_interpolation: Interpolation::Bicubic,
        }
    }
}

impl ImageAugConfig {
    /// Checks every field; errors name the field.
    pub fn validate(&self) -> Result<(), String> {
        let in01 = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("`{name}` = {v} is not in [0, 1]"))
            }
        };
        if self.img_size == 0 {
            return Err("`img_size` must be positive".into());
        }
        if !(self.scale.0 > 0.0 && self.scale.0 <= self.scale.1) {
            return Err(format!("`scale` {:?} must be 0 < lo <= hi", self.scale));
        }
        if !(self.ratio.0 > 0.0 && self.ratio.0 <= self.ratio.1) {
            return Err(format!("`ratio` {:?} must be 0 < lo <= hi", self.ratio));
        }
        in01("hflip", self.hflip)?;
        in01("reprob", self.reprob)?;
        in01("color_jitter", self.color_jitter)?;
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return Err(format!("`crop_pct` = {} is not in (0, 1]", self.crop_pct));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!("`std` {:?} must be positive", self.std));
        }
        if let Some(p) = &self.auto_augment {
            RandAugment::parse(p).map_err(|e| format!("`auto_augment`: {e}"))?;
        }
        Ok(())
    }

    /// Parsed RandAugment policy (validated before use).
    pub fn rand_augment(&self) -> Option<RandAugment> {
        self.auto_augment
            .as_deref()
            .and_then(|p| RandAugment::parse(p).ok())
    }

    /// Output length: `3 * img_size^2`.
    pub fn sample_len(&self) -> usize {
        3 * self.img_size * self.img_size
    }
}

/// The training transform of one decoded image into `out` (3 x S x S).
pub fn train_transform(
    img: &RgbImage,
    cfg: &ImageAugConfig,
    ra: Option<&RandAugment>,
    rng: &mut impl Rng,
    out: &mut [f32],
) {
    let r = rrc_params(img.width, img.height, cfg.scale, cfg.ratio, rng);
    let filter = match cfg.interpolation {
        TrainInterpolation::Bilinear => Interpolation::Bilinear,
        TrainInterpolation::Bicubic => Interpolation::Bicubic,
        TrainInterpolation::Random => {
            if rng.random_bool(0.5) {
                Interpolation::Bilinear
            } else {
                Interpolation::Bicubic
            }
        }
    };
    let flip = cfg.hflip > 0.0 && rng.random::<f64>() < cfg.hflip;
    let mut x = crop::resized_crop(img, r, cfg.img_size, filter);
    if let Some(ra) = ra {
        ra.apply(&mut x, rng);
    } else if cfg.three_augment {
        match rng.random_range(0..3) {
            0 => color::grayscale(&mut x),
            1 => color::solarize(&mut x, 128),
            _ => color::gaussian_blur(&mut x, crop::uniform(rng, 0.1, 2.0)),
        }
    }
    if cfg.color_jitter > 0.0 && ra.is_none() {
        color_jitter(&mut x, cfg.color_jitter, rng);
    }
    to_normalized_chw(&x, flip, &cfg.mean, &cfg.std, out);
    if cfg.reprob > 0.0 {
        let re = RandomErasing {
            prob: cfg.reprob,
            max_count: cfg.recount,
        };
        re.apply(out, 3, cfg.img_size, cfg.img_size, rng);
    }
}

/// The evaluation transform of one decoded image into `out` (3 x S x S).
pub fn eval_transform(img: &RgbImage, cfg: &ImageAugConfig, out: &mut [f32]) {
    let x = eval_resize_crop(img, cfg.img_size, cfg.crop_pct, cfg.eval_interpolation);
    to_normalized_chw(&x, false, &cfg.mean, &cfg.std, out);
}

/// torchvision `ColorJitter(s, s, s)`: brightness, contrast, saturation factors uniform in
/// [1-s, 1+s], applied in a random order.
pub fn color_jitter(img: &mut RgbImage, s: f64, rng: &mut impl Rng) {
    let mut order = [0usize, 1, 2];
    order.shuffle(rng);
    let factors: Vec<f64> = (0..3)
        .map(|_| crop::uniform(rng, (1.0 - s).max(0.0), 1.0 + s))
        .collect();
    for i in order {
        match i {
            0 => color::brightness(img, factors[0]),
            1 => color::contrast(img, factors[1]),
            _ => color::saturation(img, factors[2]),
        }
    }
}

/// HWC bytes -> CHW `(x / 255 - mean) / std` (ToTensor + Normalize), mirrored if `flip`.
pub fn to_normalized_chw(
    img: &RgbImage,
    flip: bool,
    mean: &[f32; 3],
    std: &[f32; 3],
    out: &mut [f32],
) {
    let (w, h) = (img.width, img.height);
    let plane = w * h;
    let mut lut = [[0f32; 256]; 3];
    for (c, l) in lut.iter_mut().enumerate() {
        for (v, o) in l.iter_mut().enumerate() {
            *o = (v as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    let (r, rest) = out[..3 * plane].split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for y in 0..h {
        let src = &img.data[y * w * 3..(y + 1) * w * 3];
        let (ro, go, bo) = (
            &mut r[y * w..(y + 1) * w],
            &mut g[y * w..(y + 1) * w],
            &mut b[y * w..(y + 1) * w],
        );
        for x in 0..w {
            let sx = if flip { w - 1 - x } else { x };
            let p = &src[sx * 3..sx * 3 + 3];
            ro[x] = lut[0][p[0] as usize];
            go[x] = lut[1][p[1] as usize];
            bo[x] = lut[2][p[2] as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn normalize_and_flip_place_pixels_in_chw() {
        let img = RgbImage::from_raw(2, 1, vec![255, 0, 0, 0, 255, 0]).unwrap();
        let mut out = vec![0f32; 6];
        to_normalized_chw(&img, false, &[0.0; 3], &[1.0; 3], &mut out);
        assert_eq!(out, vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        to_normalized_chw(&img, true, &[0.5; 3], &[0.5; 3], &mut out);
        assert_eq!(out, vec![-1.0, 1.0, 1.0, -1.0, -1.0, -1.0]);
    }

    #[test]
    fn every_recipe_produces_finite_output_of_the_right_size() {
        let img =
            RgbImage::from_raw(40, 30, (0..3600).map(|i| (i * 31 % 256) as u8).collect()).unwrap();
        let base = ImageAugConfig {
            img_size: 16,
            ..ImageAugConfig::default()
        };
        let recipes = [
            base.clone(),
            ImageAugConfig {
                three_augment: true,
                color_jitter: 0.3,
                ..base.clone()
            },
            ImageAugConfig {
                auto_augment: Some("rand-m9-mstd0.5-inc1".into()),
                reprob: 1.0,
                ..base.clone()
            },
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for cfg in recipes {
            cfg.validate().unwrap();
            let mut out = vec![f32::NAN; cfg.sample_len()];
            train_transform(&img, &cfg, cfg.rand_augment().as_ref(), &mut rng, &mut out);
            assert!(out.iter().all(|v| v.is_finite()));
        }
        let bad = ImageAugConfig {
            auto_augment: Some("rand-x".into()),
            ..base
        };
        assert!(bad.validate().unwrap_err().contains("auto_augment"));
    }
}
