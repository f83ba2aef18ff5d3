//! masksub-data: datasets, IDX decoding, light augmentation and batching into candle tensors.
//!
//! The whole dataset is kept in memory as `u8` pixels (Fashion-MNIST is 47 MB); images are
//! converted to normalized `f32` only per batch, on rayon, by [`loader::BatchLoader`].

pub mod augment;
pub mod dataset;
pub mod error;
pub mod idx;
pub mod loader;
mod prefetch;
mod sampler;
mod seeds;
mod source;
mod stats;

pub use augment::AugmentConfig;
pub use dataset::{InMemoryDataset, Split};
pub use error::DataError;
pub use loader::{Batch, BatchLoader, LoaderConfig};
