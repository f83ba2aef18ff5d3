//! Per-channel mean/std of `u8` images, used to normalize inputs to zero mean, unit variance.
//!
//! Computed from a per-channel histogram of byte values, so the sums are exact integers and
//! the result does not depend on summation order or the number of rayon threads.

use rayon::prelude::*;

/// Per-channel (mean, std) of `pixels / 255` for an (N, C, H, W) buffer (population std).
///
/// A channel with zero variance gets std 1.0, so normalizing it only centers it instead of
/// dividing by zero. An empty buffer gives mean 0, std 1.
pub(crate) fn channel_mean_std(
    pixels: &[u8],
    channels: usize,
    plane: usize,
) -> (Vec<f32>, Vec<f32>) {
    let image = channels * plane;
    let hist = if image == 0 {
        vec![[0u64; 256]; channels]
    } else {
        pixels
            .par_chunks(image)
            .fold(
                || vec![[0u64; 256]; channels],
                |mut h, img| {
                    for (c, chan) in img.chunks(plane).enumerate() {
                        for &v in chan {
                            h[c][v as usize] += 1;
                        }
                    }
                    h
                },
            )
            .reduce(|| vec![[0u64; 256]; channels], merge)
    };
    hist.iter().map(moments).unzip()
}

fn merge(mut a: Vec<[u64; 256]>, b: Vec<[u64; 256]>) -> Vec<[u64; 256]> {
    for (ha, hb) in a.iter_mut().zip(&b) {
        for (x, y) in ha.iter_mut().zip(hb) {
            *x += y;
        }
    }
    a
}

/// Mean and std of `v / 255` for a histogram of byte values.
fn moments(hist: &[u64; 256]) -> (f32, f32) {
    let (mut n, mut s, mut s2) = (0u128, 0u128, 0u128);
    for (v, &count) in hist.iter().enumerate() {
        let (v, count) = (v as u128, count as u128);
        n += count;
        s += v * count;
        s2 += v * v * count;
    }
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let mean = s as f64 / n;
    let var = (s2 as f64 / n - mean * mean).max(0.0);
    let std = var.sqrt() / 255.0;
    let std = if std > 0.0 { std } else { 1.0 };
    ((mean / 255.0) as f32, std as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_channel_stats_match_hand_computation() {
        // Two 1x2 images with 2 channels: channel 0 sees {0, 255, 0, 255}, channel 1 sees 51s.
        let px = [0, 255, 51, 51, 255, 0, 51, 51];
        let (mean, std) = channel_mean_std(&px, 2, 2);
        assert!((mean[0] - 0.5).abs() < 1e-6);
        assert!((std[0] - 0.5).abs() < 1e-6);
        assert!((mean[1] - 0.2).abs() < 1e-6);
        assert_eq!(std[1], 1.0, "constant channel falls back to std 1");
    }

    #[test]
    fn empty_buffer_gives_identity_normalization() {
        let (mean, std) = channel_mean_std(&[], 3, 4);
        assert_eq!(mean, vec![0.0; 3]);
        assert_eq!(std, vec![1.0; 3]);
    }
}
