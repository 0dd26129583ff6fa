//! `bge-rerank bench`: scoring speed on a workload file, as pairs/s and tokens/s.

use std::time::Instant;

use clap::Args;

use crate::jsonl::read_pairs;
use crate::model_args::{BatchArgs, InputArgs, ModelArgs};
use crate::progress::Ui;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Workload: JSON Lines of {"query", "passage"} (e.g. shared/bench/workloads/rerank-100.jsonl).
    #[arg(long, short)]
    workload: String,
    /// Timed passes over the whole workload.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    batch: BatchArgs,
}

pub fn run(args: BenchArgs, ui: Ui) -> anyhow::Result<()> {
    let pairs = read_pairs(&args.workload)?.pairs;
    if pairs.is_empty() {
        anyhow::bail!("{}: the workload has no pairs", args.workload);
    }
    let reranker = args.model.load()?;
    let options = args.inputs.options();
    let limits = args.batch.limits()?;
    let tokenize_start = Instant::now();
    let inputs = reranker.build_inputs(&pairs, &options)?;
    let layers = reranker.resolve_layers(args.inputs.cutoff_layers.as_deref())?;
    let tokenize_secs = tokenize_start.elapsed().as_secs_f64();
    let tokens: usize = inputs.iter().map(|i| i.len()).sum();

    // One short warm-up pass so first-touch page faults of the weights are not timed.
    let warm = &inputs[..inputs.len().min(4)];
    reranker.score_inputs(warm, limits, &layers, &|_| {})?;

    let mut seconds = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat.max(1) {
        let bar = ui.pairs_bar(inputs.len());
        let start = Instant::now();
        reranker.score_inputs(&inputs, limits, &layers, &|n| bar.inc(n as u64))?;
        seconds.push(start.elapsed().as_secs_f64());
        bar.finish_and_clear();
    }
    let best = seconds.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "model        {} ({})",
        reranker.model_dir().display(),
        reranker.architecture().name()
    );
    println!(
        "dtype        {} ({})",
        reranker.precision().compute,
        reranker.precision().explanation
    );
    println!(
        "workload     {} : {} pairs, {} tokens",
        args.workload,
        inputs.len(),
        tokens
    );
    println!("machine      {threads} threads available");
    println!("tokenize     {:.1} ms", tokenize_secs * 1e3);
    println!(
        "score        best {:.3} s, mean {:.3} s over {} runs",
        best,
        mean,
        seconds.len()
    );
    println!(
        "throughput   {:.2} pairs/s, {:.0} tokens/s (best run)",
        inputs.len() as f64 / best,
        tokens as f64 / best
    );
    Ok(())
}
