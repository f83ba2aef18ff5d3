//! RandAugment as timm's `rand_augment_transform` parses it: `rand-m9-mstd0.5-inc1` means
//! magnitude 9 (of 10), magnitude noise std 0.5, the "increasing" op set; `n` ops per image
//! (default 2, drawn with replacement), each applied with probability `p` (default 0.5).
//!
//! Affine ops sample bilinearly (timm picks bilinear or bicubic at random) and fill with
//! timm's ImageNet mean color (124, 116, 104).

use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::decode::RgbImage;
use crate::transforms::color;

const LEVEL_DENOM: f64 = 10.0;
const FILL: [u8; 3] = [124, 116, 104];

/// The ops of timm's `_RAND_TRANSFORMS` / `_RAND_INCREASING_TRANSFORMS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    Solarize,
    SolarizeAdd,
    Color,
    Contrast,
    Brightness,
    Sharpness,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
}

const OPS: [Op; 15] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::Posterize,
    Op::Solarize,
    Op::SolarizeAdd,
    Op::Color,
    Op::Contrast,
    Op::Brightness,
    Op::Sharpness,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateXRel,
    Op::TranslateYRel,
];

/// A parsed policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RandAugment {
    pub magnitude: f64,
    pub magnitude_std: f64,
    pub magnitude_max: f64,
    pub num_layers: usize,
    pub prob: f64,
    /// The "increasing" variants (severity grows with magnitude for every op).
    pub increasing: bool,
}

impl RandAugment {
    /// Parses timm's config string; an unknown section is an error naming it.
    pub fn parse(policy: &str) -> Result<Self, String> {
        let mut parts = policy.split('-');
        if parts.next() != Some("rand") {
            return Err(format!(
                "RandAugment policy `{policy}` must start with `rand`"
            ));
        }
        let mut ra = RandAugment {
            magnitude: 10.0,
            magnitude_std: 0.0,
            magnitude_max: 10.0,
            num_layers: 2,
            prob: 0.5,
            increasing: false,
        };
        for part in parts {
            let num = |key: &str| -> Result<f64, String> {
                part[key.len()..]
                    .parse::<f64>()
                    .map_err(|_| format!("RandAugment policy `{policy}`: bad value in `{part}`"))
            };
            if part.starts_with("mstd") {
                ra.magnitude_std = num("mstd")?;
            } else if part.starts_with("mmax") {
                ra.magnitude_max = num("mmax")?;
            } else if part.starts_with("inc") {
                ra.increasing = num("inc")? != 0.0;
            } else if part.starts_with('m') {
                ra.magnitude = num("m")?;
            } else if part.starts_with('n') {
                ra.num_layers = num("n")? as usize;
            } else if part.starts_with('p') {
                ra.prob = num("p")?;
            } else {
                return Err(format!(
                    "RandAugment policy `{policy}`: unsupported section `{part}`"
                ));
            }
        }
        Ok(ra)
    }

    /// Applies `num_layers` random ops.
    pub fn apply(&self, img: &mut RgbImage, rng: &mut impl Rng) {
        for _ in 0..self.num_layers {
            let op = OPS[rng.random_range(0..OPS.len())];
            if self.prob < 1.0 && rng.random::<f64>() > self.prob {
                continue;
            }
            let m = self.sample_magnitude(rng);
            self.apply_op(op, m, img, rng);
        }
    }

    fn sample_magnitude(&self, rng: &mut impl Rng) -> f64 {
        let mut m = self.magnitude;
        if self.magnitude_std > 0.0 {
            if self.magnitude_std.is_infinite() {
                m *= rng.random::<f64>();
            } else if let Ok(n) = Normal::new(m, self.magnitude_std) {
                m = n.sample(rng);
            }
        }
        m.clamp(0.0, self.magnitude_max)
    }

    fn apply_op(&self, op: Op, m: f64, img: &mut RgbImage, rng: &mut impl Rng) {
        let level = m / LEVEL_DENOM;
        let mut signed = |v: f64| if rng.random_bool(0.5) { -v } else { v };
        let (w, h) = (img.width as f64, img.height as f64);
        match op {
            Op::AutoContrast => color::autocontrast(img),
            Op::Equalize => color::equalize(img),
            Op::Invert => color::invert(img),
            Op::Rotate => {
                let a = -signed(level * 30.0).to_radians();
                let (c, s) = (a.cos(), a.sin());
                let (cx, cy) = (w / 2.0, h / 2.0);
                let m = [c, s, cx - c * cx - s * cy, -s, c, cy + s * cx - c * cy];
                *img = color::affine(img, m, FILL);
            }
            Op::Posterize => {
                let bits = (level * 4.0) as u32;
                color::posterize(
                    img,
                    if self.increasing {
                        4 - bits.min(4)
                    } else {
                        bits
                    },
                );
            }
            Op::Solarize => {
                let t = (level * 256.0) as u16;
                color::solarize(img, if self.increasing { 256 - t.min(256) } else { t });
            }
            Op::SolarizeAdd => color::solarize_add(img, (level * 110.0) as i32, 128),
            Op::Color | Op::Contrast | Op::Brightness | Op::Sharpness => {
                let f = if self.increasing {
                    1.0 + signed(level * 0.9)
                } else {
                    level * 1.8 + 0.1
                };
                match op {
                    Op::Color => color::saturation(img, f),
                    Op::Contrast => color::contrast(img, f),
                    Op::Brightness => color::brightness(img, f),
                    _ => color::sharpness(img, f),
                }
            }
            Op::ShearX => {
                let s = signed(level * 0.3);
                *img = color::affine(img, [1.0, s, 0.0, 0.0, 1.0, 0.0], FILL);
            }
            Op::ShearY => {
                let s = signed(level * 0.3);
                *img = color::affine(img, [1.0, 0.0, 0.0, s, 1.0, 0.0], FILL);
            }
            Op::TranslateXRel => {
                let t = signed(level * 0.45) * w;
                *img = color::affine(img, [1.0, 0.0, t, 0.0, 1.0, 0.0], FILL);
            }
            Op::TranslateYRel => {
                let t = signed(level * 0.45) * h;
                *img = color::affine(img, [1.0, 0.0, 0.0, 0.0, 1.0, t], FILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parses_timm_policy_strings() {
        let ra = RandAugment::parse("rand-m9-mstd0.5-inc1").unwrap();
        assert_eq!(
            ra,
            RandAugment {
                magnitude: 9.0,
                magnitude_std: 0.5,
                magnitude_max: 10.0,
                num_layers: 2,
                prob: 0.5,
                increasing: true
            }
        );
        let rsb = RandAugment::parse("rand-m7-mstd0.5-n3").unwrap();
        assert_eq!(
            (rsb.magnitude, rsb.num_layers, rsb.increasing),
            (7.0, 3, false)
        );
        assert!(RandAugment::parse("auto-m9").is_err());
        assert!(RandAugment::parse("rand-q1").unwrap_err().contains("q1"));
    }

    #[test]
    fn changes_images_deterministically_per_seed() {
        let img =
            RgbImage::from_raw(16, 16, (0..768).map(|i| (i * 7 % 256) as u8).collect()).unwrap();
        let ra = RandAugment::parse("rand-m9-mstd0.5-inc1-p1.0").unwrap();
        let run = |seed| {
            let mut x = img.clone();
            ra.apply(&mut x, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            x
        };
        assert_eq!(run(1), run(1));
        assert!((0..8).any(|s| run(s) != img));
        assert_eq!((run(2).width, run(2).height), (16, 16));
    }
}
