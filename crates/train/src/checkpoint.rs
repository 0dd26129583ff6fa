//! Checkpoints: `OUTPUT/checkpoint-N` holds the model as transformers loads it, the optimizer's
//! moments and the run's position, so `--resume` continues a run exactly where it stopped.

use std::path::{Path, PathBuf};

use bge_rerank_engine::trainable::TrainableModel;
use candle_nn::ParamsAdamW;

use crate::error::{Result, TrainError};
use crate::evaluation::CheckpointEval;
use crate::optimizer::AdamW;
use crate::trainer::{TrainObserver, TrainOptions};

/// Written last into a checkpoint: a folder without it is an interrupted write, not a checkpoint.
const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// `options` with `--resume` made a checkpoint folder: it may name a run's output folder, which
/// stands for its newest complete checkpoint (by step: checkpoint-178 is newer than checkpoint-89,
/// though not by name).
pub(crate) fn with_resume_resolved(options: &TrainOptions) -> Result<TrainOptions> {
    let resume = match &options.resume {
        Some(path) => Some(resolve(path)?),
        None => None,
    };
    Ok(TrainOptions {
        resume,
        ..options.clone()
    })
}

fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(STATE_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    let entries = std::fs::read_dir(path).map_err(|e| TrainError::io(path, e))?;
    let newest = entries
        .filter_map(|entry| {
            let dir = entry.ok()?.path();
            let step: usize = dir
                .file_name()?
                .to_str()?
                .strip_prefix("checkpoint-")?
                .parse()
                .ok()?;
            dir.join(STATE_FILE).is_file().then_some((step, dir))
        })
        .max_by_key(|(step, _)| *step);
    match newest {
        Some((_, dir)) => Ok(dir),
        None => Err(TrainError::Invalid(format!(
            "--resume {}: neither a checkpoint (no {STATE_FILE}) nor a run's output folder \
             holding one (checkpoint-N)",
            path.display()
        ))),
    }
}

/// Where a run stands: enough to resume it exactly.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: usize,
    pub total_steps: usize,
    /// The next micro-batch: its epoch and its index within the epoch.
    pub epoch: usize,
    pub micro_batch: usize,
    pub seed: u64,
    pub group_size: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub examples: usize,
    pub lr: f64,
    pub evals: Vec<CheckpointEval>,
}

/// The optimizer and the run's position: `fresh`, or those of the checkpoint `--resume` names
/// (which must have run on the same data and batching).
pub(crate) fn start_state(
    fresh: TrainerState,
    resumed: Option<TrainerState>,
    model: &mut TrainableModel,
    options: &TrainOptions,
    observer: &dyn TrainObserver,
) -> Result<(TrainerState, AdamW)> {
    let mut optimizer = AdamW::new(ParamsAdamW {
        lr: fresh.lr,
        weight_decay: options.weight_decay,
        ..Default::default()
    });
    let (Some(dir), Some(mut saved)) = (&options.resume, resumed) else {
        return Ok((fresh, optimizer));
    };
    check_resumable(&saved, &fresh, dir)?;
    optimizer.load(&dir.join(OPTIMIZER_FILE), saved.step)?;
    model.rebuild(saved.step as u64)?;
    observer.message(&format!(
        "resuming {} at step {} of {}",
        dir.display(),
        saved.step,
        fresh.total_steps
    ));
    saved.total_steps = fresh.total_steps;
    Ok((saved, optimizer))
}

pub(crate) fn save_checkpoint(
    model: &TrainableModel,
    optimizer: &AdamW,
    state: &mut TrainerState,
    dir: &Path,
    options: &TrainOptions,
    observer: &dyn TrainObserver,
) -> Result<()> {
    model.save(dir)?;
    optimizer.save(&dir.join(OPTIMIZER_FILE))?;
    if let Some(spec) = &options.eval {
        let result = crate::evaluation::evaluate_checkpoint(
            spec,
            model,
            dir,
            state.step,
            &options.output,
            &options.input,
        )?;
        observer.message(&format!(
            "step {}: {} {:.4} (first stage {:.4})",
            state.step, result.metric, result.reranked, result.first_stage
        ));
        state.evals.push(result);
    }
    let path = dir.join(STATE_FILE);
    let text = serde_json::to_string_pretty(state).unwrap_or_default();
    std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))?;
    observer.message(&format!("checkpoint written to {}", dir.display()));
    Ok(())
}

pub(crate) fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| TrainError::Invalid(format!("{}: not a trainer state: {e}", path.display())))
}

/// A run resumes only with the data and batching it started with, or its position means nothing.
fn check_resumable(saved: &TrainerState, now: &TrainerState, dir: &Path) -> Result<()> {
    let pairs = [
        ("examples in the data", saved.examples, now.examples),
        ("--group-size", saved.group_size, now.group_size),
        ("--batch-size", saved.batch_size, now.batch_size),
        ("--grad-accum", saved.grad_accum, now.grad_accum),
    ];
    for (what, before, after) in pairs {
        if before != after {
            return Err(TrainError::Invalid(format!(
                "{}: the run used {before} {what}, this one {after}; resume with the same data and options",
                dir.display()
            )));
        }
    }
    if saved.seed != now.seed {
        return Err(TrainError::Invalid(format!(
            "{}: the run used --seed {}, this one {}",
            dir.display(),
            saved.seed,
            now.seed
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(run: &Path, name: &str, complete: bool) -> PathBuf {
        let dir = run.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        if complete {
            std::fs::write(dir.join(STATE_FILE), "{}").unwrap();
        }
        dir
    }

    #[test]
    fn a_run_folder_resumes_from_its_newest_complete_checkpoint() {
        let run = tempfile::tempdir().unwrap();
        let run = run.path();
        let first = checkpoint(run, "checkpoint-89", true);
        let newest = checkpoint(run, "checkpoint-178", true);
        checkpoint(run, "checkpoint-200", false); // killed while writing
        checkpoint(run, "checkpoint-x", true);
        assert_eq!(resolve(run).unwrap(), newest);
        assert_eq!(resolve(&first).unwrap(), first);
    }

    #[test]
    fn a_folder_without_checkpoints_is_refused_by_name() {
        let run = tempfile::tempdir().unwrap();
        checkpoint(run.path(), "checkpoint-5", false);
        let error = resolve(run.path()).unwrap_err().to_string();
        assert!(error.contains(&run.path().display().to_string()), "{error}");
        assert!(error.contains("checkpoint-N"), "{error}");
        let missing = run.path().join("nowhere");
        assert!(resolve(&missing).is_err());
    }
}
