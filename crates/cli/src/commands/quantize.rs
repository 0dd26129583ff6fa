//! `bge-rerank quantize`: save a model folder with its int8 weights, to load without quantizing again.

use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct QuantizeArgs {
    /// Model folder or Hugging Face id (in the local cache) to quantize.
    #[arg(long, short)]
    model: String,
    /// Folder to write (created; must be empty unless --overwrite).
    #[arg(long, short)]
    output: PathBuf,
    /// Write into a folder that is not empty.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    let saved = bge_rerank_engine::int8_folder::save(&args.model, &args.output, args.overwrite)?;
    let gb = |bytes: u64| bytes as f64 / 1e9;
    eprintln!(
        "{}: {} tensors int8, {} kept as stored; weights {:.2} GB -> {:.2} GB. It loads as int8 \
         (--dtype auto or int8).",
        saved.folder.display(),
        saved.quantized,
        saved.kept,
        gb(saved.bytes_before),
        gb(saved.bytes_after)
    );
    Ok(())
}
