//! The engine's front door: load a model folder, then pairs -> inputs -> batches -> model -> scores.

use std::path::Path;

use crate::batch::{plan_batches, BatchLimits};
use crate::config::Architecture;
use crate::error::{Error, Result};
use crate::input::{load_tokenizer, InputBuilder, InputOptions, ModelInput};
use crate::model_dir::ModelDir;
use crate::model_folder::OpenedFolder;
use crate::models::encoder::Encoder;
use crate::models::ScoringModel;
use crate::precision::{Precision, ResolvedPrecision};

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub precision: Precision,
    /// A peft LoRA adapter folder merged into the weights at load (LLM rerankers' `peft_path`).
    pub adapter: Option<std::path::PathBuf>,
    /// Force a matrix kernel (else the best this CPU has, or `BGE_RERANK_KERNEL`).
    pub kernel: Option<crate::ops::cpu::MatmulKernel>,
    /// The Hugging Face cache a Hub id is resolved in (transformers' `cache_dir`), instead of
    /// `HF_HUB_CACHE` / `HF_HOME`.
    pub hub_cache: Option<std::path::PathBuf>,
}

/// How to score: FlagEmbedding's `compute_score` arguments, plus our batch token budget.
#[derive(Debug, Clone, Default)]
pub struct ScoreOptions {
    pub input: InputOptions,
    pub batch: BatchLimits,
    /// Apply the sigmoid (in f64, to the f32 logit) as FlagEmbedding's `normalize=True`.
    pub normalize: bool,
    /// Layerwise reranker: the layers that answer (sorted and de-duplicated); `None` = the last.
    pub cutoff_layers: Option<Vec<usize>>,
}

/// Told how many inputs each finished batch held; returning an error stops the scoring after that
/// batch.
pub type Progress<'a> = &'a dyn Fn(usize) -> Result<()>;

/// A loaded reranker, ready to score.
pub struct Reranker {
    dir: ModelDir,
    architecture: Architecture,
    precision: ResolvedPrecision,
    inputs: InputBuilder,
    model: Box<dyn ScoringModel>,
    parameters: usize,
    fingerprint: String,
}

impl Reranker {
    /// Loads a model folder or a Hugging Face id (through the local cache).
    pub fn load(model: &str, options: &LoadOptions) -> Result<Self> {
        let mut folder = OpenedFolder::in_dir(
            ModelDir::resolve_in(model, options.hub_cache.as_deref())?,
            options.precision,
            options.kernel,
        )?;
        if !folder.architecture.has_score_head() {
            return Err(Error::Unsupported(format!(
                "{}: `{}` is an encoder without a classification head, so it cannot score pairs; \
                 fine-tune it into a reranker first",
                folder.config_path.display(),
                folder.architecture.name()
            )));
        }
        if let Some(adapter) = &options.adapter {
            if !matches!(
                folder.architecture,
                Architecture::GemmaForCausalLM | Architecture::LayerWiseMiniCPMForCausalLM
            ) {
                return Err(Error::InvalidOption(format!(
                    "LoRA adapters apply to the LLM rerankers; {} is a `{}`",
                    folder.dir.root().display(),
                    folder.architecture.name()
                )));
            }
            folder.weights.merge_lora(adapter)?;
        }
        let config = folder.config_json()?;
        let inputs = folder.input_builder(folder.architecture)?;
        let model = folder.load_family(
            folder.architecture,
            &config,
            folder.var_builder(),
            folder.numerics(),
            &inputs,
        )?;
        let fingerprint = folder.fingerprint(options.adapter.as_deref())?;
        Ok(Self {
            fingerprint,
            parameters: folder.weights.parameters(),
            dir: folder.dir,
            architecture: folder.architecture,
            precision: folder.precision,
            inputs,
            model,
        })
    }

    pub fn model_dir(&self) -> &Path {
        self.dir.root()
    }

    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    pub fn precision(&self) -> &ResolvedPrecision {
        &self.precision
    }

    /// The model's weights in their compute format (parameters x the compute precision's size):
    /// what the resident memory after load is measured against.
    pub fn weight_bytes(&self) -> usize {
        self.parameters * self.precision.bytes_per_weight()
    }

