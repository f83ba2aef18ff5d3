//! masksub-data: datasets, decoding, augmentation and batching into candle tensors.
//!
//! Two paths: small datasets (IDX) are kept in memory as `u8` pixels and batched by
//! [`loader::BatchLoader`]; ImageNet-style data streams from WebDataset tar shards (local, brace
//! pattern or Hugging Face Hub) or an ImageFolder through [`stream::StreamLoader`], decoded and
//! augmented on worker threads.

pub mod augment;
mod buffer_pool;
pub mod dataset;
pub mod decode;
pub mod error;
pub mod hub;
pub mod idx;
pub mod imagefolder;
pub mod loader;
pub mod mixup;
mod prefetch;
pub mod rand_augment;
pub mod random_erasing;
mod sampler;
mod seeds;
pub mod shards;
mod source;
mod stats;
pub mod stream;
pub mod tar;
pub mod transforms;
pub mod wds;
pub mod writer;

pub use augment::AugmentConfig;
pub use dataset::{InMemoryDataset, Split};
pub use error::DataError;
pub use hub::HubOptions;
pub use loader::{Batch, BatchLoader, LoaderConfig};
pub use mixup::MixupConfig;
pub use stream::{StreamConfig, StreamDataset, StreamEpoch, StreamLoader};
pub use transforms::ImageAugConfig;
