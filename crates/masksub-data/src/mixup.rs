//! Mixup / CutMix on a batch with timm's `Mixup` semantics (mode `batch`): one lambda per
//! batch; with both alphas set, CutMix is chosen with probability `switch_prob`; sample i is
//! mixed with sample B-1-i (the flipped batch); the CutMix box is clipped and lambda corrected
//! to the pasted area; targets are `lam * onehot(y) + (1 - lam) * onehot(flip(y))`, each one-hot
//! carrying label smoothing (`off = s / K`, `on = 1 - s + off`).

use rand::Rng;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

/// timm's `--mixup`, `--cutmix`, `--mixup-prob`, `--mixup-switch-prob`, `--smoothing`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixupConfig {
    pub mixup_alpha: f64,
    pub cutmix_alpha: f64,
    /// Probability of mixing a batch at all.
    pub prob: f64,
    /// Probability of CutMix instead of Mixup when both are enabled.
    pub switch_prob: f64,
    pub label_smoothing: f64,
}

impl Default for MixupConfig {
    /// DeiT-style: mixup 0.8, cutmix 1.0, always on, switch 0.5, smoothing 0.1.
    fn default() -> Self {
        MixupConfig {
            mixup_alpha: 0.8,
            cutmix_alpha: 1.0,
            prob: 1.0,
            switch_prob: 0.5,
            label_smoothing: 0.1,
        }
    }
}

impl MixupConfig {
    pub fn is_active(&self) -> bool {
        self.prob > 0.0 && (self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0)
    }

    /// Mixes `images` (B x C x H x W) in place and returns the (B x K) soft targets. `B` must be
    /// even (as timm asserts); an odd batch is an error.
    pub fn apply(
        &self,
        images: &mut [f32],
        labels: &[u32],
        chw: (usize, usize, usize),
        num_classes: usize,
        rng: &mut impl Rng,
    ) -> Result<Vec<f32>, String> {
        let b = labels.len();
        if !b.is_multiple_of(2) {
            return Err(format!("mixup/cutmix needs an even batch size, got {b}"));
        }
        let (c, h, w) = chw;
        let plane = h * w;
        let n = c * plane;
        let mut lam = 1.0f64;
        let mut use_cutmix = false;
        if self.is_active() && rng.random::<f64>() < self.prob {
            let beta = |a: f64, rng: &mut _| Beta::new(a, a).map(|d| d.sample(rng)).unwrap_or(1.0);
            if self.mixup_alpha > 0.0 && self.cutmix_alpha > 0.0 {
                use_cutmix = rng.random::<f64>() < self.switch_prob;
                lam = if use_cutmix {
                    beta(self.cutmix_alpha, rng)
                } else {
                    beta(self.mixup_alpha, rng)
                };
            } else if self.mixup_alpha > 0.0 {
                lam = beta(self.mixup_alpha, rng);
            } else {
                use_cutmix = true;
                lam = beta(self.cutmix_alpha, rng);
            }
        }
        if lam < 1.0 {
            let orig = images.to_vec();
            if use_cutmix {
                let (yl, yh, xl, xh) = rand_bbox(h, w, lam, rng);
                lam = 1.0 - ((yh - yl) * (xh - xl)) as f64 / plane as f64;
                for i in 0..b {
                    let j = b - 1 - i;
                    for ch in 0..c {
                        for y in yl..yh {
                            let d = i * n + ch * plane + y * w;
                            let s = j * n + ch * plane + y * w;
                            images[d + xl..d + xh].copy_from_slice(&orig[s + xl..s + xh]);
                        }
                    }
                }
            } else {
                let (l, m) = (lam as f32, (1.0 - lam) as f32);
                for i in 0..b {
                    let j = b - 1 - i;
                    let (dst, src) = (&mut images[i * n..(i + 1) * n], &orig[j * n..(j + 1) * n]);
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d = *d * l + *s * m;
                    }
                }
            }
        }
        let off = self.label_smoothing / num_classes as f64;
        let on = 1.0 - self.label_smoothing + off;
        let mut targets = vec![0f32; b * num_classes];
        for i in 0..b {
            let row = &mut targets[i * num_classes..(i + 1) * num_classes];
            for (k, t) in row.iter_mut().enumerate() {
                let y1 = if labels[i] as usize == k { on } else { off };
                let y2 = if labels[b - 1 - i] as usize == k {
                    on
                } else {
                    off
                };
                *t = (y1 * lam + y2 * (1.0 - lam)) as f32;
            }
        }
        Ok(targets)
    }
}

/// timm's `rand_bbox` (margin 0): a box of `int(H*sqrt(1-lam)) x int(W*sqrt(1-lam))` around a
/// uniform center, clipped to the image. Returns (y_lo, y_hi, x_lo, x_hi).
fn rand_bbox(h: usize, w: usize, lam: f64, rng: &mut impl Rng) -> (usize, usize, usize, usize) {
    let ratio = (1.0 - lam).max(0.0).sqrt();
    let (cut_h, cut_w) = ((h as f64 * ratio) as i64, (w as f64 * ratio) as i64);
    let cy = rng.random_range(0..h as i64);
    let cx = rng.random_range(0..w as i64);
    let clip = |v: i64, hi: usize| v.clamp(0, hi as i64) as usize;
    (
        clip(cy - cut_h / 2, h),
        clip(cy + cut_h / 2, h),
        clip(cx - cut_w / 2, w),
        clip(cx + cut_w / 2, w),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn targets_sum_to_one_and_match_the_pixel_mix() {
        let cfg = MixupConfig {
            cutmix_alpha: 0.0,
            ..MixupConfig::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        // Two 1x1x1 images with values 1 and 0, labels 0 and 1, 2 classes.
        let mut img = vec![1.0f32, 0.0];
        let t = cfg
            .apply(&mut img, &[0, 1], (1, 1, 1), 2, &mut rng)
            .unwrap();
        let lam = img[0] as f64;
        assert!(lam > 0.0 && lam < 1.0);
        let (off, on) = (0.05, 0.95);
        assert!((t[0] as f64 - (on * lam + off * (1.0 - lam))).abs() < 1e-6);
        assert!((t[0] + t[1] - 1.0).abs() < 1e-6 && (t[2] + t[3] - 1.0).abs() < 1e-6);
        assert!(cfg
            .apply(&mut [0.0; 3], &[0, 1, 2], (1, 1, 1), 3, &mut rng)
            .is_err());
    }

    #[test]
    fn cutmix_lambda_is_the_kept_area() {
        let cfg = MixupConfig {
            mixup_alpha: 0.0,
            label_smoothing: 0.0,
            ..MixupConfig::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for _ in 0..20 {
            let (h, w) = (8, 8);
            let mut img: Vec<f32> = [vec![1.0; 64], vec![0.0; 64]].concat();
            let t = cfg
                .apply(&mut img, &[0, 1], (1, h, w), 2, &mut rng)
                .unwrap();
            let kept = img[..64].iter().filter(|&&v| v == 1.0).count() as f32 / 64.0;
            assert!((t[0] - kept).abs() < 1e-6, "{} vs {kept}", t[0]);
        }
    }
}
