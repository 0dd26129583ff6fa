//! `bge-rerank eval`: rerank a first stage's top-k on one or more data sets.

use std::path::PathBuf;

use bge_rerank_eval::{
    cache::default_cache_dir, evaluate_dataset, first_stage, mark_deeper_than, parse_metrics,
    report, write_run, DataSet, EvalOptions,
};
use clap::Args;

use crate::model_args::{score_options, BatchArgs, InputArgs, OptionalModelArgs};
use crate::progress::Ui;

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: OptionalModelArgs,
    /// Only measure the first stage (no model needed): e.g. to see the built-in BM25's figures.
    #[arg(long)]
    first_stage_only: bool,
    /// A data set folder (BEIR, or FlagEmbedding's layout); repeat for several.
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    #[arg(long, default_value = "test")]
    split: String,
    /// First-stage TREC run, one per --data in the same order [default: built-in BM25].
    #[arg(long)]
    run: Vec<PathBuf>,
    /// Documents per query to rerank.
    #[arg(long, default_value_t = 100)]
    top_k: usize,
    /// Comma-separated: ndcg@k, map, map@k, recall@k, p@k, mrr, mrr@k (the first decides
    /// improved/worsened and the plot).
    #[arg(long, default_value = "ndcg@10,map,recall@100,mrr@10")]
    metrics: String,
    /// Evaluate only the first N queries (sorted by id) of each data set.
    #[arg(long)]
    max_queries: Option<usize>,
    /// Write the reranked run (TREC format); with several data sets, NAME is added before the extension.
    #[arg(long)]
    save_run: Option<PathBuf>,
    /// Write OUT.json, OUT.md and OUT.svg.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Where the BM25 index and the score cache live [default: $BGE_RERANK_CACHE or ~/.cache/bge-rerank].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    batch: BatchArgs,
}

pub fn run(args: EvalArgs, ui: Ui) -> anyhow::Result<()> {
    if !args.run.is_empty() && args.run.len() != args.data.len() {
        anyhow::bail!(
            "give one --run per --data ({} runs for {} data sets)",
            args.run.len(),
            args.data.len()
        );
    }
    if args.top_k == 0 {
        anyhow::bail!("--top-k must be at least 1");
    }
    let mut options = EvalOptions {
        split: args.split.clone(),
        top_k: args.top_k,
        metrics: parse_metrics(&args.metrics)?,
        max_queries: args.max_queries,
        cache_dir: args.cache_dir.clone().unwrap_or_else(default_cache_dir),
        score: score_options(&args.inputs, &args.batch, false)?,
        chunk_pairs: 256,
    };
    if options.metrics.is_empty() {
        anyhow::bail!("--metrics names no metric");
    }
    for warning in mark_deeper_than(&mut options.metrics, options.top_k) {
        eprintln!("warning: {warning} (raise --top-k for the deeper figure)");
    }
    let data_sets = args
        .data
        .iter()
        .map(|d| DataSet::open(d, &args.split))
        .collect::<Result<Vec<_>, _>>()?;
    if args.first_stage_only {
        return first_stage_only(&args, &data_sets, &options);
    }
    let model = args.model.require("--first-stage-only")?;
    let reranker = model.load()?;
    let model_key = format!("{}|adapter={:?}", model.model, model.adapter);
    let mut results = Vec::new();
    for (i, data) in data_sets.iter().enumerate() {
        let bar = ui.pairs_bar(0);
        bar.set_prefix(data.name());
        let result = evaluate_dataset(
            &reranker,
            &model_key,
            data,
            args.run.get(i).map(PathBuf::as_path),
            &options,
            &|total| bar.set_length(total as u64),
            &|n| bar.inc(n as u64),
        )?;
        bar.finish_and_clear();
        if let Some(out) = &args.save_run {
            let path = if data_sets.len() > 1 {
                let ext = out
                    .extension()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "trec".into());
                out.with_extension(format!("{}.{ext}", data.name()))
            } else {
                out.clone()
            };
            write_run(&path, &result.reranked_run, "bge-rerank")?;
            eprintln!("wrote {}", path.display());
        }
        results.push(result);
    }
    print!("{}", report::table(&results));
    if let Some(out) = &args.report {
        for path in report::write_report(out, &results)? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn first_stage_only(
    args: &EvalArgs,
    data_sets: &[DataSet],
    options: &EvalOptions,
) -> anyhow::Result<()> {
    println!(
        "{:<16}{:<14}{:>8}  first stage",
        "data set", "metric", "queries"
    );
    for (i, data) in data_sets.iter().enumerate() {
        let stage = first_stage(data, args.run.get(i).map(PathBuf::as_path), options)?;
        let evaluation = stage.evaluate(&options.metrics);
        for (metric, value) in options.metrics.iter().zip(&evaluation.mean) {
            println!(
                "{:<16}{:<14}{:>8}  {value:.4}",
                data.name(),
                metric.name,
                evaluation.num_queries()
            );
        }
        println!("{}: {}", data.name(), stage.name);
        if let Some(out) = &args.save_run {
            write_run(out, &stage.run, "first-stage")?;
            eprintln!("wrote {}", out.display());
        }
    }
    Ok(())
}
