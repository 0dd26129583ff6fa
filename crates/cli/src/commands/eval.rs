//! `bge-rerank eval`: rerank a first stage's top-k on one or more data sets.

use std::path::PathBuf;

use bge_rerank_eval::{
    cache::default_cache_dir, evaluate_dataset, first_stage, mark_deeper_than, parse_metrics,
    report, write_run, DataSet, EvalOptions,
};
use clap::Args;

use bge_rerank_engine::Precision;

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
            let path = run_path(out, data, data_sets.len());
            write_run(&path, &result.reranked_run, "bge-rerank")?;
            eprintln!("wrote {}", path.display());
        }
        results.push(result);
    }
    print!("{}", report::table(&results));
    if let Some(out) = &args.report {
        let context = report::ReportContext {
            model: model.model.clone(),
            adapter: model.adapter.as_ref().map(|a| a.display().to_string()),
            fingerprint: reranker.fingerprint().to_string(),
            dtype: reranker.precision().explanation.clone(),
            options: serde_json::json!({
                "split": options.split, "top_k": options.top_k,
                "metrics": options.metrics.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
                "max_queries": options.max_queries,
                "runs": args.run, "max_length": options.score.input.max_length,
                "query_max_length": options.score.input.query_max_length,
                "prompt": options.score.input.prompt, "cutoff_layers": options.score.cutoff_layers,
            }),
            version: concat!("bge-rerank ", env!("CARGO_PKG_VERSION")).into(),
        };
        for path in report::write_report(out, &results, &context)? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// Where `--save-run OUT` writes a data set's run: OUT itself, or with several data sets OUT with the
/// data set's name before the extension.
fn run_path(out: &std::path::Path, data: &DataSet, data_sets: usize) -> PathBuf {
    if data_sets < 2 {
        return out.to_path_buf();
    }
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "trec".into());
    out.with_extension(format!("{}.{ext}", data.name()))
}

/// Writes OUT.EXT for each (EXT, text), creating OUT's folder.
fn write_texts(out: &std::path::Path, texts: &[(&str, String)]) -> anyhow::Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    for (ext, text) in texts {
        let path = out.with_extension(ext);
        std::fs::write(&path, text)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The first stage's figures alone: a row per data set and metric, the average over data sets,
/// `--save-run` (its run cut to --top-k) and `--report` (OUT.json, OUT.md) as for a reranker.
fn first_stage_only(
    args: &EvalArgs,
    data_sets: &[DataSet],
    options: &EvalOptions,
) -> anyhow::Result<()> {
    // Options that only a reranker uses would be silently ignored: refuse them.
    let model = &args.model;
    if model.model.is_some() || model.adapter.is_some() || model.dtype != Precision::Auto {
        anyhow::bail!(
            "--first-stage-only scores nothing: --model, --adapter and --dtype have no effect with it"
        );
    }
    let mut rows = Vec::new();
    let mut per_set = serde_json::Map::new();
    let mut sums = vec![0.0; options.metrics.len()];
    for (i, data) in data_sets.iter().enumerate() {
        let stage = first_stage(data, args.run.get(i).map(PathBuf::as_path), options)?;
        let evaluation = stage.evaluate(&options.metrics);
        let mut metrics = serde_json::Map::new();
        for (m, (metric, value)) in options.metrics.iter().zip(&evaluation.mean).enumerate() {
            sums[m] += value;
            metrics.insert(metric.name.clone(), serde_json::json!(value));
        }
        per_set.insert(
            data.name().to_string(),
            serde_json::json!({"first_stage": stage.name, "queries": evaluation.num_queries(),
                               "metrics": metrics}),
        );
        if let Some(out) = &args.save_run {
            let path = run_path(out, data, data_sets.len());
            write_run(&path, &stage.run, "first-stage")?;
            eprintln!("wrote {}", path.display());
        }
        rows.push((
            data.name().to_string(),
            evaluation.num_queries(),
            evaluation.mean,
        ));
    }
    if data_sets.len() > 1 {
        let n = data_sets.len() as f64;
        rows.push(("average".into(), 0, sums.iter().map(|s| s / n).collect()));
    }
    let mut table = format!(
        "{:<16}{:<14}{:>8}  first stage\n",
        "data set", "metric", "queries"
    );
    let mut markdown =
        String::from("| data set | metric | queries | first stage |\n|---|---|---|---|\n");
    for (name, queries, means) in &rows {
        let queries = if *queries > 0 {
            queries.to_string()
        } else {
            String::new()
        };
        for (metric, value) in options.metrics.iter().zip(means) {
            let metric = &metric.name;
            table.push_str(&format!("{name:<16}{metric:<14}{queries:>8}  {value:.4}\n"));
            markdown.push_str(&format!("| {name} | {metric} | {queries} | {value:.4} |\n"));
        }
    }
    print!("{table}");
    if let Some(out) = &args.report {
        let average = rows
            .last()
            .filter(|_| data_sets.len() > 1)
            .map(|(_, _, means)| {
                (options.metrics.iter().zip(means))
                    .map(|(m, v)| (m.name.clone(), serde_json::json!(v)))
                    .collect::<serde_json::Map<_, _>>()
            });
        let json = serde_json::json!({"data_sets": per_set, "average": average});
        write_texts(
            out,
            &[
                ("json", serde_json::to_string_pretty(&json)?),
                ("md", markdown),
            ],
        )?;
    }
    Ok(())
}
