//! The trainer's data: `--data` picks the source (IDX folder in memory, WebDataset shards, or an
//! ImageFolder, both streamed) and this wraps each behind the same epoch / evaluation calls.

use crate::eval::{evaluate_sharded, evaluate_stream, EvalResult};
use crate::TrainConfig;
use anyhow::Result;
use candle_core::Device;
use masksub_data::{
    Batch, BatchLoader, HubOptions, InMemoryDataset, LoaderConfig, Split, StreamConfig,
    StreamDataset, StreamEpoch, StreamLoader,
};
use masksub_dist::Collective;
use masksub_models::LoadedModel;
use std::path::Path;
use std::sync::Arc;

/// What kind of data `--data` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSource {
    /// MNIST-family IDX files, held in memory.
    Idx,
    /// WebDataset shards: hf://, a brace pattern, a .tar file or a folder of shards.
    Shards,
    /// Class folders of image files.
    ImageFolder,
}

impl DataSource {
    /// Classifies `data`: `hf://`, `{..}` patterns and `.tar` files are shards; a folder with
    /// `*-ubyte[.gz]` files is IDX, one with `.tar` files or `_info.json` is shards, any other
    /// folder an ImageFolder.
    pub fn detect(data: &Path) -> Self {
        let s = data.to_string_lossy();
        if not_a_local_path(&s) || s.ends_with(".tar") {
            return DataSource::Shards;
        }
        let names: Vec<String> = std::fs::read_dir(data)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if names.iter().any(|n| n.contains("-ubyte")) {
            DataSource::Idx
        } else if names
            .iter()
            .any(|n| n.ends_with(".tar") || n == "_info.json")
        {
            DataSource::Shards
        } else {
            DataSource::ImageFolder
        }
    }
}

/// [`DataSource::detect`] for `--data`, which must exist unless it is `hf://` or a pattern.
pub fn detect_existing(path: &Path) -> Result<DataSource> {
    if !(not_a_local_path(&path.to_string_lossy()) || path.exists()) {
        anyhow::bail!("--data {}: no such file or folder", path.display());
    }
    Ok(DataSource::detect(path))
}

/// An `hf://` address or a brace pattern: names shards, but is no path on disk.
fn not_a_local_path(spec: &str) -> bool {
    spec.starts_with("hf://") || spec.contains('{')
}

/// One split of streamed data (`kind` is `Shards` or `ImageFolder`).
pub fn open_stream_split(path: &Path, kind: DataSource, split: &str) -> Result<StreamDataset> {
    Ok(if kind == DataSource::Shards {
        StreamDataset::from_shards(&path.to_string_lossy(), split, &HubOptions::default())?
    } else {
        StreamDataset::from_folder(path, split)?
    })
}

/// The loader settings of a run's config, for training (`train`) or evaluation.
pub fn stream_config(
    cfg: &TrainConfig,
    img_size: usize,
    num_classes: usize,
    rank: usize,
    world: usize,
    train: bool,
) -> StreamConfig {
    let mut aug = cfg.image_aug.clone();
    aug.img_size = img_size;
    StreamConfig {
        batch_size: if train {
            cfg.batch_size / world
        } else {
            cfg.eval_batch_size
        },
        workers: cfg.workers,
        shuffle_buffer: cfg.shuffle_buffer,
        seed: cfg.seed,
        rank,
        world_size: world,
        strict: cfg.strict_data,
        train,
        repeats: cfg.repeats,
        aug,
        mixup: cfg.mixup,
        num_classes,
    }
}

/// Training and evaluation data of a run (one value per run, so its size does not matter).
#[allow(clippy::large_enum_variant)]
pub enum TrainData {
    InMemory {
        train: InMemoryDataset,
        test: InMemoryDataset,
    },
    Stream {
        train: Arc<StreamDataset>,
        test: Arc<StreamDataset>,
    },
}

/// One epoch's batches plus the count of skipped bad samples.
pub enum EpochBatches<'a> {
    InMemory(Box<dyn Iterator<Item = masksub_data::error::Result<Batch>> + 'a>),
    Stream(Box<StreamEpoch>),
}

impl Iterator for EpochBatches<'_> {
    type Item = masksub_data::error::Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            EpochBatches::InMemory(it) => it.next(),
            EpochBatches::Stream(it) => it.next(),
        }
    }
}

impl EpochBatches<'_> {
    /// Bad samples skipped in this epoch so far, with the first few reasons.
    pub fn skipped(&self) -> (usize, Vec<String>) {
        match self {
            EpochBatches::InMemory(_) => (0, Vec::new()),
            EpochBatches::Stream(s) => (s.skipped(), s.bad_examples().to_vec()),
        }
    }
}

/// The per-rank training loader of either kind.
pub enum TrainLoader<'a> {
    InMemory(BatchLoader<'a>),
    Stream(StreamLoader),
}

