//! One error type for the engine. Every variant names what the user must fix: the file, the tensor,
//! the field or the option.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("{path}: invalid JSON: {error}")]
    Json {
        path: PathBuf,
        error: serde_json::Error,
    },

    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },

    #[error("model `{model}` not found: {message}")]
    ModelNotFound { model: String, message: String },

    #[error("unsupported architecture `{found}` in {path}; supported: {}", supported.join(", "))]
    UnsupportedArchitecture {
        found: String,
        path: PathBuf,
        supported: Vec<&'static str>,
    },

    #[error("{path}: cannot read safetensors: {message}")]
    Safetensors { path: PathBuf, message: String },

    #[error("{file}: tensor `{name}`: {message}")]
    Tensor {
        file: String,
        name: String,
        message: String,
    },

    #[error("{path}: cannot load tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },

    #[error("tokenization failed: {0}")]
    Tokenize(String),

    #[error("invalid input: {0}")]
    Input(String),

    #[error("invalid option: {0}")]
    InvalidOption(String),

    #[error("{0}")]
    Unsupported(String),

    #[error("{path}: cannot load the model: {message}")]
    Load { path: PathBuf, message: String },

    /// The caller stopped the scoring between batches (see `reranker::Progress`).
    #[error("interrupted: {0}")]
    Interrupted(String),

    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }
}

/// Reads and parses a JSON file, with the file named in every error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|error| Error::Json {
        path: path.to_path_buf(),
        error,
    })
}
