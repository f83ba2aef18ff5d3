//! timm's RandomErasing (`--reprob`, mode `pixel`): with probability `prob`, up to `max_count`
//! rectangles of area fraction in [0.02, 1/3] and log-uniform aspect in [0.3, 1/0.3] are
//! filled with per-pixel N(0, 1) noise, on the normalized CHW image.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::transforms::crop::uniform;

/// Erase settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomErasing {
    pub prob: f64,
    pub max_count: usize,
}

impl RandomErasing {
    /// Erases in place on `img` (C x H x W, normalized).
    pub fn apply(&self, img: &mut [f32], c: usize, h: usize, w: usize, rng: &mut impl Rng) {
        if self.prob <= 0.0 || rng.random::<f64>() > self.prob {
            return;
        }
        let count = if self.max_count <= 1 {
            1
        } else {
            rng.random_range(1..=self.max_count)
        };
        let area = (h * w) as f64;
        let (lr0, lr1) = (0.3f64.ln(), (1.0f64 / 0.3).ln());
        for _ in 0..count {
            for _ in 0..10 {
                let target = uniform(rng, 0.02, 1.0 / 3.0) * area / count as f64;
                let aspect = uniform(rng, lr0, lr1).exp();
                let eh = (target * aspect).sqrt().round() as usize;
                let ew = (target / aspect).sqrt().round() as usize;
                if ew < w && eh < h {
                    let top = rng.random_range(0..=h - eh);
                    let left = rng.random_range(0..=w - ew);
                    for ch in 0..c {
                        for y in top..top + eh {
                            let row =
                                &mut img[(ch * h + y) * w + left..(ch * h + y) * w + left + ew];
                            for v in row {
                                *v = StandardNormal.sample(rng);
                            }
                        }
                    }
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn erases_a_block_or_nothing() {
        let re = RandomErasing {
            prob: 1.0,
            max_count: 1,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut img = vec![5.0f32; 3 * 32 * 32];
        re.apply(&mut img, 3, 32, 32, &mut rng);
        let changed = img.iter().filter(|&&v| v != 5.0).count();
        // Area fraction 0.02-1/3 of 1024 px over 3 channels.
        assert!((3 * 15..=3 * 345).contains(&changed), "{changed}");
        let off = RandomErasing {
            prob: 0.0,
            max_count: 1,
        };
        let mut same = vec![5.0f32; 3 * 8 * 8];
        off.apply(&mut same, 3, 8, 8, &mut rng);
        assert!(same.iter().all(|&v| v == 5.0));
    }
}
