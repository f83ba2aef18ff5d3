//! Errors of masksub-core.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CoreError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A configuration value is out of its domain; `field` names it as the user wrote it.
    #[error("invalid value for `{field}`: {reason}")]
    Config { field: &'static str, reason: String },
    /// A loss or gradient norm became NaN or infinite.
    #[error("non-finite {what} ({value}) at step {step}")]
    NonFinite {
        what: &'static str,
        value: f32,
        step: u64,
    },
    /// Optimizer state does not match the parameters it should drive.
    #[error("optimizer state: {0}")]
    OptimizerState(String),
}

impl CoreError {
    pub fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            field,
            reason: reason.into(),
        }
    }
}
