//! Derivation of independent RNG seeds for the data pipeline from (seed, epoch, ...) tuples, via
//! the run-wide seeding of masksub-core: results are reproducible and independent of thread
//! scheduling and batch boundaries.

use masksub_core::rng::{purpose, seeded};
use rand_chacha::ChaCha8Rng;

/// RNG for the epoch's sample permutation.
pub(crate) fn order_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    seeded(&[purpose::DATA_ORDER, seed, epoch as u64])
}

/// RNG for augmenting dataset sample `index` in `epoch`.
pub(crate) fn sample_rng(seed: u64, epoch: usize, index: usize) -> ChaCha8Rng {
    seeded(&[purpose::AUGMENT, seed, epoch as u64, index as u64])
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

/// Sub-streams of the streaming loader, folded in after the purpose so they never collide
/// with the in-memory loader's (seed, epoch[, index]) streams.
pub(crate) mod stream_tag {
    pub const SHARD_ORDER: u64 = 0x0073_6861_7264;
    pub const BUFFER: u64 = 0x6275_6666;
    pub const SAMPLE: u64 = 0x7361_6d70;
    pub const MIXUP: u64 = 0x006d_6978;
}

/// RNG of a streaming sub-stream: (purpose, tag, seed, parts...).
pub(crate) fn stream_rng(purpose: u64, tag: u64, seed: u64, parts: &[u64]) -> ChaCha8Rng {
    let mut all = vec![purpose, tag, seed];
    all.extend_from_slice(parts);
    seeded(&all)
}
