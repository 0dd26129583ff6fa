//! `--eval-data`: rerank a data set's first stage with each checkpoint and record nDCG@10.

use std::path::{Path, PathBuf};

use bge_rerank_engine::trainable::TrainableModel;
use bge_rerank_engine::{InputOptions, LoadOptions, Reranker, ScoreOptions};
use bge_rerank_eval::{evaluate_dataset, parse_metrics, DataSet, EvalOptions};

use crate::error::Result;

/// Which data set checkpoints are measured on.
#[derive(Debug, Clone)]
pub struct EvalSpec {
    /// A BEIR-style folder (corpus.jsonl, queries.jsonl, qrels/).
    pub data: PathBuf,
    /// A TREC run to rerank; `None` uses the built-in BM25.
    pub run: Option<PathBuf>,
    pub split: String,
    pub top_k: usize,
    pub max_queries: Option<usize>,
}

/// One checkpoint's score.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CheckpointEval {
    pub step: usize,
    pub metric: String,
    pub first_stage: f64,
    pub reranked: f64,
    pub seconds: f64,
}

pub const METRIC: &str = "ndcg@10";

pub fn evaluate_checkpoint(
    spec: &EvalSpec,
    model: &TrainableModel,
    checkpoint: &Path,
    step: usize,
    output: &Path,
    input: &InputOptions,
) -> Result<CheckpointEval> {
    // A LoRA checkpoint is an adapter on the base model; a full one is a model folder.
    let reranker = if model.is_lora() {
        Reranker::load(
            &model.model_dir().to_string_lossy(),
            &LoadOptions {
                adapter: Some(checkpoint.to_path_buf()),
                ..Default::default()
            },
        )?
    } else {
        Reranker::load(&checkpoint.to_string_lossy(), &LoadOptions::default())?
    };
    let data = DataSet::open(&spec.data, &spec.split)?;
    let eval_options = EvalOptions {
        split: spec.split.clone(),
        top_k: spec.top_k,
        metrics: parse_metrics(METRIC)?,
        max_queries: spec.max_queries,
        cache_dir: output.join("eval-cache"),
        score: ScoreOptions {
            input: input.clone(),
            ..Default::default()
        },
        chunk_pairs: 1024,
    };
    let key = format!("{}@step{step}", checkpoint.display());
    let result = evaluate_dataset(
        &reranker,
        &key,
        &data,
        spec.run.as_deref(),
        &eval_options,
        &|_| {},
        &|_| {},
    )?;
    Ok(CheckpointEval {
        step,
        metric: "nDCG@10".into(),
        first_stage: result.first_stage.mean[0],
        reranked: result.reranked.mean[0],
        seconds: result.seconds,
    })
}
