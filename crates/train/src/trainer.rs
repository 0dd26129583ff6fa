//! The training loop: data -> groups -> inputs -> loss -> gradients (accumulated, clipped) -> AdamW,
//! with checkpoints, a JSON Lines log, resumption and evaluation at each checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bge_rerank_engine::trainable::{LoraSettings, TrainSetup, TrainableModel};
use bge_rerank_engine::{Architecture, InputOptions, ModelDir};
use candle_core::{Device, Tensor};

use crate::checkpoint::{
    read_state, save_checkpoint, start_state, with_resume_resolved, TrainerState,
};
use crate::data::TrainData;
use crate::error::{Result, TrainError};
use crate::evaluation::{CheckpointEval, EvalSpec};
use crate::log::{forget_steps_after, StepLog, LOG_FILE};
use crate::loss::batch_loss;
use crate::optimizer::{clip_grad_norm, linear_schedule, AdamW};

/// Everything `bge-rerank train` takes.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub model: String,
    pub data: PathBuf,
    pub output: PathBuf,
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides `epochs`).
    pub max_steps: Option<usize>,
    pub group_size: usize,
    /// Queries (groups) per forward/backward pass.
    pub batch_size: usize,
    /// Passes whose gradients are summed into one optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate; `None`: 6e-5 for full fine-tuning, 2e-4 for LoRA (FlagEmbedding's
    /// examples).
    pub lr: Option<f64>,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub input: InputOptions,
    pub seed: u64,
    pub dropout: bool,
    pub lora: LoraSettings,
    /// Add the soft cross-entropy to the teacher scores (`pos_scores` / `neg_scores`).
    pub distill: bool,
    /// Write a checkpoint every this many steps (and always at the end).
    pub save_steps: Option<usize>,
    /// LoRA: also write the merged full model to `output/merged`.
    pub merge: bool,
    /// A checkpoint folder of an earlier run with the same data and options, or that run's output
    /// folder (its newest checkpoint).
    pub resume: Option<PathBuf>,
    /// Clear a non-empty `output` folder first (else such a folder is refused, unless resuming).
    pub overwrite: bool,
    pub eval: Option<EvalSpec>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            model: String::new(),
            data: PathBuf::new(),
            output: PathBuf::new(),
            epochs: 1,
            max_steps: None,
            group_size: 8,
            batch_size: 1,
            grad_accum: 8,
            lr: None,
            warmup_ratio: 0.1,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            input: InputOptions::default(),
            seed: 42,
            dropout: true,
            lora: LoraSettings::default(),
            distill: false,
            save_steps: None,
            merge: false,
            resume: None,
            overwrite: false,
            eval: None,
        }
    }
}

/// What the loop reports as it goes (the CLI draws a progress bar from it).
pub trait TrainObserver {
    fn started(&self, _total_steps: usize, _done_steps: usize, _pairs_per_step: usize) {}
    fn step(&self, _log: &StepLog) {}
    fn message(&self, _text: &str) {}
}

#[derive(Debug)]
pub struct TrainSummary {
    pub steps: usize,
    pub pairs: usize,
    pub seconds: f64,
    pub final_loss: Option<f64>,
    pub output: PathBuf,
    pub checkpoints: Vec<PathBuf>,
    pub evals: Vec<CheckpointEval>,
    pub interrupted: bool,
}

/// The run's record in the output folder.
pub const RUN_FILE: &str = "run.json";

