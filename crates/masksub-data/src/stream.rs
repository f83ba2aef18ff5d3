//! Streaming epochs over tar shards or an ImageFolder: worker threads read their shards front
//! to back, shuffle through a bounded buffer, decode and transform, and hand samples to the
//! consumer through bounded queues; the consumer batches them (plus Mixup/CutMix) into tensors.
//!
//! Sharding: the epoch's shard order (shuffled from (seed, epoch) when training) is dealt to the
//! `world_size * workers` global workers round-robin, worker `rank * workers + w` taking shards
//! g, g+G, ...; with fewer shards than workers every worker reads all shards and keeps sample j
//! of each when `j % G == g`. The consumer takes one sample from each of its workers in turn, so
//! an epoch's batches depend on the seed, not on thread timing.
//!
//! Epoch length (as timm's): a training epoch is `floor(N / world_size / batch)` batches per
//! rank for N samples. Workers cycle through their shards if their share runs out first
//! (skipped bad samples, uneven shards), so all ranks run the same number of steps. With
//! repeated augmentation k, each sample read is emitted k times (differently augmented) in a
//! row, landing in the same batch; the epoch still has N samples, i.e. N/k distinct images.
//! Evaluation reads every sample exactly once, in order, no padding.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use masksub_core::rng::purpose;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::buffer_pool::BufferPool;
use crate::decode::{decode_rgb_into, RgbImage};
use crate::error::{DataError, Result};
use crate::hub::HubOptions;
use crate::imagefolder::ImageFolder;
use crate::loader::Batch;
use crate::mixup::MixupConfig;
use crate::rand_augment::RandAugment;
use crate::seeds::{stream_rng, stream_tag};
use crate::shards::{read_info, Shard, ShardLocation, ShardSet};
use crate::transforms::{eval_transform, train_transform, ImageAugConfig};
use crate::wds::{split_key, BadSample, RawSample, SampleReader};

/// Files per virtual shard of an ImageFolder.
const FOLDER_UNIT: usize = 256;

/// Where the samples are.
#[derive(Debug, Clone)]
pub enum StreamSource {
    Shards(ShardSet),
    Folder(ImageFolder),
}

/// A streamed dataset split with its size and classes.
#[derive(Debug, Clone)]
pub struct StreamDataset {
    pub source: StreamSource,
    pub num_samples: usize,
    /// Known from `_info.json` classes, the folder names or a label scan; else `None`.
    pub num_classes: Option<usize>,
    pub classes: Vec<String>,
    pub name: String,
}

impl StreamDataset {
    /// Shards from `spec` (see [`ShardSet::resolve`]). Counts come from `_info.json` or a scan
    /// (which also finds the largest label, giving `num_classes`).
    pub fn from_shards(spec: &str, split: &str, hub: &HubOptions) -> Result<Self> {
        let mut set = ShardSet::resolve(spec, split, hub)?;
        let info = match local_dir(&set) {
            Some(dir) => read_info(&dir)?,
            None => None,
        };
        let classes = info
            .as_ref()
            .and_then(|i| i.splits.get(split))
            .map(|s| s.classes.clone())
            .unwrap_or_default();
        let mut num_classes = (!classes.is_empty()).then_some(classes.len());
        let num_samples = if set.shards.iter().all(|s| s.samples.is_some()) {
            set.count_samples()?
        } else {
            let mut total = 0;
            let mut max_label: Option<u32> = None;
            for shard in &mut set.shards {
                let mut n = 0;
                for s in SampleReader::new(shard.open()?).flatten() {
                    n += 1;
                    max_label = Some(max_label.map_or(s.label, |m| m.max(s.label)));
                }
                shard.samples = Some(n);
                total += n;
            }
            if num_classes.is_none() {
                num_classes = max_label.map(|m| m as usize + 1);
            }
            total
        };
        Ok(StreamDataset {
            name: spec.to_string(),
            source: StreamSource::Shards(set),
            num_samples,
            num_classes,
            classes,
        })
    }

