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
    #[arg(long, short, global = true)]
    verbose: bool,
    /// No progress bar.
    #[arg(long, short, global = true)]
    quiet: bool,
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
    /// Serve rerankers over HTTP (TEI /rerank, Cohere/Jina /v1/rerank, /score).
    Serve(commands::serve::ServeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_level = if cli.verbose { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    let ui = progress::Ui { quiet: cli.quiet };
    let result = match cli.command {
        Command::Score(args) => commands::score::run(args, ui),
        Command::Tokenize(args) => commands::tokenize::run(args),
        Command::Rerank(args) => commands::rerank::run(args, ui),
        Command::Bench(args) => commands::bench::run(args, ui),
        Command::Serve(args) => commands::serve::run(args),
        Command::Eval(args) => commands::eval::run(args, ui),
        Command::Metrics(args) => commands::metrics::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
