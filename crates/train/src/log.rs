//! The training log: `train_log.jsonl` in the output folder, one JSON line per optimizer step,
//! written by the loop and read back for the curves.

use std::path::Path;

use crate::error::{Result, TrainError};

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

/// Drops the log lines of steps after `step`: a run resumed from an earlier checkpoint than its last
/// logged step (a crash, or a chosen checkpoint) redoes those steps, and its log and curves must not
/// show them twice.
pub(crate) fn forget_steps_after(log_path: &Path, step: usize) -> Result<()> {
    let text = match std::fs::read_to_string(log_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TrainError::io(log_path, e)),
    };
    let kept: String = text
        .lines()
        .filter(|line| serde_json::from_str::<StepLog>(line).is_ok_and(|entry| entry.step <= step))
        .map(|line| format!("{line}\n"))
        .collect();
    if kept.len() != text.len() {
        std::fs::write(log_path, kept).map_err(|e| TrainError::io(log_path, e))?;
    }
    Ok(())
}