    /// An ImageFolder split.
    pub fn from_folder(root: &std::path::Path, split: &str) -> Result<Self> {
        let f = ImageFolder::open(root, split)?;
        Ok(StreamDataset {
            name: f.root.display().to_string(),
            num_samples: f.files.len(),
            num_classes: Some(f.classes.len()),
            classes: f.classes.clone(),
            source: StreamSource::Folder(f),
        })
    }
}

/// The folder of the first local shard (where `_info.json` would be).
fn local_dir(set: &ShardSet) -> Option<PathBuf> {
    match &set.shards.first()?.location {
        ShardLocation::Local(p) => p.parent().map(PathBuf::from),
        ShardLocation::Hub(_) => None,
    }
}

/// Loader settings of a streaming epoch.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub batch_size: usize,
    /// Decode/transform threads per rank.
    pub workers: usize,
    /// Samples each worker holds for shuffling (training only); 0 or 1 = no sample shuffle.
    pub shuffle_buffer: usize,
    pub seed: u64,
    pub rank: usize,
    pub world_size: usize,
    /// A bad sample is an error (naming shard and key) instead of skipped and counted.
    pub strict: bool,
    /// Training (random augmentation, shuffles, fixed epoch length) vs evaluation.
    pub train: bool,
    /// Repeated augmentation: copies of each sample (1 = off).
    pub repeats: usize,
    pub aug: ImageAugConfig,
    pub mixup: Option<MixupConfig>,
    pub num_classes: usize,
}

impl StreamConfig {
    fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, msg: String| Err(DataError::Config { field, msg });
        if self.batch_size == 0 {
            return bad("batch_size", "must be > 0".into());
        }
        if self.workers == 0 {
            return bad("workers", "must be > 0".into());
        }
        if self.world_size == 0 || self.rank >= self.world_size {
            return bad(
                "rank",
                format!("{} must be < world_size {}", self.rank, self.world_size),
            );
        }
        if self.repeats == 0 {
            return bad("repeats", "must be >= 1".into());
        }
        if self.num_classes == 0 {
            return bad("num_classes", "must be > 0".into());
        }
        if self.mixup.is_some_and(|m| m.is_active()) && !self.batch_size.is_multiple_of(2) {
            return bad(
                "batch_size",
                format!(
                    "mixup/cutmix need an even per-rank batch, got {}",
                    self.batch_size
                ),
            );
        }
        self.aug.validate().map_err(|msg| DataError::Config {
            field: "augment",
            msg,
        })
    }
}

/// Batches of one rank over a [`StreamDataset`].
#[derive(Debug, Clone)]
pub struct StreamLoader {
    ds: Arc<StreamDataset>,
    cfg: StreamConfig,
    device: Device,
}

/// A unit of work for a worker: one shard, or a chunk of ImageFolder files.
#[derive(Debug, Clone)]
enum Unit {
    Shard(Shard),
    Files(Vec<(PathBuf, u32)>),
}

impl Unit {
    fn name(&self) -> String {
        match self {
            Unit::Shard(s) => s.name.clone(),
            Unit::Files(f) => f
                .first()
                .and_then(|(p, _)| p.parent())
                .map_or_else(|| "<folder>".into(), |p| p.display().to_string()),
        }
    }
}

enum Item {
    Sample { data: Vec<f32>, label: u32 },
    Bad { unit: String, bad: BadSample },
    Fatal(DataError),
}

impl StreamLoader {
    pub fn new(ds: Arc<StreamDataset>, cfg: StreamConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        Ok(StreamLoader { ds, cfg, device })
    }

    pub fn dataset(&self) -> &StreamDataset {
        &self.ds
    }

    /// Training batches per epoch on each rank (`floor(N / world / batch)`); for evaluation
    /// the number of batches if this rank's share were `ceil(N / world)`.
    pub fn batches_per_epoch(&self) -> usize {
        let per_rank = self.ds.num_samples / self.cfg.world_size;
        if self.cfg.train {
            per_rank / self.cfg.batch_size
        } else {
            self.ds
                .num_samples
                .div_ceil(self.cfg.world_size)
                .div_ceil(self.cfg.batch_size)
        }
    }