pub fn train(
    options: &TrainOptions,
    observer: &dyn TrainObserver,
    stop: &AtomicBool,
) -> Result<TrainSummary> {
    check_options(options)?;
    let options = &with_resume_resolved(options)?;
    let data = read_data(options, observer)?;
    prepare_output(options)?;
    let resumed: Option<TrainerState> = match &options.resume {
        Some(dir) => Some(read_state(dir)?),
        None => None,
    };
    let mut model = load_model(options)?;
    let lr = options
        .lr
        .unwrap_or(if model.is_lora() { 2e-4 } else { 6e-5 });
    let micro_per_epoch = data.examples.len().div_ceil(options.batch_size);
    let total_steps = match options.max_steps {
        Some(n) => n,
        None => (options.epochs * micro_per_epoch).div_ceil(options.grad_accum),
    };
    let warmup = (options.warmup_ratio * total_steps as f64).ceil() as usize;
    let fresh = TrainerState {
        step: 0,
        total_steps,
        epoch: 0,
        micro_batch: 0,
        seed: options.seed,
        group_size: options.group_size,
        batch_size: options.batch_size,
        grad_accum: options.grad_accum,
        examples: data.examples.len(),
        lr,
        evals: Vec::new(),
    };
    let (mut state, mut optimizer) = start_state(fresh, resumed, &mut model, options, observer)?;
    std::fs::create_dir_all(&options.output).map_err(|e| TrainError::io(&options.output, e))?;
    write_run_record(options, &model)?;
    let log_path = options.output.join(LOG_FILE);
    if options.resume.is_some() {
        forget_steps_after(&log_path, state.step)?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| TrainError::io(&log_path, e))?;

    let groups_per_step = options.batch_size * options.grad_accum;
    observer.started(
        total_steps,
        state.step,
        groups_per_step * options.group_size,
    );
    let start = Instant::now();
    let mut pairs_done = 0usize;
    let mut checkpoints = Vec::new();
    let mut final_loss = None;
    let mut interrupted = false;
    let mut order = data.epoch_order(options.seed, state.epoch);
    while state.step < total_steps {
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        let step_start = Instant::now();
        let step_lr = linear_schedule(lr, state.step, warmup, total_steps);
        let epoch = Epoch {
            data: &data,
            order: &mut order,
            micro_batches: micro_per_epoch,
        };
        let (mut grads, loss_sum, step_pairs) = accumulate(&model, epoch, &mut state, options)?;
        let grad_norm = clip_grad_norm(&mut grads, options.max_grad_norm)?;
        optimizer.params.lr = step_lr;
        optimizer.update(model.params(), &grads)?;
        state.step += 1;
        model.rebuild(state.step as u64)?;
        pairs_done += step_pairs;
        final_loss = Some(loss_sum);
        let entry = StepLog {
            step: state.step,
            epoch: state.epoch as f64 + state.micro_batch as f64 / micro_per_epoch as f64,
            loss: loss_sum,
            lr: step_lr,
            grad_norm,
            pairs_per_s: step_pairs as f64 / step_start.elapsed().as_secs_f64().max(1e-9),
            elapsed_s: start.elapsed().as_secs_f64(),
        };
        let line = serde_json::to_string(&entry).unwrap_or_default();
        writeln!(log, "{line}").map_err(|e| TrainError::io(&log_path, e))?;
        observer.step(&entry);
        let due = options
            .save_steps
            .is_some_and(|n| n > 0 && state.step.is_multiple_of(n));
        if due && state.step < total_steps {
            let dir = options.output.join(format!("checkpoint-{}", state.step));
            save_checkpoint(&model, &optimizer, &mut state, &dir, options, observer)?;
            checkpoints.push(dir);
        }
    }
    let written = Written {
        model: &model,
        optimizer: &optimizer,
        log_path: &log_path,
        interrupted,
    };
    finish(written, &mut state, &mut checkpoints, options, observer)?;
    Ok(TrainSummary {
        steps: state.step,
        pairs: pairs_done,
        seconds: start.elapsed().as_secs_f64(),
        final_loss,
        output: options.output.clone(),
        checkpoints,
        evals: state.evals,
        interrupted,
    })
}

/// `OUTPUT/run.json`: what the run trained from and how (model, its fingerprint, data, every
/// option) and which bge-rerank did it, beside the log and the curves it explains.
fn write_run_record(options: &TrainOptions, model: &TrainableModel) -> Result<()> {
    let record = serde_json::json!({
        "model": options.model,
        "model_dir": model.model_dir(),
        "fingerprint": model.fingerprint()?,
        "data": options.data,
        "options": format!("{options:?}"),
        "version": concat!("bge-rerank ", env!("CARGO_PKG_VERSION")),
    });
    let path = options.output.join(RUN_FILE);
    let text = serde_json::to_string_pretty(&record).unwrap_or_default();
    std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))
}

