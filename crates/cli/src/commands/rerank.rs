//! `bge-rerank rerank`: one query against a list of documents, best first.

use anyhow::bail;
use bge_rerank_engine::ranking;
use clap::Args;
use serde_json::{json, Value};

use crate::jsonl::{display_source, parse_objects, read_input, string_field};
use crate::model_args::{score_options, BatchArgs, InputArgs, ModelArgs};
use crate::progress::Ui;

#[derive(Args)]
pub struct RerankArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The query.
    #[arg(long)]
    query: String,
    /// Documents: JSON Lines of {"text": ...} or one plain-text document per line; - for stdin.
    #[arg(long, short, default_value = "-")]
    input: String,
    /// Show only the K best.
    #[arg(long)]
    top_n: Option<usize>,
    /// Print a JSON array [{"index", "score", "text"}] instead of a table.
    #[arg(long)]
    json: bool,
    /// Sigmoid scores in [0, 1].
    #[arg(long)]
    normalize: bool,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    batch: BatchArgs,
}

/// Documents from JSON Lines (when the first non-blank line is a JSON object) or plain lines.
fn read_documents(source: &str) -> anyhow::Result<Vec<String>> {
    let text = read_input(source)?;
    let name = display_source(source);
    let first = text.lines().find(|l| !l.trim().is_empty());
    let is_jsonl = first.is_some_and(|l| matches!(serde_json::from_str(l), Ok(Value::Object(_))));
    if is_jsonl {
        parse_objects(&name, &text)?
            .iter()
            .map(|(line_no, object)| string_field(&name, *line_no, object, "text"))
            .collect()
    } else {
        Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect())
    }
}

pub fn run(args: RerankArgs, ui: Ui) -> anyhow::Result<()> {
    let options = score_options(&args.inputs, &args.batch, args.normalize)?;
    let documents = read_documents(&args.input)?;
    if documents.is_empty() {
        bail!("{}: no documents to rerank", display_source(&args.input));
    }
    let reranker = args.model.load()?;
    let pairs: Vec<(&str, &str)> = documents
        .iter()
        .map(|d| (args.query.as_str(), d.as_str()))
        .collect();
    let bar = ui.pairs_bar(pairs.len());
    ranking::one_score_per_pair(reranker.resolve_layers(options.cutoff_layers.as_deref())?)?;
    let scores: Vec<f64> = reranker
        .compute_scores(&pairs, &options, &|n| {
            bar.inc(n as u64);
            Ok(())
        })?
        .into_iter()
        .map(|layers| layers[0])
        .collect();
    bar.finish_and_clear();

    let mut ranked: Vec<(usize, f64)> = ranking::rank(&scores)
        .into_iter()
        .map(|i| (i, scores[i]))
        .collect();
    ranked.truncate(args.top_n.unwrap_or(ranked.len()));
    if args.json {
        let out: Vec<Value> = ranked
            .iter()
            .map(
                |&(index, score)| json!({"index": index, "score": score, "text": documents[index]}),
            )
            .collect();
        println!("{}", Value::Array(out));
    } else {
        println!("{:>4}  {:>6}  {:>10}  text", "rank", "index", "score");
        for (rank, &(index, score)) in ranked.iter().enumerate() {
            println!(
                "{:>4}  {:>6}  {:>10.4}  {}",
                rank + 1,
                index,
                score,
                preview(&documents[index], 80)
            );
        }
    }
    Ok(())
}

fn preview(text: &str, max_chars: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max_chars {
        flat
    } else {
        let cut: String = flat.chars().take(max_chars - 1).collect();
        format!("{cut}…")
    }
}
