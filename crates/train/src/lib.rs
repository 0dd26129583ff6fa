//! bge-rerank's fine-tuning: the model card's JSON Lines data -> groups (one positive, sampled
//! negatives) -> inputs built exactly as at inference -> FlagEmbedding's group loss -> AdamW over a
//! [`bge_rerank_engine::trainable::TrainableModel`] -> checkpoints transformers loads unchanged.

pub mod checkpoint;
pub mod data;
pub mod error;
pub mod loss;
pub mod optimizer;

pub use data::{Group, TrainData, TrainExample};
pub use error::{Result, TrainError};
pub mod evaluation;
pub mod log;
pub mod plot;
pub mod trainer;

pub use evaluation::{CheckpointEval, EvalSpec};
pub use log::StepLog;
pub use trainer::{train, TrainObserver, TrainOptions, TrainSummary};
