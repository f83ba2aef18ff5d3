//! The horizontal resampling pass with AVX2, bit-exact with PIL's fixed-point arithmetic.
//!
//! Over interleaved RGB the plain loop is scalar (three channels, a handful of taps), and it
//! was a third of a decode + RandomResizedCrop. Here four taps of one output pixel are one
//! `vpmaddwd` pair: the 16 bytes at the first tap are shuffled into 16-bit
//! `[R_k, R_k+1, G_k, G_k+1, B_k, B_k+1, 0, 0]` per 128-bit lane (taps k, k+1 in the low lane,
//! k+2, k+3 in the high one), and each 22-bit weight is split as `hi * 2^11 + lo` so both
//! halves fit `i16`; `sum(p * w) = (sum(p * hi) << 11) + sum(p * lo)` exactly in `i32`.

use std::arch::x86_64::*;

use super::resize::{pixel_plain, Coeffs, HALF, PRECISION_BITS};

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

/// The unreduced weighted sums of output `xx` (R, G, B, 0 in each 128-bit lane; the two lanes
/// add up to the pixel), or `None` where its 16-byte loads would pass the row's end.
#[inline(always)]
unsafe fn taps_sum(
    src: &[u8],
    xx: usize,
    c: &Coeffs,
    sw: &SplitWeights,
    shuffle: __m256i,
) -> Option<__m256i> {
    let (start, kw) = c.taps(xx);
    let groups = kw.len().div_ceil(4);
    let first = start * 3;
    // The last group reads 16 bytes from its first tap.
    if groups == 0 || first + 12 * groups + 4 > src.len() {
        return None;
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
    Some(_mm256_add_epi32(_mm256_slli_epi32(hi, LO_BITS as i32), lo))
}

/// One row of the horizontal pass (`src`: an input row, `dst`: the output row's RGB pixels),
/// two output pixels at a time so they share the final reduction and rounding.
///
/// # Safety
/// The CPU must support AVX2 (`masksub_simd::cpu_level() >= 3`).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn horizontal_row(src: &[u8], dst: &mut [u8], c: &Coeffs, sw: &SplitWeights) {
    let shuffle = _mm256_setr_epi8(
        0, -128, 3, -128, 1, -128, 4, -128, 2, -128, 5, -128, -128, -128, -128, -128, //
        6, -128, 9, -128, 7, -128, 10, -128, 8, -128, 11, -128, -128, -128, -128, -128,
    );
    let half = _mm256_set1_epi32(HALF);
    let out_w = dst.len() / 3;
    let mut xx = 0;
    while xx < out_w {
        // SAFETY: AVX2 is enabled for this function.
        let a = unsafe { taps_sum(src, xx, c, sw, shuffle) };
        let b = if xx + 1 < out_w {
            // SAFETY: as above.
            unsafe { taps_sum(src, xx + 1, c, sw, shuffle) }
        } else {
            None
        };
        let (Some(a), Some(b)) = (a, b) else {
            dst[xx * 3..xx * 3 + 3].copy_from_slice(&pixel_plain(src, xx, c));
            xx += 1;
            continue;
        };
        // Lane 0: pixel a's two halves added; lane 1: pixel b's.
        let sum = _mm256_add_epi32(
            _mm256_permute2x128_si256(a, b, 0x20),
            _mm256_permute2x128_si256(a, b, 0x31),
        );
        let q = _mm256_srai_epi32(_mm256_add_epi32(sum, half), PRECISION_BITS as i32);
        let q = _mm256_packus_epi32(q, q);
        let q = _mm256_packus_epi16(q, q);
        let pa = _mm256_cvtsi256_si32(q) as u32 as u64;
        let pb = _mm256_extract_epi32(q, 4) as u32 as u64;
        let six = (pa & 0xFF_FFFF) | ((pb & 0xFF_FFFF) << 24);
        dst[xx * 3..xx * 3 + 6].copy_from_slice(&six.to_le_bytes()[..6]);
        xx += 2;
    }
}
