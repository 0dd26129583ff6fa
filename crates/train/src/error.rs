use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A bad line of a training file (`line` 0: the file as a whole).
    #[error("{}{}: {message}", path.display(), if *line > 0 { format!(", line {line}") } else { String::new() })]
    Data {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Engine(#[from] bge_rerank_engine::Error),
    #[error(transparent)]
    Eval(#[from] bge_rerank_eval::EvalError),
    #[error("computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

impl TrainError {
    pub(crate) fn io(path: &std::path::Path, error: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;
