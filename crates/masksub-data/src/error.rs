//! The crate's error type. Every variant that concerns a file names it, so a user who points
//! the CLI at a broken dataset sees which file is wrong and how.

use std::path::PathBuf;

/// Errors from reading, validating and batching datasets.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file starts with the gzip magic but its stream is corrupt or truncated.
    #[error("{}: gzip decode failed: {source}", path.display())]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The (decompressed) bytes are not a valid file of the expected format.
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// A dataset directory lacks required files.
    #[error("{}: missing {}", dir.display(), missing.join(", "))]
    MissingFiles { dir: PathBuf, missing: Vec<String> },
    /// Image and label files disagree on the number of samples.
    #[error("{} has {images} images but {} has {labels} labels", images_path.display(), labels_path.display())]
    CountMismatch {
        images_path: PathBuf,
        labels_path: PathBuf,
        images: usize,
        labels: usize,
    },
    /// Raw in-memory parts do not fit together (e.g. pixel count vs. shape).
    #[error("dataset {name}: {msg}")]
    Shape { name: String, msg: String },
    /// An invalid loader setting; `field` is the name of the offending field.
    #[error("invalid loader config: {field}: {msg}")]
    Config { field: &'static str, msg: String },
    /// The background prefetch thread died before delivering all batches.
    #[error("batch prefetch worker stopped unexpectedly: {0}")]
    Worker(String),
    /// A shard specification (pattern, folder, hf:// address) cannot be resolved.
    #[error("data source `{spec}`: {msg}")]
    Spec { spec: String, msg: String },
    /// A shard named by the source does not exist.
    #[error("missing shard {}", path.display())]
    MissingShard { path: PathBuf },
    /// A Hugging Face Hub file (or, with an empty `file`, the repo's file list) could not be had.
    #[error("hf://datasets/{repo}{}: {msg}", hub_file(.file))]
    Hub {
        repo: String,
        file: String,
        msg: String,
    },
    /// A sample that cannot be used, under `--strict-data` (otherwise it is skipped, counted).
    #[error("shard {shard}, sample {key}: {reason}")]
    BadSample {
        shard: String,
        key: String,
        reason: String,
    },
    /// Building a tensor on the target device failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// ` file `name`` for [`DataError::Hub`]; nothing for a repo-level failure.
fn hub_file(file: &str) -> String {
    if file.is_empty() {
        String::new()
    } else {
        format!(" file `{file}`")
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    /// Builds a [`DataError::Format`] for `path`.
    pub(crate) fn format(path: &std::path::Path, msg: impl Into<String>) -> Self {
        DataError::Format {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}