    /// Changes whenever a file the scores depend on changes (config, tokenizer, weights, adapter):
    /// what caches of scores are keyed on. See `fingerprint`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The model's float parameters (what its f32 size is counted from).
    pub fn parameters(&self) -> usize {
        self.parameters
    }

    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        self.inputs.tokenizer()
    }

    /// The exact token ids the model reads for each pair.
    pub fn build_inputs<Q: AsRef<str>, P: AsRef<str>>(
        &self,
        pairs: &[(Q, P)],
        options: &InputOptions,
    ) -> Result<Vec<ModelInput>> {
        self.inputs.build(pairs, options)
    }

    /// The layers that answer for a cutoff-layer request (sorted, de-duplicated, checked); empty for
    /// families with one score.
    pub fn resolve_layers(&self, requested: Option<&[usize]>) -> Result<Vec<usize>> {
        self.model.resolve_layers(requested)
    }

    /// Raw scores of one batch of prepared inputs (a scheduler's unit of work), in order.
    pub fn score_batch(&self, batch: &[&ModelInput], layers: &[usize]) -> Result<Vec<Vec<f32>>> {
        self.model.score(batch, layers)
    }

    /// Raw scores of prepared inputs, in input order: one per resolved layer (or one). `progress` is
    /// told how many inputs each finished batch held; an error from it stops the scoring there (a
    /// caller's interrupt, e.g. Ctrl-C in Python) and is returned.
    pub fn score_inputs(
        &self,
        inputs: &[ModelInput],
        limits: BatchLimits,
        layers: &[usize],
        progress: Progress,
    ) -> Result<Vec<Vec<f32>>> {
        let lengths: Vec<usize> = inputs.iter().map(ModelInput::len).collect();
        let mut scores = vec![Vec::new(); inputs.len()];
        for batch in plan_batches(&lengths, limits) {
            let members: Vec<&ModelInput> = batch.iter().map(|&i| &inputs[i]).collect();
            let batch_scores = self.score_batch(&members, layers)?;
            for (&i, score) in batch.iter().zip(batch_scores) {
                scores[i] = score;
            }
            progress(batch.len())?;
        }
        Ok(scores)
    }

    /// FlagEmbedding's `compute_score(pairs, normalize)` for one answering layer: one score per pair.
    pub fn compute_score<Q: AsRef<str>, P: AsRef<str>>(
        &self,
        pairs: &[(Q, P)],
        options: &ScoreOptions,
    ) -> Result<Vec<f64>> {
        self.compute_scores(pairs, options, &|_| Ok(()))?
            .into_iter()
            .map(|mut layers| match layers.len() {
                1 => Ok(layers.remove(0)),
                n => Err(Error::InvalidOption(format!(
                    "{n} cutoff layers give {n} scores per pair; use compute_scores"
                ))),
            })
            .collect()
    }

    /// Scores of every pair, in order: one per answering layer (ascending), or one.
    pub fn compute_scores<Q: AsRef<str>, P: AsRef<str>>(
        &self,
        pairs: &[(Q, P)],
        options: &ScoreOptions,
        progress: Progress,
    ) -> Result<Vec<Vec<f64>>> {
        let layers = self.resolve_layers(options.cutoff_layers.as_deref())?;
        let inputs = self.build_inputs(pairs, &options.input)?;
        let raw = self.score_inputs(&inputs, options.batch, &layers, progress)?;
        Ok(raw
            .into_iter()
            .map(|layers| {
                layers
                    .into_iter()
                    .map(|s| finish_score(s, options.normalize))
                    .collect()
            })
            .collect())
    }
}

/// The score FlagEmbedding reports for a raw f32 logit.
pub fn finish_score(raw: f32, normalize: bool) -> f64 {
    let raw = f64::from(raw);
    if normalize {
        1.0 / (1.0 + (-raw).exp())
    } else {
        raw
    }
}

/// Loads the encoder body of an XLM-R or BERT checkpoint, with or without a classification head
/// (e.g. all-MiniLM-L6-v2's `BertModel` weights), with its input builder.
pub fn load_encoder(model: &str, precision: Precision) -> Result<(Encoder, InputBuilder)> {
    let folder = OpenedFolder::open(model, precision, None)?;
    let (cfg, flavor) = folder.encoder_config()?;
    let encoder = Encoder::load(folder.var_builder(), &cfg, flavor, folder.numerics())
        .map_err(|e| folder.load_error(e))?;
    let tokenizer_path = folder.dir.tokenizer_path();
    let inputs = InputBuilder::for_encoder(load_tokenizer(&tokenizer_path)?, &tokenizer_path)?;
    Ok((encoder, inputs))
}