    /// The units of `epoch` in dealing order.
    fn units(&self, epoch: usize) -> Vec<Unit> {
        let mut rng = stream_rng(
            purpose::DATA_ORDER,
            stream_tag::SHARD_ORDER,
            self.cfg.seed,
            &[epoch as u64],
        );
        match &self.ds.source {
            StreamSource::Shards(set) => {
                let mut shards = set.shards.clone();
                if self.cfg.train {
                    shards.shuffle(&mut rng);
                }
                shards.into_iter().map(Unit::Shard).collect()
            }
            StreamSource::Folder(f) => {
                let mut files = f.files.clone();
                if self.cfg.train {
                    files.shuffle(&mut rng);
                }
                files
                    .chunks(FOLDER_UNIT)
                    .map(|c| Unit::Files(c.to_vec()))
                    .collect()
            }
        }
    }

    /// Starts the workers of `epoch` and returns its batch iterator.
    pub fn epoch(&self, epoch: usize) -> StreamEpoch {
        let cfg = &self.cfg;
        let global = cfg.world_size * cfg.workers;
        let units = Arc::new(self.units(epoch));
        let ra = cfg.aug.rand_augment();
        let depth = (cfg.batch_size / cfg.workers).max(2) * 2;
        // Enough buffers for every queued sample, one in each worker's hands and a batch.
        let pool = BufferPool::new(
            cfg.aug.sample_len(),
            cfg.workers * (depth + 1) + cfg.batch_size,
        );
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        for w in 0..cfg.workers {
            let (tx, rx) = sync_channel(depth);
            let job = WorkerJob {
                units: Arc::clone(&units),
                cfg: cfg.clone(),
                ra: ra.clone(),
                epoch,
                global_id: cfg.rank * cfg.workers + w,
                global,
                pool: pool.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("masksub-data-{w}"))
                .spawn(move || job.run(tx));
            match spawned {
                Ok(h) => {
                    handles.push(h);
                    receivers.push(Some(rx));
                }
                Err(e) => {
                    return StreamEpoch::failed(DataError::Worker(format!(
                        "cannot start data worker: {e}"
                    )))
                }
            }
        }
        StreamEpoch {
            receivers,
            handles,
            cursor: 0,
            batches_left: if cfg.train {
                Some(self.batches_per_epoch())
            } else {
                None
            },
            cfg: cfg.clone(),
            device: self.device.clone(),
            epoch,
            batch_index: 0,
            skipped: 0,
            bad_examples: Vec::new(),
            error: None,
            done: false,
            pool,
        }
    }
}

/// What one worker thread does in an epoch.
struct WorkerJob {
    units: Arc<Vec<Unit>>,
    cfg: StreamConfig,
    ra: Option<RandAugment>,
    epoch: usize,
    global_id: usize,
    global: usize,
    /// Where sample buffers come from (the batch assembler returns them).
    pool: BufferPool,
}

