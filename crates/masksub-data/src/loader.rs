//! Epoch iteration over an [`InMemoryDataset`] as batches of candle tensors, with seeded
//! shuffling, data-parallel sharding, per-sample augmentation and one-batch-ahead prefetch.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::augment::AugmentConfig;
use crate::dataset::InMemoryDataset;
use crate::error::{DataError, Result};
use crate::prefetch::{HostBatch, Job, Transform, Worker};
use crate::sampler::{per_rank_len, rank_indices};

/// How many batches may be queued towards / back from the prefetch worker.
const PREFETCH_DEPTH: usize = 2;

/// Batching, ordering and sharding settings.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Draw a fresh permutation every epoch (from `seed` and the epoch number).
    pub shuffle: bool,
    /// Skip the last batch of an epoch if it is smaller than `batch_size`.
    pub drop_last: bool,
    pub seed: u64,
    /// This process's index in data-parallel training, `0..world_size`.
    pub rank: usize,
    pub world_size: usize,
    /// Training augmentation; `None` only normalizes (evaluation).
    pub augment: Option<AugmentConfig>,
}

impl Default for LoaderConfig {
    /// Batch 128, shuffled, keep the last partial batch, single process, no augmentation.
    fn default() -> Self {
        LoaderConfig {
            batch_size: 128,
            shuffle: true,
            drop_last: false,
            seed: 0,
            rank: 0,
            world_size: 1,
            augment: None,
        }
    }
}

/// One batch on the loader's device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// (B, C, H, W) `f32`, normalized (and augmented if configured).
    pub images: Tensor,
    /// (B,) `u32` class indices.
    pub labels: Tensor,
    /// Dataset index of each row, for tests and debugging (empty for streamed data).
    pub indices: Vec<usize>,
    /// (B, num_classes) soft targets when Mixup/CutMix mixed the batch; `None` = use `labels`.
    pub targets: Option<Tensor>,
}

/// Produces the batches of each epoch for one rank.
#[derive(Debug)]
pub struct BatchLoader<'a> {
    ds: &'a InMemoryDataset,
    cfg: LoaderConfig,
    device: Device,
}

impl<'a> BatchLoader<'a> {
    /// Validates: batch_size > 0, world_size > 0, rank < world_size (`DataError::Config`
    /// naming the field), and that the dataset's buffers match its shape (`DataError::Shape`),
    /// so batching itself cannot fail on bad sizes later.
    pub fn new(ds: &'a InMemoryDataset, cfg: LoaderConfig, device: Device) -> Result<Self> {
        if cfg.batch_size == 0 {
            return Err(config_err("batch_size", "must be > 0"));
        }
        if cfg.world_size == 0 {
            return Err(config_err("world_size", "must be > 0"));
        }
        if cfg.rank >= cfg.world_size {
            return Err(config_err(
                "rank",
                format!("{} must be < world_size {}", cfg.rank, cfg.world_size),
            ));
        }
        check_dataset(ds)?;
        Ok(BatchLoader { ds, cfg, device })
    }

    /// Number of batches this rank yields per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = per_rank_len(self.ds.len(), self.cfg.world_size);
        if self.cfg.drop_last {
            n / self.cfg.batch_size
        } else {
            n.div_ceil(self.cfg.batch_size)
        }
    }

    pub fn dataset(&self) -> &'a InMemoryDataset {
        self.ds
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Iterator over the epoch's batches.
    ///
    /// Order: a permutation of `0..N` drawn from `ChaCha8Rng` seeded by (seed, epoch)
    /// (identity if `!shuffle`); rank r takes positions r, r+W, r+2W, ... of it, padded by
    /// wrap-around so all ranks get the same count (torch's `DistributedSampler`); then
    /// chunked into batches, the last partial one dropped if `drop_last`. Each sample's
    /// augmentation RNG is seeded from (seed, epoch, dataset index), so batches do not depend
    /// on thread count or prefetching. The next batch is prepared on a background thread
    /// while the caller works on the current one (see `prefetch`).
    pub fn epoch(&self, epoch: usize) -> impl Iterator<Item = Result<Batch>> + '_ {
        let cfg = &self.cfg;
        let order = rank_indices(
            self.ds.len(),
            cfg.shuffle,
            cfg.seed,
            epoch,
            cfg.rank,
            cfg.world_size,
        );
        let mut batches: Vec<Vec<usize>> = order
            .chunks(cfg.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        if cfg.drop_last && batches.last().is_some_and(|b| b.len() < cfg.batch_size) {
            batches.pop();
        }
        let transform = Arc::new(Transform {
            channels: self.ds.channels,
            height: self.ds.height,
            width: self.ds.width,
            mean: self.ds.mean.clone(),
            std: self.ds.std.clone(),
            augment: cfg.augment.clone(),
            seed: cfg.seed,
            epoch,
        });
        // Without a thread (spawn failure, or nothing to do) batches are built inline:
        // slower to overlap, identical in content.
        let worker = if batches.is_empty() {
            None
        } else {
            Worker::spawn(Arc::clone(&transform), PREFETCH_DEPTH).ok()
        };
        EpochIter {
            ds: self.ds,
            device: &self.device,
            batches,
            submitted: 0,
            received: 0,
            transform,
            worker,
            failed: false,
        }
    }
}

