//! Which dataset indices a rank visits in an epoch, in order.

use rand::seq::SliceRandom;

use crate::seeds::order_rng;

/// Samples each rank sees per epoch: `ceil(n / world_size)` (0 for an empty dataset).
pub(crate) fn per_rank_len(n: usize, world_size: usize) -> usize {
    if n == 0 {
        0
    } else {
        n.div_ceil(world_size)
    }
}

/// The dataset indices rank `rank` of `world_size` visits in `epoch`.
///
/// The epoch order is a permutation of `0..n` (identity without `shuffle`), shared by all
/// ranks because it depends only on (seed, epoch). It is padded by wrapping around to a
/// multiple of `world_size`, and rank r takes positions r, r+W, r+2W, ... — the scheme of
/// torch's `DistributedSampler`, so every rank runs the same number of steps.
pub(crate) fn rank_indices(
    n: usize,
    shuffle: bool,
    seed: u64,
    epoch: usize,
    rank: usize,
    world_size: usize,
) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        order.shuffle(&mut order_rng(seed, epoch));
    }
    let total = per_rank_len(n, world_size) * world_size;
    (rank..total)
        .step_by(world_size)
        .map(|pos| order[pos % n])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_order_without_shuffle() {
        assert_eq!(rank_indices(5, false, 9, 3, 0, 1), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn wrap_around_padding_matches_distributed_sampler() {
        // n = 5, W = 3: padded order 0 1 2 3 4 0 -> rank 0: 0 3, rank 1: 1 4, rank 2: 2 0.
        assert_eq!(rank_indices(5, false, 0, 0, 0, 3), vec![0, 3]);
        assert_eq!(rank_indices(5, false, 0, 0, 1, 3), vec![1, 4]);
        assert_eq!(rank_indices(5, false, 0, 0, 2, 3), vec![2, 0]);
    }

    #[test]
    fn more_ranks_than_samples_still_wraps() {
        // n = 2, W = 5: padded 0 1 0 1 0.
        let got: Vec<Vec<usize>> = (0..5).map(|r| rank_indices(2, false, 0, 0, r, 5)).collect();
        assert_eq!(got, vec![vec![0], vec![1], vec![0], vec![1], vec![0]]);
    }

    #[test]
    fn empty_dataset_yields_nothing() {
        assert!(rank_indices(0, true, 0, 0, 0, 4).is_empty());
        assert_eq!(per_rank_len(0, 4), 0);
    }
}
