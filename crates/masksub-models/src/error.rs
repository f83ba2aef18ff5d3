//! Errors of masksub-models.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("unknown model `{name}`; known models: {known}")]
    UnknownModel { name: String, known: String },
    #[error("invalid model config `{field}`: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("input of shape {got:?} does not fit the model: {reason}")]
    Input { got: Vec<usize>, reason: String },
    /// Every missing, unexpected and wrongly shaped key at once, so a user fixes them in one go.
    #[error("{source_name}: state dict does not match the model:{}", format_key_report(.missing, .unexpected, .mismatched))]
    StateDict {
        source_name: String,
        missing: Vec<String>,
        unexpected: Vec<String>,
        mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    },
    #[error("checkpoint tensor `{key}`: {reason}")]
    Checkpoint { key: String, reason: String },
    #[error("{what}: {reason}")]
    Hub { what: String, reason: String },
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Core(#[from] masksub_core::CoreError),
}

fn format_key_report(
    missing: &[String],
    unexpected: &[String],
    mismatched: &[(String, Vec<usize>, Vec<usize>)],
) -> String {
    let mut s = String::new();
    if !missing.is_empty() {
        s += &format!(
            "\n  missing keys ({}): {}",
            missing.len(),
            missing.join(", ")
        );
    }
    if !unexpected.is_empty() {
        s += &format!(
            "\n  unexpected keys ({}): {}",
            unexpected.len(),
            unexpected.join(", ")
        );
    }
    for (k, want, got) in mismatched {
        s += &format!("\n  shape mismatch `{k}`: model {want:?}, file {got:?}");
    }
    s
}

impl ModelError {
    pub fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            field,
            reason: reason.into(),
        }
    }
}