/// Options no run can start with.
fn check_options(options: &TrainOptions) -> Result<()> {
    if options.group_size < 2 {
        return Err(TrainError::Invalid(
            "--group-size must be at least 2 (one positive and a negative)".into(),
        ));
    }
    if options.batch_size == 0 || options.grad_accum == 0 {
        return Err(TrainError::Invalid(
            "--batch-size and --grad-accum must be at least 1".into(),
        ));
    }
    Ok(())
}

/// The training file, checked against what the options need of it.
fn read_data(options: &TrainOptions, observer: &dyn TrainObserver) -> Result<TrainData> {
    let data = TrainData::read(&options.data)?;
    if options.distill && !data.has_teacher_scores() {
        return Err(TrainError::Data {
            path: options.data.clone(),
            line: 0,
            message: "--distill needs `pos_scores` and `neg_scores` on every line".into(),
        });
    }
    let borrowed = data.without_negatives();
    if borrowed > 0 {
        observer.message(&format!(
            "{borrowed} of {} queries have no negatives: their groups take random passages of other queries",
            data.examples.len()
        ));
    }
    Ok(data)
}

/// The data in this epoch's order.
struct Epoch<'a> {
    data: &'a TrainData,
    order: &'a mut Vec<usize>,
    micro_batches: usize,
}

/// One optimizer step's gradients: `grad_accum` micro-batches (moving to the next epoch's order when
/// one ends), with the step's loss and pairs.
fn accumulate(
    model: &TrainableModel,
    epoch: Epoch,
    state: &mut TrainerState,
    options: &TrainOptions,
) -> Result<(Vec<Option<Tensor>>, f64, usize)> {
    let mut grads: Vec<Option<Tensor>> = vec![None; model.params().len()];
    let (mut loss_sum, mut pairs) = (0f64, 0);
    for _ in 0..options.grad_accum {
        if state.micro_batch >= epoch.micro_batches {
            state.epoch += 1;
            state.micro_batch = 0;
            *epoch.order = epoch.data.epoch_order(options.seed, state.epoch);
        }
        let (loss, n) = micro_batch(model, epoch.data, epoch.order, state, options, &mut grads)?;
        loss_sum += loss;
        pairs += n;
    }
    if !loss_sum.is_finite() {
        return Err(TrainError::Invalid(format!(
            "the loss became {loss_sum} at step {}: lower --lr",
            state.step + 1
        )));
    }
    Ok((grads, loss_sum, pairs))
}

/// One forward and backward pass over the next `batch_size` queries of `order` (each a group of
/// one positive and sampled negatives), its gradients added to `grads`: (loss share, pairs).
fn micro_batch(
    model: &TrainableModel,
    data: &TrainData,
    order: &[usize],
    state: &mut TrainerState,
    options: &TrainOptions,
    grads: &mut [Option<Tensor>],
) -> Result<(f64, usize)> {
    let first = state.micro_batch * options.batch_size;
    let members = &order[first..(first + options.batch_size).min(order.len())];
    let groups: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let mut rng = TrainData::group_rng(options.seed, state.epoch, first + k);
            data.group(i, options.group_size, &mut rng)
        })
        .collect();
    state.micro_batch += 1;
    let mut inputs = Vec::with_capacity(groups.len() * options.group_size);
    for group in &groups {
        let pairs: Vec<(&str, &str)> = group
            .passages
            .iter()
            .map(|p| (group.query.as_str(), p.as_str()))
            .collect();
        let mut input_options = options.input.clone();
        if group.prompt.is_some() {
            input_options.prompt = group.prompt.clone();
        }
        inputs.extend(model.build_inputs(&pairs, &input_options)?);
    }
    let refs: Vec<_> = inputs.iter().collect();
    let logits = model.logits(&refs)?;
    let teacher = if options.distill {
        let scores: Vec<f32> = groups
            .iter()
            .flat_map(|g| g.teacher.clone().unwrap_or_default())
            .collect();
        (scores.len() == inputs.len())
            .then(|| Tensor::from_vec(scores, inputs.len(), &Device::Cpu))
            .transpose()?
    } else {
        None
    };
    let loss =
        (batch_loss(&logits, options.group_size, teacher.as_ref())? / options.grad_accum as f64)?;
    let loss_value = f64::from(loss.to_scalar::<f32>()?);
    let step_grads = loss.backward()?;
    for ((_, var), acc) in model.params().iter().zip(grads.iter_mut()) {
        if let Some(g) = step_grads.get(var.as_tensor()) {
            *acc = Some(match acc.take() {
                Some(sum) => (sum + g)?,
                None => g.clone(),
            });
        }
    }
    Ok((loss_value, inputs.len()))
}

