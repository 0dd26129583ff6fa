//! `bge-rerank train`: fine-tune a reranker on the model card's JSON Lines.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bge_rerank_engine::trainable::LoraSettings;
use bge_rerank_engine::InputOptions;
use bge_rerank_train::{train, EvalSpec, StepLog, TrainObserver, TrainOptions};
use clap::Args;
use indicatif::ProgressBar;

use crate::progress::Ui;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Model folder or Hugging Face id: a reranker, or a plain XLM-R / BERT encoder (e.g.
    /// all-MiniLM-L6-v2), which gets a new seeded classification head.
    #[arg(long, short)]
    model: String,
    /// Training data: JSON Lines of {"query", "pos": [...], "neg": [...], "prompt"?, "pos_scores"?,
    /// "neg_scores"?}.
    #[arg(long)]
    data: PathBuf,
    /// Where checkpoints, train_log.jsonl, training_curves.svg and the final model go.
    #[arg(long, short)]
    output: PathBuf,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Stop after this many optimizer steps (instead of --epochs).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Passages per query: one positive and group-size - 1 negatives.
    #[arg(long, default_value_t = 8)]
    group_size: usize,
    /// Queries per forward/backward pass (each brings group-size pairs). Small passes keep a CPU's
    /// memory and caches in reach; grow the batch with --grad-accum.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Passes accumulated into one optimizer step (the default gives FlagEmbedding's 8 queries a step).
    #[arg(long, default_value_t = 8)]
    grad_accum: usize,
    /// Peak learning rate [default: 6e-5 full fine-tuning, 2e-4 LoRA].
    #[arg(long)]
    lr: Option<f64>,
    /// Share of the steps spent warming the learning rate up (then it decays linearly to 0).
    #[arg(long, default_value_t = 0.1)]
    warmup_ratio: f64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Longest pair in tokens (inputs are built as at inference).
    #[arg(long, default_value_t = 512)]
    max_length: usize,
    /// Token budget of the query [default: 3/4 of max-length].
    #[arg(long)]
    query_max_length: Option<usize>,
    /// LLM rerankers' instruction for lines without a "prompt" [default: FlagEmbedding's].
    #[arg(long)]
    prompt: Option<String>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Turn the config's dropout off.
    #[arg(long)]
    no_dropout: bool,
    /// LoRA rank (LLM rerankers) [default: 32].
    #[arg(long)]
    lora_rank: Option<usize>,
    /// LoRA alpha (LLM rerankers) [default: 64].
    #[arg(long)]
    lora_alpha: Option<f64>,
    /// Projections that get LoRA pairs [default: q_proj,k_proj,v_proj,o_proj].
    #[arg(long, value_delimiter = ',')]
    lora_targets: Option<Vec<String>>,
    /// Start LoRA from this adapter folder instead of a fresh initialisation.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// LoRA: also write the merged full model to OUTPUT/merged.
    #[arg(long)]
    merge: bool,
    /// Add distillation from the lines' pos_scores/neg_scores.
    #[arg(long)]
    distill: bool,
    /// Write a checkpoint every N steps (always one at the end).
    #[arg(long)]
    save_steps: Option<usize>,
    /// Continue from a checkpoint folder (OUTPUT/checkpoint-N), or from the newest one in a run's
    /// OUTPUT, with its optimizer state and data position; give the same data and options.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Clear the output folder first if it holds anything (a non-empty one is refused otherwise).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Measure nDCG@10 at each checkpoint on this BEIR-style folder.
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// The first-stage TREC run to rerank for --eval-data [default: built-in BM25].
    #[arg(long)]
    eval_run: Option<PathBuf>,
    #[arg(long, default_value = "test")]
    eval_split: String,
    #[arg(long, default_value_t = 100)]
    eval_top_k: usize,
    /// Evaluate on the first N judged queries only.
    #[arg(long)]
    eval_max_queries: Option<usize>,
}

struct Progress {
    bar: ProgressBar,
}

impl TrainObserver for Progress {
    fn started(&self, total_steps: usize, done_steps: usize, pairs_per_step: usize) {
        self.bar.set_length(total_steps as u64);
        self.bar.set_position(done_steps as u64);
        self.bar.reset_eta();
        self.message(&format!(
            "training {total_steps} steps of {pairs_per_step} pairs"
        ));
    }

    fn step(&self, log: &StepLog) {
        self.bar.set_position(log.step as u64);
        self.bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  {:.1} pairs/s",
            log.loss, log.lr, log.pairs_per_s
        ));
    }

    fn message(&self, text: &str) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }
}

pub fn run(args: TrainArgs, ui: Ui) -> anyhow::Result<()> {
    let options = TrainOptions {
        model: args.model,
        data: args.data,
        output: args.output,
        epochs: args.epochs,
        max_steps: args.max_steps,
        group_size: args.group_size,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        lr: args.lr,
        warmup_ratio: args.warmup_ratio,
        weight_decay: args.weight_decay,
        max_grad_norm: args.max_grad_norm,
        input: InputOptions {
            max_length: args.max_length,
            query_max_length: args.query_max_length,
            prompt: args.prompt,
            passage_max_length: None,
        },
        seed: args.seed,
        dropout: !args.no_dropout,
        lora: lora_settings(
            args.lora_rank,
            args.lora_alpha,
            args.lora_targets,
            args.adapter,
        ),
        distill: args.distill,
        save_steps: args.save_steps,
        merge: args.merge,
        resume: args.resume,
        overwrite: args.overwrite,
        eval: args.eval_data.map(|data| EvalSpec {
            data,
            run: args.eval_run,
            split: args.eval_split,
            top_k: args.eval_top_k,
            max_queries: args.eval_max_queries,
        }),
    };
    let stop = Arc::new(AtomicBool::new(false));
    watch_ctrl_c(stop.clone());
    let progress = Progress {
        bar: ui.steps_bar(),
    };
    let summary = train(&options, &progress, &stop)?;
    progress.bar.finish_and_clear();
    let pairs_per_s = summary.pairs as f64 / summary.seconds.max(1e-9);
    eprintln!(
        "{} {} steps, {} pairs in {:.1} s ({pairs_per_s:.1} pairs/s); final loss {}",
        if summary.interrupted {
            "stopped after"
        } else {
            "trained"
        },
        summary.steps,
        summary.pairs,
        summary.seconds,
        summary
            .final_loss
            .map_or("-".to_string(), |l| format!("{l:.4}"))
    );
    for eval in &summary.evals {
        eprintln!(
            "step {:>6}: {} {:.4} (first stage {:.4})",
            eval.step, eval.metric, eval.reranked, eval.first_stage
        );
    }
    eprintln!("model written to {}", summary.output.display());
    Ok(())
}

/// The first Ctrl-C asks the loop to stop after the current step and save a checkpoint; a second
/// one exits at once.
fn watch_ctrl_c(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
                eprintln!(
                    "\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)"
                );
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    });
}

/// The LoRA options, the model card's defaults where not given; `explicit` when any was given
/// (encoders refuse them).
fn lora_settings(
    rank: Option<usize>,
    alpha: Option<f64>,
    targets: Option<Vec<String>>,
    start: Option<PathBuf>,
) -> LoraSettings {
    let defaults = LoraSettings::default();
    LoraSettings {
        explicit: rank.is_some() || alpha.is_some() || targets.is_some(),
        rank: rank.unwrap_or(defaults.rank),
        alpha: alpha.unwrap_or(defaults.alpha),
        targets: targets.unwrap_or(defaults.targets),
        start,
    }
}
