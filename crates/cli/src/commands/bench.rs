//! `bge-rerank bench`: scoring speed on a workload file (pairs/s, tokens/s), or, with `--url`, a load
//! test of a running server (requests/s and latency percentiles).

use std::time::Instant;

use anyhow::Context;
use clap::Args;

use crate::jsonl::read_pairs;
use crate::model_args::{BatchArgs, InputArgs, OptionalModelArgs};
use crate::progress::Ui;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: OptionalModelArgs,
    /// Workload: JSON Lines of {"query", "passage"} (e.g. shared/bench/workloads/rerank-100.jsonl).
    #[arg(long, short, required_unless_present_any = ["url", "kernels"])]
    workload: Option<String>,
    /// Instead: GFLOP/s of every matmul kernel this CPU has on the models' real shapes, beside the
    /// machine's measured peak.
    #[arg(long, conflicts_with_all = ["url", "workload"])]
    kernels: bool,
    /// With --kernels: rows (tokens) of activations per product.
    #[arg(long, default_value_t = 2048, requires = "kernels")]
    kernel_rows: usize,
    /// Timed passes over the whole workload.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    batch: BatchArgs,
    /// Load-test a server route instead, e.g. http://127.0.0.1:8080/rerank.
    #[arg(long, requires = "request")]
    url: Option<String>,
    /// The JSON body to send (e.g. shared/bench/workloads/rerank-100.request.json).
    #[arg(long)]
    request: Option<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Bearer token for a server started with --api-key.
    #[arg(long, env = "BGE_RERANK_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

pub fn run(args: BenchArgs, ui: Ui) -> anyhow::Result<()> {
    if let Some(url) = &args.url {
        return load_test(url, &args);
    }
    if args.kernels {
        return kernels(args.kernel_rows, args.repeat);
    }
    let model = args
        .model
        .require("--url and --request to load-test a server")?;
    let Some(workload) = args.workload.clone() else {
        anyhow::bail!("give --workload (JSON Lines of pairs), or --url and --request");
    };
    let pairs = read_pairs(&workload)?.pairs;
    if pairs.is_empty() {
        anyhow::bail!("{workload}: the workload has no pairs");
    }
    let reranker = model.load()?;
    let load_memory = Memory::read();
    let options = args.inputs.options();
    let limits = args.batch.limits()?;
    let tokenize_start = Instant::now();
    let inputs = reranker.build_inputs(&pairs, &options)?;
    let layers = reranker.resolve_layers(args.inputs.cutoff_layers.as_deref())?;
    let tokenize_secs = tokenize_start.elapsed().as_secs_f64();
    let tokens: usize = inputs.iter().map(|i| i.len()).sum();

    // One short warm-up pass so first-touch page faults of the weights are not timed.
    let warm = &inputs[..inputs.len().min(4)];
    reranker.score_inputs(warm, limits, &layers, &|_| Ok(()))?;

    let mut seconds = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat.max(1) {
        let bar = ui.pairs_bar(inputs.len());
        let start = Instant::now();
        reranker.score_inputs(&inputs, limits, &layers, &|n| {
            bar.inc(n as u64);
            Ok(())
        })?;
        seconds.push(start.elapsed().as_secs_f64());
        bar.finish_and_clear();
    }
    let best = seconds.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
    let threads = rayon_threads();
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
        "workload     {workload} : {} pairs, {tokens} tokens",
        inputs.len()
    );
    println!("machine      {} ({threads} threads)", cpu_name());
    if let Some(load) = load_memory {
        let gb = |b: u64| b as f64 / 1e9;
        let weights = reranker.weight_bytes() as u64;
        let f32_weights = reranker.parameters() as u64 * 4;
        println!(
            "memory       weights {:.2} GB as {} ({:.2} GB as f32); resident after load {:.2} GB \
             ({:.2}x; {:.2}x the f32 weights), peak during load {:.2} GB, peak overall {:.2} GB",
            gb(weights),
            reranker.precision().compute,
            gb(f32_weights),
            gb(load.resident),
            load.resident as f64 / weights.max(1) as f64,
            load.resident as f64 / f32_weights.max(1) as f64,
            gb(load.peak),
            gb(Memory::read().map_or(0, |m| m.peak)),
        );
    }
    println!("tokenize     {:.1} ms", tokenize_secs * 1e3);
    println!(
        "score        best {:.3} s, mean {:.3} s over {} runs",
        best,
        mean,
        seconds.len()
    );
    println!(
        "throughput   {:.2} pairs/s, {:.0} tokens/s, {:.3} s/pair (best run)",
        inputs.len() as f64 / best,
        tokens as f64 / best,
        best / inputs.len() as f64
    );
    Ok(())
}

/// `--kernels`: the probe's peaks, then each shape's GFLOP/s (GOP/s for int8) per kernel path and
/// its share of the peak of the instruction it is built on.
fn kernels(rows: usize, repeat: usize) -> anyhow::Result<()> {
    use bge_rerank_engine::ops::{cpu::CpuFeatures, cpu::MatmulKernel, probe};
    let cpu = CpuFeatures::detect();
    println!("cpu          {} ({cpu})", cpu_name());
    println!("threads      {}", rayon_threads());
    println!("selected     {}", MatmulKernel::select()?);
    let peaks = probe::peaks();
    for peak in &peaks {
        println!("peak         {:>7.0} GFLOP/s  {}", peak.gflops, peak.path);
    }
    println!("products     {rows} rows, best of {repeat}");
    for (name, shape) in probe::model_shapes(rows) {
        for found in probe::measure_shape(shape, repeat)? {
            // Each kernel beside the peak of the instruction it is built on.
            let peak = peaks
                .iter()
                .find(|p| p.instruction.is_some() && p.instruction == found.instruction);
            let share = peak.map_or(String::new(), |p| {
                format!(" ({:.0}% of its peak)", 100.0 * found.gflops / p.gflops)
            });
            println!(
                "{name:<28} {:<26} {:>7.0} GFLOP/s{share}",
                found.path, found.gflops
            );
        }
    }
    Ok(())
}

/// The process's resident memory now and its peak so far (Linux: /proc/self/status).
struct Memory {
    resident: u64,
    peak: u64,
}

impl Memory {
    fn read() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        };
        Some(Self {
            resident: field("VmRSS:")?,
            peak: field("VmHWM:")?,
        })
    }
}

/// The CPU's model name from /proc/cpuinfo, where there is one.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn load_test(url: &str, args: &BenchArgs) -> anyhow::Result<()> {
    let request = args.request.as_deref().unwrap_or_default();
    let body = std::fs::read_to_string(request).with_context(|| format!("reading {request}"))?;
    let test = bge_rerank_server::load_test::LoadTest {
        url: url.to_string(),
        body,
        concurrency: args.concurrency.max(1),
        requests: args.requests.max(1),
        api_key: args.api_key.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime
        .block_on(bge_rerank_server::load_test::run(test))
        .map_err(anyhow::Error::msg)?;
    println!(
        "target       {url} ({} concurrent clients)",
        args.concurrency
    );
    println!("{report}");
    match report.failure_summary() {
        Some(failures) => anyhow::bail!("{failures}"),
        None => Ok(()),
    }
}