fn config_err(field: &'static str, msg: impl Into<String>) -> DataError {
    DataError::Config {
        field,
        msg: msg.into(),
    }
}

/// The public fields of a dataset can be edited; make sure they are still consistent.
fn check_dataset(ds: &InMemoryDataset) -> Result<()> {
    let shape_err = |msg: String| DataError::Shape {
        name: ds.name.clone(),
        msg,
    };
    let (c, h, w) = (ds.channels, ds.height, ds.width);
    if c == 0 || h == 0 || w == 0 {
        return Err(shape_err(format!(
            "image shape {c}x{h}x{w} has a zero dimension"
        )));
    }
    let expected = ds
        .len()
        .checked_mul(ds.sample_len())
        .ok_or_else(|| shape_err("image buffer size overflows".to_string()))?;
    if ds.images.len() != expected {
        return Err(shape_err(format!(
            "{} labels of {c}x{h}x{w} need {expected} pixel bytes, got {}",
            ds.len(),
            ds.images.len()
        )));
    }
    if ds.mean.len() != c || ds.std.len() != c {
        return Err(shape_err(format!(
            "mean/std have {}/{} entries for {c} channels",
            ds.mean.len(),
            ds.std.len()
        )));
    }
    if let Some(bad) = ds.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(shape_err(format!("std {bad} is not a positive number")));
    }
    Ok(())
}

/// State of one epoch: which batches were handed to the worker and which were returned.
struct EpochIter<'s> {
    ds: &'s InMemoryDataset,
    device: &'s Device,
    batches: Vec<Vec<usize>>,
    submitted: usize,
    received: usize,
    transform: Arc<Transform>,
    worker: Option<Worker>,
    failed: bool,
}

impl EpochIter<'_> {
    /// Copies batch `i`'s raw samples out of the dataset.
    fn job(&self, i: usize) -> Job {
        let indices = self.batches[i].clone();
        let mut pixels = Vec::with_capacity(indices.len() * self.ds.sample_len());
        for &idx in &indices {
            pixels.extend_from_slice(self.ds.image(idx));
        }
        let labels = indices.iter().map(|&idx| self.ds.labels[idx]).collect();
        Job {
            indices,
            pixels,
            labels,
        }
    }

    /// The next host batch, from the worker (keeping one batch in flight) or built inline.
    fn next_host(&mut self) -> Result<HostBatch> {
        let Some(worker) = &self.worker else {
            let batch = self.transform.run(self.job(self.received));
            self.received += 1;
            return Ok(batch);
        };
        while self.submitted < self.batches.len() && self.submitted <= self.received + 1 {
            if !worker.submit(self.job(self.submitted)) {
                break;
            }
            self.submitted += 1;
        }
        let batch = worker.recv().ok_or_else(|| {
            DataError::Worker(format!(
                "stopped after {} of {} batches",
                self.received,
                self.batches.len()
            ))
        })?;
        self.received += 1;
        Ok(batch)
    }

    fn to_device(&self, host: HostBatch) -> Result<Batch> {
        let b = host.indices.len();
        let (c, h, w) = (self.ds.channels, self.ds.height, self.ds.width);
        Ok(Batch {
            images: Tensor::from_vec(host.images, (b, c, h, w), self.device)?,
            labels: Tensor::from_vec(host.labels, b, self.device)?,
            indices: host.indices,
            targets: None,
        })
    }
}

impl Iterator for EpochIter<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.received >= self.batches.len() {
            return None;
        }
        let batch = self.next_host().and_then(|host| self.to_device(host));
        // After an error, stop: the remaining batches could not be delivered in order.
        self.failed = batch.is_err();
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.failed {
            0
        } else {
            self.batches.len() - self.received
        };
        (left, Some(left))
    }
}
