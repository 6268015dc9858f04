//! Typed errors. Every variant names the file or tensor at fault and says what to do.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between a user's input and an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error("cannot write {}: {source} (check that the folder exists and is writable)", path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error("{file}: not a valid safetensors file ({reason}); the file is truncated or corrupt, download or export it again")]
    Safetensors { file: String, reason: String },

    #[error("{file}: tensor `{name}` is missing; the weights do not match the model's config.json")]
    MissingTensor { file: String, name: String },

    #[error("{file}: unexpected tensor `{name}` that the model's config.json does not account for; the weights belong to a different model configuration")]
    UnexpectedTensor { file: String, name: String },

    #[error("{file}: tensor `{name}` has shape {found:?} but the config.json needs {expected:?}")]
    ShapeMismatch { file: String, name: String, expected: Vec<usize>, found: Vec<usize> },

    #[error("{file}: tensor `{name}` has dtype {dtype}; only F32, F16 and BF16 weights are supported")]
    UnsupportedDtype { file: String, name: String, dtype: String },

    #[error("{file}: {reason}")]
    Config { file: String, reason: String },

    #[error("{file}: tokenizer error: {reason}")]
    Tokenizer { file: String, reason: String },

    #[error("scheduler: {0}")]
    Scheduler(#[from] crate::scheduler::SchedulerError),

    #[error("invalid input: {0}")]
    InvalidInput(String),

    #[error(transparent)]
    Store(#[from] crate::lifelong::store::StoreError),

    #[error("no usable GPU adapter: {0}; run with `--backend cpu`")]
    Backend(String),
}

impl Error {
    pub(crate) fn config(file: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config { file: file.into(), reason: reason.into() }
    }
}