impl WorkerJob {
    fn run(self, tx: SyncSender<Item>) {
        let split_samples = self.units.len() < self.global;
        let mine: Vec<&Unit> = if split_samples {
            self.units.iter().collect()
        } else {
            self.units
                .iter()
                .skip(self.global_id)
                .step_by(self.global)
                .collect()
        };
        let g = self.global_id as u64;
        let mut counter = 0u64;
        // Decoded pixels, reused from sample to sample.
        let mut img = RgbImage::default();
        for pass in 0u64.. {
            let mut rng = stream_rng(
                purpose::DATA_ORDER,
                stream_tag::BUFFER,
                self.cfg.seed,
                &[self.epoch as u64, g, pass],
            );
            let cap = if self.cfg.train {
                self.cfg.shuffle_buffer.max(1)
            } else {
                1
            };
            let mut buffer: Vec<(String, RawSample)> = Vec::with_capacity(cap);
            let mut read_any = false;
            for unit in &mine {
                let name = unit.name();
                let samples: Box<dyn Iterator<Item = std::result::Result<RawSample, BadSample>>> =
                    match unit {
                        Unit::Shard(s) => match s.open() {
                            Ok(r) => Box::new(SampleReader::new(r)),
                            Err(e) => {
                                let _ = tx.send(Item::Fatal(e));
                                return;
                            }
                        },
                        Unit::Files(f) => Box::new(f.iter().map(read_file)),
                    };
                for (j, s) in samples.enumerate() {
                    if split_samples && j % self.global != self.global_id {
                        continue;
                    }
                    read_any = true;
                    match s {
                        Err(bad) => {
                            if tx
                                .send(Item::Bad {
                                    unit: name.clone(),
                                    bad,
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                        Ok(raw) => {
                            buffer.push((name.clone(), raw));
                            if buffer.len() >= cap {
                                let i = rng.random_range(0..buffer.len());
                                let (u, raw) = buffer.swap_remove(i);
                                if !self.emit(&tx, &u, raw, &mut counter, &mut img) {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
            while !buffer.is_empty() {
                let i = rng.random_range(0..buffer.len());
                let (u, raw) = buffer.swap_remove(i);
                if !self.emit(&tx, &u, raw, &mut counter, &mut img) {
                    return;
                }
            }
            if !self.cfg.train || !read_any {
                return;
            }
        }
    }

    /// Decodes and transforms one sample (k times with repeated augmentation) and sends it;
    /// false once the consumer is gone.
    fn emit(
        &self,
        tx: &SyncSender<Item>,
        unit: &str,
        raw: RawSample,
        counter: &mut u64,
        img: &mut RgbImage,
    ) -> bool {
        if let Err(reason) = decode_rgb_into(&raw.image.1, &raw.image.0, img) {
            let bad = BadSample {
                key: raw.key,
                reason,
            };
            return tx
                .send(Item::Bad {
                    unit: unit.to_string(),
                    bad,
                })
                .is_ok();
        }
        if raw.label as usize >= self.cfg.num_classes {
            let bad = BadSample {
                key: raw.key,
                reason: format!(
                    "label {} is not below num_classes {}",
                    raw.label, self.cfg.num_classes
                ),
            };
            return tx
                .send(Item::Bad {
                    unit: unit.to_string(),
                    bad,
                })
                .is_ok();
        }
        let copies = if self.cfg.train { self.cfg.repeats } else { 1 };
        for _ in 0..copies {
            // Both transforms write every element, so a recycled buffer needs no clearing.
            let mut data = self.pool.take();
            if self.cfg.train {
                let mut rng = stream_rng(
                    purpose::AUGMENT,
                    stream_tag::SAMPLE,
                    self.cfg.seed,
                    &[self.epoch as u64, self.global_id as u64, *counter],
                );
                train_transform(img, &self.cfg.aug, self.ra.as_ref(), &mut rng, &mut data);
            } else {
                eval_transform(img, &self.cfg.aug, &mut data);
            }
            *counter += 1;
            if tx
                .send(Item::Sample {
                    data,
                    label: raw.label,
                })
                .is_err()
            {
                return false;
            }
        }
        true
    }
}

/// One ImageFolder file as a raw sample (key = path without extension).
fn read_file(entry: &(PathBuf, u32)) -> std::result::Result<RawSample, BadSample> {
    let (path, label) = entry;
    let name = path.to_string_lossy().into_owned();
    let (key, ext) =
        split_key(&name).map_or((name.clone(), String::new()), |(k, e)| (k.to_string(), e));
    match std::fs::read(path) {
        Ok(bytes) => Ok(RawSample {
            key,
            image: (ext, bytes),
            label: *label,
        }),
        Err(e) => Err(BadSample {
            key,
            reason: format!("cannot read: {e}"),
        }),
    }
}

/// The batches of one epoch; reports skipped samples once it is done.
pub struct StreamEpoch {
    receivers: Vec<Option<Receiver<Item>>>,
    handles: Vec<JoinHandle<()>>,
    cursor: usize,
    batches_left: Option<usize>,
    cfg: StreamConfig,
    device: Device,
    epoch: usize,
    batch_index: u64,
    skipped: usize,
    bad_examples: Vec<String>,
    error: Option<DataError>,
    done: bool,
    pool: BufferPool,
}

/// How many bad-sample messages an epoch keeps for its report.
const KEEP_BAD: usize = 5;

impl StreamEpoch {
    fn failed(e: DataError) -> Self {
        StreamEpoch {
            receivers: Vec::new(),
            handles: Vec::new(),
            cursor: 0,
            batches_left: Some(0),
            cfg: StreamConfig {
                batch_size: 1,
                workers: 1,
                shuffle_buffer: 0,
                seed: 0,
                rank: 0,
                world_size: 1,
                strict: true,
                train: false,
                repeats: 1,
                aug: ImageAugConfig::default(),
                mixup: None,
                num_classes: 1,
            },
            device: Device::Cpu,
            epoch: 0,
            batch_index: 0,
            skipped: 0,
            bad_examples: Vec::new(),
            error: Some(e),
            done: false,
            pool: BufferPool::new(0, 0),
        }
    }

    /// Samples skipped so far as unusable.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The first few skip reasons ("shard ..., sample ...: reason").
    pub fn bad_examples(&self) -> &[String] {
        &self.bad_examples
    }

    /// The next sample from the workers in turn; `None` when all are finished.
    fn next_item(&mut self) -> Option<Item> {
        let n = self.receivers.len();
        for _ in 0..n {
            let i = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            let Some(rx) = &self.receivers[i] else {
                continue;
            };
            match rx.recv() {
                Ok(item) => return Some(item),
                Err(_) => self.receivers[i] = None,
            }
        }
        None
    }

    fn next_batch(&mut self) -> Result<Option<Batch>> {
        let b = self.cfg.batch_size;
        let len = self.cfg.aug.sample_len();
        let mut images = Vec::with_capacity(b * len);
        let mut labels = Vec::with_capacity(b);
        while labels.len() < b {
            match self.next_item() {
                None => break,
                Some(Item::Fatal(e)) => return Err(e),
                Some(Item::Bad { unit, bad }) => {
                    let msg = DataError::BadSample {
                        shard: unit,
                        key: bad.key,
                        reason: bad.reason,
                    };
                    if self.cfg.strict {
                        return Err(msg);
                    }
                    self.skipped += 1;
                    let text = msg.to_string();
                    if self.bad_examples.len() < KEEP_BAD && !self.bad_examples.contains(&text) {
                        self.bad_examples.push(text);
                    }
                }
                Some(Item::Sample { data, label }) => {
                    images.extend_from_slice(&data);
                    labels.push(label);
                    self.pool.give(data);
                }
            }
        }
        if labels.is_empty() || (self.cfg.train && labels.len() < b) {
            return Ok(None);
        }
        let n = labels.len();
        let s = self.cfg.aug.img_size;
        let targets = match self.cfg.mixup.filter(|m| self.cfg.train && m.is_active()) {
            Some(m) => {
                let mut rng = stream_rng(
                    purpose::AUGMENT,
                    stream_tag::MIXUP,
                    self.cfg.seed,
                    &[self.epoch as u64, self.cfg.rank as u64, self.batch_index],
                );
                let t = m
                    .apply(
                        &mut images,
                        &labels,
                        (3, s, s),
                        self.cfg.num_classes,
                        &mut rng,
                    )
                    .map_err(|msg| DataError::Config {
                        field: "mixup",
                        msg,
                    })?;
                Some(Tensor::from_vec(
                    t,
                    (n, self.cfg.num_classes),
                    &self.device,
                )?)
            }
            None => None,
        };
        self.batch_index += 1;
        Ok(Some(Batch {
            images: Tensor::from_vec(images, (n, 3, s, s), &self.device)?,
            labels: Tensor::from_vec(labels, n, &self.device)?,
            indices: Vec::new(),
            targets,
        }))
    }

    /// Stops the workers (closing their queues) and waits for them.
    fn shutdown(&mut self) {
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Iterator for StreamEpoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            self.done = true;
            return Some(Err(e));
        }
        if self.done || self.batches_left == Some(0) {
            self.shutdown();
            return None;
        }
        match self.next_batch() {
            Ok(Some(b)) => {
                if let Some(left) = self.batches_left.as_mut() {
                    *left -= 1;
                }
                Some(Ok(b))
            }
            Ok(None) => {
                self.done = true;
                self.shutdown();
                None
            }
            Err(e) => {
                self.done = true;
                self.shutdown();
                Some(Err(e))
            }
        }
    }
}

impl Drop for StreamEpoch {
    fn drop(&mut self) {
        self.shutdown();
    }
}