/// What the end of a run writes from.
struct Written<'a> {
    model: &'a TrainableModel,
    optimizer: &'a AdamW,
    log_path: &'a Path,
    interrupted: bool,
}

/// The end of the run, or Ctrl-C: a resumable checkpoint, the model at the top of `output`, the
/// merged model if asked (and not interrupted), and the curves.
fn finish(
    written: Written,
    state: &mut TrainerState,
    checkpoints: &mut Vec<PathBuf>,
    options: &TrainOptions,
    observer: &dyn TrainObserver,
) -> Result<()> {
    let Written {
        model,
        optimizer,
        log_path,
        interrupted,
    } = written;
    let dir = options.output.join(format!("checkpoint-{}", state.step));
    if state.step > 0 && !checkpoints.contains(&dir) {
        save_checkpoint(model, optimizer, state, &dir, options, observer)?;
        checkpoints.push(dir);
    }
    model.save(&options.output)?;
    if options.merge && !interrupted {
        let merged = options.output.join("merged");
        model.save_merged(&merged)?;
        observer.message(&format!("merged model written to {}", merged.display()));
    }
    crate::plot::write_curves(&options.output, log_path, &state.evals)?;
    Ok(())
}

/// A run writes into an empty folder: a previous run's log and checkpoints left beside the new
/// ones would read as one run (steps 1, 2, 3, 1). A non-empty folder is refused unless the run
/// resumes (it continues the log) or `overwrite` clears it first.
fn prepare_output(options: &TrainOptions) -> Result<()> {
    let out = &options.output;
    let mut entries = match std::fs::read_dir(out) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TrainError::io(out, e)),
    };
    if entries.next().is_none() || options.resume.is_some() {
        return Ok(());
    }
    if !options.overwrite {
        return Err(TrainError::Invalid(format!(
            "the output folder {} is not empty (a previous run?): pass --overwrite to clear it \
             first, or --resume {} to continue that run from its newest checkpoint",
            out.display(),
            out.display()
        )));
    }
    // Never clear the folder the model or the data is read from.
    let canonical = |p: &Path| p.canonicalize().ok();
    let out_abs = canonical(out);
    for (what, path) in [
        ("--model", Path::new(&options.model)),
        ("--data", options.data.as_path()),
    ] {
        if let (Some(o), Some(p)) = (&out_abs, canonical(path)) {
            if p.starts_with(o) {
                return Err(TrainError::Invalid(format!(
                    "--overwrite would delete {what} {}: it is inside the output folder {}",
                    path.display(),
                    out.display()
                )));
            }
        }
    }
    std::fs::remove_dir_all(out).map_err(|e| TrainError::io(out, e))
}

/// Encoders train in full (a resumed run loads the checkpoint); the LLM rerankers train LoRA pairs
/// on the base model (a resumed run starts from the checkpoint's adapter).
fn load_model(options: &TrainOptions) -> Result<TrainableModel> {
    let base = ModelDir::resolve(&options.model)?;
    let architecture = Architecture::from_config_file(&base.config_path())?;
    let is_llm = matches!(
        architecture,
        Architecture::GemmaForCausalLM | Architecture::LayerWiseMiniCPMForCausalLM
    );
    let mut lora = options.lora.clone();
    let source = match &options.resume {
        Some(dir) if !is_llm => dir.to_string_lossy().into_owned(),
        Some(dir) => {
            lora.start = Some(dir.clone());
            options.model.clone()
        }
        None => options.model.clone(),
    };
    let setup = TrainSetup {
        lora,
        seed: options.seed,
        dropout: options.dropout,
    };
    Ok(TrainableModel::load(&source, setup)?)
}
