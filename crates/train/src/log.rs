//! The training log: `train_log.jsonl` in the output folder, one JSON line per optimizer step,
//! written by the loop and read back for the curves.

/// The log's file name in the output folder.
pub const LOG_FILE: &str = "train_log.jsonl";

/// One optimizer step, as logged.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StepLog {
    pub step: usize,
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub pairs_per_s: f64,
    pub elapsed_s: f64,
}
