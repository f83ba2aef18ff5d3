use thiserror::Error;

#[derive(Debug, Error)]
pub enum DistError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The environment describes a launch this build cannot serve (e.g. mpirun without `mpi`).
    #[error("distributed launch: {0}")]
    Launch(String),
    /// A malformed launcher variable, named.
    #[error("environment variable `{name}` = `{value}`: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
    /// Ranks disagree about what they reduce (a bug or mismatched binaries/configs).
    #[error("ranks disagree: {0}")]
    Mismatch(String),
    /// The NCCL id file rendezvous failed.
    #[error("rendezvous file `{path}`: {reason}")]
    Rendezvous { path: String, reason: String },
    #[error("{engine}: {reason}")]
    Engine {
        engine: &'static str,
        reason: String,
    },
}
