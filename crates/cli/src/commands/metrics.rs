//! `bge-rerank metrics`: trec_eval's measures for any run.

use std::path::PathBuf;

use bge_rerank_eval::{evaluate, parse_metrics, read_qrels, read_run};
use clap::Args;

#[derive(Args)]
pub struct MetricsArgs {
    /// Judgments: TREC qrels (`qid 0 docid rel`) or a BEIR tsv (`query-id corpus-id score`).
    #[arg(long)]
    qrels: PathBuf,
    /// A TREC run (`qid Q0 docid rank score tag`).
    #[arg(long)]
    run: PathBuf,
    /// Comma-separated: ndcg@k, map, map@k, recall@k, p@k, mrr, mrr@k.
    #[arg(long, default_value = "ndcg@10,map,recall@100,p@10,mrr@10")]
    metrics: String,
    /// Print one JSON object keyed by the metric names as given.
    #[arg(long)]
    json: bool,
}

pub fn run(args: MetricsArgs) -> anyhow::Result<()> {
    let metrics = parse_metrics(&args.metrics)?;
    let qrels = read_qrels(&args.qrels)?;
    let run = read_run(&args.run)?;
    let evaluation = evaluate(&qrels, &run, &metrics);
    if args.json {
        let object: serde_json::Map<String, serde_json::Value> = metrics
            .iter()
            .zip(&evaluation.mean)
            .map(|(m, v)| (m.name.clone(), serde_json::json!(v)))
            .collect();
        println!("{}", serde_json::Value::Object(object));
    } else {
        println!("{:<16}all\t{}", "num_q", evaluation.num_queries());
        for (metric, value) in metrics.iter().zip(&evaluation.mean) {
            println!("{:<16}all\t{value:.4}", metric.name);
        }
    }
    Ok(())
}
