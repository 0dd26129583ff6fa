//! Evaluation for bge-rerank: rerank a first stage's top-k on retrieval data and report trec_eval's
//! metrics beside the first stage's.

pub mod bm25;
pub mod cache;
pub mod data;
pub mod error;
pub mod eval;
pub mod metrics;
pub mod report;

pub use data::{read_qrels, read_run, write_run, DataSet, Qrels, Run};
pub use error::{EvalError, Result};
pub use eval::{evaluate_dataset, first_stage, DataSetResult, EvalOptions, FirstStage};
pub use metrics::{evaluate, mark_deeper_than, parse_metrics, Evaluation, Metric};
