//! Derivation of independent RNG seeds from (seed, epoch, ...) tuples.
//!
//! Every random decision gets its own `ChaCha8Rng` seeded from a hash of what it depends on,
//! so results are reproducible and independent of thread scheduling and batch boundaries.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Domain tags keep the epoch-order stream and the per-sample augmentation streams apart.
const ORDER_TAG: u64 = 0x6f72_6465_7221; // "order!"
const AUGMENT_TAG: u64 = 0x6175_676d_6e74; // "augmnt"

/// SplitMix64 finalizer: a bijective, well-mixing map on u64.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Order-sensitive hash of a tuple of u64s.
fn mix(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x5eed_5eed_5eed_5eed, |h, &p| splitmix64(h ^ splitmix64(p)))
}

/// RNG for the epoch's sample permutation.
pub(crate) fn order_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(&[ORDER_TAG, seed, epoch as u64]))
}

/// RNG for augmenting dataset sample `index` in `epoch`.
pub(crate) fn sample_rng(seed: u64, epoch: usize, index: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(&[AUGMENT_TAG, seed, epoch as u64, index as u64]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_differ_by_every_component() {
        let base: u64 = sample_rng(1, 2, 3).random();
        assert_eq!(base, sample_rng(1, 2, 3).random::<u64>());
        assert_ne!(base, sample_rng(0, 2, 3).random::<u64>());
        assert_ne!(base, sample_rng(1, 3, 3).random::<u64>());
        assert_ne!(base, sample_rng(1, 2, 4).random::<u64>());
        assert_ne!(
            order_rng(1, 2).random::<u64>(),
            order_rng(2, 1).random::<u64>()
        );
    }
}
