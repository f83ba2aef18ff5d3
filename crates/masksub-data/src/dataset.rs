//! A whole image-classification dataset held in memory as `u8` pixels.
//!
//! Keeping bytes (not `f32`) costs 4x less memory and lets augmentation work on the original
//! integers; conversion to normalized floats happens per batch in the loader.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::idx::{read_idx_images, read_idx_labels};
use crate::stats::channel_mean_std;

/// MNIST-style datasets have 10 classes even if a (truncated) file happens to lack some.
const IDX_MIN_CLASSES: usize = 10;

/// Which half of a dataset to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// File-name prefix used by the MNIST family of IDX files.
    fn idx_prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Images (N, C, H, W) as `u8`, labels as `u32`, plus the normalization statistics to use.
#[derive(Clone)]
pub struct InMemoryDataset {
    /// `len() * channels * height * width` bytes, sample-major, then channel, row, column.
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub num_classes: usize,
    /// Per-channel mean of `pixel / 255` used for normalization.
    pub mean: Vec<f32>,
    /// Per-channel std of `pixel / 255` used for normalization (never 0).
    pub std: Vec<f32>,
    pub name: String,
}

/// Summarizes instead of dumping megabytes of pixels.
impl fmt::Debug for InMemoryDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryDataset")
            .field("name", &self.name)
            .field("len", &self.len())
            .field("shape", &(self.channels, self.height, self.width))
            .field("num_classes", &self.num_classes)
            .field("mean", &self.mean)
            .field("std", &self.std)
            .finish()
    }
}

impl InMemoryDataset {
    /// Builds a dataset from raw parts, validating that they fit together.
    ///
    /// Mean/std are computed from `images`; `num_classes` is `max label + 1`.
    pub fn from_raw(
        name: impl Into<String>,
        images: Vec<u8>,
        labels: Vec<u32>,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Self> {
        let name = name.into();
        let shape_err = |msg: String| DataError::Shape {
            name: name.clone(),
            msg,
        };
        if channels == 0 || height == 0 || width == 0 {
            return Err(shape_err(format!(
                "image shape {channels}x{height}x{width} has a zero dimension"
            )));
        }
        let expected = labels
            .len()
            .checked_mul(channels)
            .and_then(|v| v.checked_mul(height))
            .and_then(|v| v.checked_mul(width))
            .ok_or_else(|| shape_err("image buffer size overflows".to_string()))?;
        if images.len() != expected {
            return Err(shape_err(format!(
                "{} labels of {channels}x{height}x{width} need {expected} pixel bytes, got {}",
                labels.len(),
                images.len()
            )));
        }
        let (mean, std) = channel_mean_std(&images, channels, height * width);
        let num_classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
        Ok(InMemoryDataset {
            images,
            labels,
            channels,
            height,
            width,
            num_classes,
            mean,
            std,
            name,
        })
    }

    /// Loads an MNIST-family split from `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
    ///
    /// Channels is 1 and `num_classes` is `max label + 1` but at least 10. Mean/std always
    /// come from the TRAIN images when that file exists (also for the test split, so train
    /// and test are normalized identically, as with the usual published constants); a
    /// directory holding only the test files falls back to the test split's own statistics.
    /// The dataset name is the directory's name.
    pub fn from_idx_dir(dir: &Path, split: Split) -> Result<Self> {
        if !dir.is_dir() {
            return Err(DataError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            });
        }
        let (images_path, labels_path) = find_idx_pair(dir, split)?;
        let images = read_idx_images(&images_path)?;
        let labels = read_idx_labels(&labels_path)?;
        if images.count != labels.len() {
            return Err(DataError::CountMismatch {
                images_path,
                labels_path,
                images: images.count,
                labels: labels.len(),
            });
        }
        let name = dir
            .file_name()
            .map_or_else(|| "idx".to_string(), |n| n.to_string_lossy().into_owned());
        let labels = labels.into_iter().map(u32::from).collect();
        let mut ds =
            InMemoryDataset::from_raw(name, images.pixels, labels, 1, images.rows, images.cols)?;
        ds.num_classes = ds.num_classes.max(IDX_MIN_CLASSES);
        if split == Split::Test {
            if let Some(train_images) = find_file(dir, &idx_name(Split::Train, "images-idx3")) {
                let train = read_idx_images(&train_images)?;
                if (train.rows, train.cols) != (ds.height, ds.width) {
                    return Err(DataError::format(
                        &train_images,
                        format!(
                            "train images are {}x{} but test images are {}x{}",
                            train.rows, train.cols, ds.height, ds.width
                        ),
                    ));
                }
                (ds.mean, ds.std) = channel_mean_std(&train.pixels, 1, train.rows * train.cols);
            }
        }
        Ok(ds)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per sample: `channels * height * width`.
    pub fn sample_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// First `n` samples (or all if `n >= len`) — for quick runs. Statistics are kept, so a
    /// subset is normalized exactly like the full dataset.
    pub fn take(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.images.truncate(n * self.sample_len());
        self.labels.truncate(n);
        self
    }

    /// Pixels of sample `i` (`C*H*W` bytes).
    ///
    /// # Panics
    /// If `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.sample_len();
        &self.images[i * n..(i + 1) * n]
    }
}

/// `{prefix}-{kind}-ubyte`, e.g. `t10k-labels-idx1-ubyte`.
fn idx_name(split: Split, kind: &str) -> String {
    format!("{}-{kind}-ubyte", split.idx_prefix())
}

/// `dir/name.gz` if present, else `dir/name`.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [format!("{name}.gz"), name.to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Paths of the split's images and labels files, or an error listing what is missing.
fn find_idx_pair(dir: &Path, split: Split) -> Result<(PathBuf, PathBuf)> {
    let images_name = idx_name(split, "images-idx3");
    let labels_name = idx_name(split, "labels-idx1");
    match (find_file(dir, &images_name), find_file(dir, &labels_name)) {
        (Some(images), Some(labels)) => Ok((images, labels)),
        (images, labels) => {
            let missing = [(images, images_name), (labels, labels_name)]
                .into_iter()
                .filter(|(found, _)| found.is_none())
                .map(|(_, name)| format!("{name}[.gz]"))
                .collect();
            Err(DataError::MissingFiles {
                dir: dir.to_path_buf(),
                missing,
            })
        }
    }
}
