//! bge-rerank's engine: loads BAAI BGE rerankers from Hugging Face model folders and computes the
//! scores FlagEmbedding computes, faster.
//!
//! The data path reads top to bottom: [`ModelDir`] (files) -> [`Architecture`] (config.json) ->
//! [`InputBuilder`] (pairs -> token ids) -> [`batch::plan_batches`] -> a [`models::ScoringModel`]
//! -> scores, all driven by [`Reranker`]. [`trainable::TrainableModel`] runs the same model code with
//! its weights (or LoRA pairs) as autograd variables, for training.
//!
//! ```no_run
//! use bge_rerank_engine::{LoadOptions, Reranker, ScoreOptions};
//! let reranker = Reranker::load("BAAI/bge-reranker-v2-m3", &LoadOptions::default())?;
//! let scores = reranker.compute_score(
//!     &[("what is panda?", "The giant panda is a bear species endemic to China.")],
//!     &ScoreOptions { normalize: true, ..Default::default() },
//! )?;
//! # Ok::<(), bge_rerank_engine::Error>(())
//! ```

pub mod batch;
pub mod config;
pub mod error;
pub mod fingerprint;
pub mod input;
pub mod int8_folder;
pub mod lora;
pub mod memory;
pub mod model_dir;
pub mod model_folder;
pub mod models;
pub mod ops;
pub mod precision;
pub mod ranking;
pub mod reranker;
pub mod safetensors_file;
pub mod text;
pub mod trainable;
pub mod weights;

pub use batch::BatchLimits;
pub use config::Architecture;
pub use error::{Error, Result};
pub use input::{InputBuilder, InputOptions, ModelInput};
pub use model_dir::ModelDir;
pub use precision::Precision;
pub use reranker::{finish_score, load_encoder, LoadOptions, Progress, Reranker, ScoreOptions};