impl TrainLoader<'_> {
    pub fn batches_per_epoch(&self) -> usize {
        match self {
            TrainLoader::InMemory(l) => l.batches_per_epoch(),
            TrainLoader::Stream(l) => l.batches_per_epoch(),
        }
    }

    pub fn epoch(&self, epoch: usize) -> EpochBatches<'_> {
        match self {
            TrainLoader::InMemory(l) => EpochBatches::InMemory(Box::new(l.epoch(epoch))),
            TrainLoader::Stream(l) => EpochBatches::Stream(Box::new(l.epoch(epoch))),
        }
    }
}

impl TrainData {
    /// Opens the data `cfg.data` names.
    pub fn open(cfg: &TrainConfig) -> Result<Self> {
        let path = cfg.data.as_path();
        Ok(match detect_existing(path)? {
            DataSource::Idx => {
                let mut train = InMemoryDataset::from_idx_dir(path, Split::Train)?;
                if let Some(n) = cfg.train_subset {
                    train = train.take(n);
                }
                let test = InMemoryDataset::from_idx_dir(path, Split::Test)?;
                TrainData::InMemory { train, test }
            }
            kind => {
                let mut train = open_stream_split(path, kind, &cfg.train_split)?;
                if let Some(n) = cfg.train_subset {
                    train.num_samples = train.num_samples.min(n);
                }
                let test = open_stream_split(path, kind, &cfg.val_split)?;
                TrainData::Stream {
                    train: Arc::new(train),
                    test: Arc::new(test),
                }
            }
        })
    }

    /// Classes and channels the model must be built for.
    pub fn classes_and_channels(&self, cfg: &TrainConfig) -> Result<(usize, usize)> {
        Ok(match self {
            TrainData::InMemory { train, .. } => (train.num_classes, train.channels),
            TrainData::Stream { train, test } => {
                let n = cfg
                    .num_classes
                    .or(train.num_classes.max(test.num_classes))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}: the number of classes is unknown; set `num_classes` (--num-classes)",
                            train.name
                        )
                    })?;
                (n, 3)
            }
        })
    }

    /// (train, test) sample counts.
    pub fn lens(&self) -> (usize, usize) {
        match self {
            TrainData::InMemory { train, test } => (train.len(), test.len()),
            TrainData::Stream { train, test } => (train.num_samples, test.num_samples),
        }
    }

    /// The image side the data has (None for streamed data, which is resized to the model).
    pub fn fixed_shape(&self) -> Option<(usize, usize, usize)> {
        match self {
            TrainData::InMemory { train, .. } => Some((train.channels, train.height, train.width)),
            TrainData::Stream { .. } => None,
        }
    }

    /// The training loader of `rank`.
    pub fn train_loader(
        &self,
        cfg: &TrainConfig,
        img_size: usize,
        num_classes: usize,
        rank: usize,
        world: usize,
        device: &Device,
    ) -> Result<TrainLoader<'_>> {
        Ok(match self {
            TrainData::InMemory { train, .. } => {
                let lc = LoaderConfig {
                    batch_size: cfg.batch_size / world,
                    shuffle: true,
                    drop_last: true,
                    seed: cfg.seed,
                    rank,
                    world_size: world,
                    augment: Some(cfg.augment.clone()),
                };
                TrainLoader::InMemory(BatchLoader::new(train, lc, device.clone())?)
            }
            TrainData::Stream { train, .. } => TrainLoader::Stream(StreamLoader::new(
                Arc::clone(train),
                stream_config(cfg, img_size, num_classes, rank, world, true),
                device.clone(),
            )?),
        })
    }

    /// Top-1/top-5/loss on the test split, summed over ranks.
    pub fn evaluate(
        &self,
        cfg: &TrainConfig,
        model: &LoadedModel,
        img_size: usize,
        num_classes: usize,
        device: &Device,
        coll: &dyn Collective,
    ) -> Result<EvalResult> {
        match self {
            TrainData::InMemory { test, .. } => {
                evaluate_sharded(model, test, cfg.eval_batch_size, device, coll)
            }
            TrainData::Stream { test, .. } => {
                let sc = stream_config(
                    cfg,
                    img_size,
                    num_classes,
                    coll.rank(),
                    coll.world_size(),
                    false,
                );
                let loader = StreamLoader::new(Arc::clone(test), sc, device.clone())?;
                evaluate_stream(model, &loader, coll)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_kind_is_detected_from_the_argument_and_folder_contents() {
        assert_eq!(
            DataSource::detect(Path::new("hf://datasets/a/b")),
            DataSource::Shards
        );
        assert_eq!(
            DataSource::detect(Path::new("s/t-{0..9}.tar")),
            DataSource::Shards
        );
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("cat")).unwrap();
        assert_eq!(DataSource::detect(d.path()), DataSource::ImageFolder);
        std::fs::write(d.path().join("x-train-000000.tar"), b"").unwrap();
        assert_eq!(DataSource::detect(d.path()), DataSource::Shards);
        std::fs::write(d.path().join("t10k-images-idx3-ubyte.gz"), b"").unwrap();
        assert_eq!(DataSource::detect(d.path()), DataSource::Idx);
        assert_eq!(
            DataSource::detect(&crate::config::default_data_dir()),
            DataSource::Idx
        );
    }
}
