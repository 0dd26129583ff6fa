//! `bge-rerank score`: JSON Lines of pairs in, the same lines with "score" out.

use bge_rerank_engine::ranking;
use clap::Args;
use serde_json::Value;

use crate::jsonl::{read_pairs, write_lines, PairLines};
use crate::model_args::{score_options, BatchArgs, InputArgs, ModelArgs, PairFiles};
use crate::progress::Ui;

#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    files: PairFiles,
    /// Map scores to [0, 1] with the sigmoid, as FlagEmbedding's normalize=True.
    #[arg(long)]
    normalize: bool,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    batch: BatchArgs,
}

pub fn run(args: ScoreArgs, ui: Ui) -> anyhow::Result<()> {
    let options = score_options(&args.inputs, &args.batch, args.normalize)?;
    let PairLines { objects, pairs } = read_pairs(&args.files.input)?;
    let reranker = args.model.load()?;
    let bar = ui.pairs_bar(pairs.len());
    let scores = reranker.compute_scores(&pairs, &options, &|n| {
        bar.inc(n as u64);
        Ok(())
    })?;
    bar.finish_and_clear();
    let lines = objects.into_iter().zip(scores).map(|(mut object, layers)| {
        object.insert("score".into(), ranking::scores_json(&layers));
        Value::Object(object).to_string()
    });
    write_lines(&args.files.output, lines)
}
