//! The horizontal resampling pass with AVX2, bit-exact with PIL's fixed-point arithmetic.
//!
//! Over interleaved RGB the plain loop is scalar (three channels, a handful of taps), and it
//! was a third of a decode + RandomResizedCrop. Here four taps of one output pixel are one
//! `vpmaddwd` pair: the 16 bytes at the first tap are shuffled into 16-bit
//! `[R_k, R_k+1, G_k, G_k+1, B_k, B_k+1, 0, 0]` per 128-bit lane (taps k, k+1 in the low lane,
//! k+2, k+3 in the high one), and each 22-bit weight is split as `hi * 2^11 + lo` so both
//! halves fit `i16`; `sum(p * w) = (sum(p * hi) << 11) + sum(p * lo)` exactly in `i32`.

use std::arch::x86_64::*;

use super::resize::{clip8, Coeffs, HALF, PRECISION_BITS};

/// Bits of a weight in the low `i16` factor.
const LO_BITS: u32 = 11;
/// `i16`s per group of four taps: the low factors (16) then the high ones (16).
const GROUP: usize = 32;

/// Each output pixel's weights split and laid out for [`horizontal_row`]: `groups` groups of
/// four taps (zero-padded) per output.
pub(super) struct SplitWeights {
    data: Vec<i16>,
    groups: usize,
}

impl SplitWeights {
    pub(super) fn new(c: &Coeffs) -> Self {
        let groups = c.ksize.div_ceil(4);
        let out = c.starts.len();
        let mut data = vec![0i16; out * groups * GROUP];
        for xx in 0..out {
            let (_, kw) = c.taps(xx);
            for (k, &w) in kw.iter().enumerate() {
                let (lo, hi) = ((w & ((1 << LO_BITS) - 1)) as i16, (w >> LO_BITS) as i16);
                // Lane of tap k: low lane for k % 4 < 2; within it, i16 slot k % 2 of each pair.
                let base = (xx * groups + k / 4) * GROUP + (k % 4 / 2) * 8 + k % 2;
                for pair in 0..4 {
                    data[base + 2 * pair] = lo;
                    data[base + 16 + 2 * pair] = hi;
                }
            }
        }
        SplitWeights { data, groups }
    }
}

/// One row of the horizontal pass (`src`: an input row, `dst`: the output row's RGB pixels).
///
/// # Safety
/// The CPU must support AVX2 (`masksub_simd::cpu_level() >= 3`).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn horizontal_row(src: &[u8], dst: &mut [u8], c: &Coeffs, sw: &SplitWeights) {
    let shuffle = _mm256_setr_epi8(
        0, -128, 3, -128, 1, -128, 4, -128, 2, -128, 5, -128, -128, -128, -128, -128, //
        6, -128, 9, -128, 7, -128, 10, -128, 8, -128, 11, -128, -128, -128, -128, -128,
    );
    for (xx, o) in dst.chunks_exact_mut(3).enumerate() {
        let (start, kw) = c.taps(xx);
        let groups = kw.len().div_ceil(4);
        let first = start * 3;
        // The last group reads 16 bytes from its first tap.
        if groups == 0 || first + 12 * groups + 4 > src.len() {
            let mut acc = [HALF; 3];
            for (p, &w) in src[first..].chunks_exact(3).zip(kw) {
                for l in 0..3 {
                    acc[l] += p[l] as i32 * w;
                }
            }
            o.copy_from_slice(&acc.map(clip8));
            continue;
        }
        let mut lo = _mm256_setzero_si256();
        let mut hi = _mm256_setzero_si256();
        let weights = sw.data[xx * sw.groups * GROUP..].as_ptr();
        for g in 0..groups {
            // SAFETY: `first + 12 g + 16 <= src.len()` by the check above; the weights hold
            // `sw.groups >= groups` groups per output.
            let (px, wlo, whi) = unsafe {
                (
                    _mm_loadu_si128(src.as_ptr().add(first + 12 * g) as *const __m128i),
                    _mm256_loadu_si256(weights.add(g * GROUP) as *const __m256i),
                    _mm256_loadu_si256(weights.add(g * GROUP + 16) as *const __m256i),
                )
            };
            let v = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(px), shuffle);
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(v, wlo));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(v, whi));
        }
        let sum = _mm256_add_epi32(_mm256_slli_epi32(hi, LO_BITS as i32), lo);
        let sum = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256(sum, 1),
        );
        let q = _mm_srai_epi32(
            _mm_add_epi32(sum, _mm_set1_epi32(HALF)),
            PRECISION_BITS as i32,
        );
        let q = _mm_packus_epi16(_mm_packus_epi32(q, q), q);
        let rgb = (_mm_cvtsi128_si32(q) as u32).to_le_bytes();
        o.copy_from_slice(&rgb[..3]);
    }
}
