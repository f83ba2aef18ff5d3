//! Seeded random streams: every random decision in a run derives from the run seed, so a run
//! (and a resumed run) is reproducible, and independent streams never share state.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A stream keyed by the run seed and a purpose tag plus an index (e.g. step number, rank).
/// SplitMix64-style mixing keeps nearby keys far apart.
pub fn stream(seed: u64, purpose: u64, index: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(seed ^ mix(purpose)) ^ index))
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Purpose tags for [`stream`].
pub mod purpose {
    pub const MASK: u64 = 1;
    pub const DROP_PATH: u64 = 2;
    pub const INIT: u64 = 3;
    pub const DATA: u64 = 4;
}
