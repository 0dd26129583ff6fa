//! The options every scoring command shares: which model, and FlagEmbedding's knobs.

use bge_rerank_engine::{
    BatchLimits, InputOptions, LoadOptions, Precision, Reranker, ScoreOptions,
};
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model folder, or Hugging Face id resolved through the local cache (e.g. BAAI/bge-reranker-v2-m3).
    #[arg(long, short)]
    pub model: String,
    /// Precision: auto (as stored, computed in f32 on CPU), f32, f16, bf16 or int8.
    #[arg(long, default_value = "auto", value_parser = parse_precision)]
    pub dtype: Precision,
    /// A peft LoRA adapter folder to merge into an LLM reranker (FlagEmbedding's peft_path).
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
}

/// The model options of commands that can also run without a model (`bench --url`,
/// `eval --first-stage-only`).
#[derive(Args, Debug, Clone)]
pub struct OptionalModelArgs {
    /// Model folder, or Hugging Face id resolved through the local cache.
    #[arg(long, short)]
    pub model: Option<String>,
    /// Precision: auto (as stored, computed in f32 on CPU), f32, f16, bf16 or int8.
    #[arg(long, default_value = "auto", value_parser = parse_precision)]
    pub dtype: Precision,
    /// A peft LoRA adapter folder to merge into an LLM reranker.
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
}

impl OptionalModelArgs {
    /// The model options, or an error saying what else the command needs.
    pub fn require(&self, otherwise: &str) -> anyhow::Result<ModelArgs> {
        match &self.model {
            Some(model) => Ok(ModelArgs {
                model: model.clone(),
                dtype: self.dtype,
                adapter: self.adapter.clone(),
            }),
            None => anyhow::bail!("give --model, or {otherwise}"),
        }
    }
}

/// Where JSON Lines of pairs come from and where the answer goes.
#[derive(Args, Debug, Clone)]
pub struct PairFiles {
    /// JSON Lines of {"query", "passage", ...}; - for stdin.
    #[arg(long, short, default_value = "-")]
    pub input: String,
    /// Where to write the lines, each with its field added; - for stdout.
    #[arg(long, short, default_value = "-")]
    pub output: String,
}

#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Longest passage (and pair) in tokens, as FlagEmbedding's max_length.
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
    /// Token budget of the query [default: 3/4 of max-length].
    #[arg(long)]
    pub query_max_length: Option<usize>,
    /// LLM rerankers' instruction [default: FlagEmbedding's].
    #[arg(long)]
    pub prompt: Option<String>,
    /// Layerwise reranker: the layers that answer, e.g. 28 or 28,40 [default: the last]. With several,
    /// "score" is a list in ascending layer order.
    #[arg(long, value_delimiter = ',')]
    pub cutoff_layers: Option<Vec<usize>>,
}

#[derive(Args, Debug, Clone)]
pub struct BatchArgs {
    /// Pairs per batch at most.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Real tokens per batch at most (batches are packed, so this bounds memory, not scores).
    #[arg(long, default_value_t = BatchLimits::default().max_batch_tokens)]
    pub max_batch_tokens: usize,
}

pub fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse()
        .map_err(|e: bge_rerank_engine::Error| e.to_string())
}

impl ModelArgs {
    pub fn load(&self) -> anyhow::Result<Reranker> {
        let reranker = Reranker::load(
            &self.model,
            &LoadOptions {
                precision: self.dtype,
                adapter: self.adapter.clone(),
                ..Default::default()
            },
        )?;
        crate::release_load_memory();
        tracing::info!(
            "model {} ({}); dtype {}: {}",
            reranker.model_dir().display(),
            reranker.architecture().name(),
            reranker.precision().compute,
            reranker.precision().explanation
        );
        Ok(reranker)
    }
}

impl InputArgs {
    pub fn options(&self) -> InputOptions {
        InputOptions {
            max_length: self.max_length,
            query_max_length: self.query_max_length,
            prompt: self.prompt.clone(),
            passage_max_length: None,
        }
    }
}

impl BatchArgs {
    pub fn limits(&self) -> anyhow::Result<BatchLimits> {
        if self.batch_size == 0 || self.max_batch_tokens == 0 {
            anyhow::bail!("--batch-size and --max-batch-tokens must be at least 1");
        }
        Ok(BatchLimits {
            batch_size: self.batch_size,
            max_batch_tokens: self.max_batch_tokens,
        })
    }
}

pub fn score_options(
    input: &InputArgs,
    batch: &BatchArgs,
    normalize: bool,
) -> anyhow::Result<ScoreOptions> {
    Ok(ScoreOptions {
        input: input.options(),
        batch: batch.limits()?,
        normalize,
        cutoff_layers: input.cutoff_layers.clone(),
    })
}
