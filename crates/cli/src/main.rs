//! `bge-rerank`: a thin command line over the engine.

mod commands;
mod jsonl;
mod model_args;
mod progress;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bge-rerank",
    version,
    about = "Run BAAI BGE rerankers: FlagEmbedding's scores, from one binary"
)]
struct Cli {
    /// Say what was loaded and how (precision, batching) on stderr.
    #[arg(long, short, global = true, env = "BGE_RERANK_VERBOSE")]
    verbose: bool,
    /// No progress bar.
    #[arg(long, short, global = true, env = "BGE_RERANK_QUIET")]
    quiet: bool,
    /// Log lines as JSON objects (for log collectors), on stderr.
    #[arg(long, global = true, env = "BGE_RERANK_JSON_LOGS")]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score JSON Lines of {"query", "passage"}; writes each line back with "score" added.
    Score(commands::score::ScoreArgs),
    /// Show the exact token ids the model reads for each {"query", "passage"} line.
    Tokenize(commands::tokenize::TokenizeArgs),
    /// Rank documents against one query.
    Rerank(commands::rerank::RerankArgs),
    /// Measure scoring speed (pairs/s, tokens/s) on a workload file, or load-test a server (--url).
    Bench(commands::bench::BenchArgs),
    /// Rerank a first stage's top-k on retrieval data and report metrics beside the first stage's.
    Eval(commands::eval::EvalArgs),
    /// trec_eval's metrics for a TREC run against qrels.
    Metrics(commands::metrics::MetricsArgs),
    /// Fine-tune a reranker on JSON Lines of {"query", "pos", "neg"} (encoders in full, LLMs with LoRA).
    Train(commands::train::TrainArgs),
    /// Serve rerankers over HTTP (TEI /rerank, Cohere/Jina /v1/rerank, /score).
    Serve(commands::serve::ServeArgs),
    /// Save a model folder with int8 weights (as --dtype int8 computes them), to load without
    /// quantizing again.
    Quantize(commands::quantize::QuantizeArgs),
}

/// After a model is loaded: see `bge_rerank_engine::memory::release_free_memory`.
pub fn release_load_memory() {
    bge_rerank_engine::memory::release_free_memory();
}

fn main() -> std::process::ExitCode {
    bge_rerank_engine::memory::keep_freed_memory();
    let cli = Cli::parse();
    // A server logs each request (info); the other commands only warnings unless --verbose.
    let serving = matches!(cli.command, Command::Serve(_));
    let default_level = if cli.verbose || serving {
        "info"
    } else {
        "warn"
    };
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && !cli.json_logs)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        );
    match cli.json_logs {
        true => logs.json().init(),
        false => logs.init(),
    }
    let ui = progress::Ui { quiet: cli.quiet };
    let result = match cli.command {
        Command::Score(args) => commands::score::run(args, ui),
        Command::Tokenize(args) => commands::tokenize::run(args),
        Command::Rerank(args) => commands::rerank::run(args, ui),
        Command::Bench(args) => commands::bench::run(args, ui),
        Command::Serve(args) => commands::serve::run(args),
        Command::Eval(args) => commands::eval::run(args, ui),
        Command::Metrics(args) => commands::metrics::run(args),
        Command::Train(args) => commands::train::run(args, ui),
        Command::Quantize(args) => commands::quantize::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
