//! The engine's front door: load a model folder, then pairs -> inputs -> batches -> model -> scores.

use std::path::Path;

use candle_core::{DType, Device};

use crate::batch::{plan_batches, BatchLimits};
use crate::config::Architecture;
use crate::error::{read_json, Error, Result};
use crate::input::{load_tokenizer, special_token_id, InputBuilder, InputOptions, ModelInput};
use crate::model_dir::ModelDir;
use crate::models::encoder::{self, CrossEncoder, Encoder, Flavor};
use crate::models::gemma::{self, GemmaReranker};
use crate::models::layers::Numerics;
use crate::models::minicpm::{self, LayerwiseReranker};
use crate::models::ScoringModel;
use crate::precision::{Precision, ResolvedPrecision};
use crate::weights::Weights;

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub precision: Precision,
    /// A peft LoRA adapter folder merged into the weights at load (LLM rerankers' `peft_path`).
    pub adapter: Option<std::path::PathBuf>,
    /// Force a matrix kernel (else the best this CPU has, or `BGE_RERANK_KERNEL`).
    pub kernel: Option<crate::ops::cpu::MatmulKernel>,
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

/// A loaded reranker, ready to score.
pub struct Reranker {
    dir: ModelDir,
    architecture: Architecture,
    precision: ResolvedPrecision,
    inputs: InputBuilder,
    model: Box<dyn ScoringModel>,
    weight_bytes: usize,
}

impl Reranker {
    /// Loads a model folder or a Hugging Face id (through the local cache).
    pub fn load(model: &str, options: &LoadOptions) -> Result<Self> {
        let mut folder = OpenedFolder::open(model, options.precision, options.kernel)?;
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
        let family = folder.load_family(
            folder.architecture,
            &config,
            folder.var_builder(),
            folder.numerics(),
            &inputs,
        )?;
        let model = family.boxed();
        let weight_bytes = folder.weights.float_parameters() * folder.precision.bytes_per_weight();
        Ok(Self {
            weight_bytes,
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
        self.weight_bytes
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
    /// told how many inputs each finished batch held.
    pub fn score_inputs(
        &self,
        inputs: &[ModelInput],
        limits: BatchLimits,
        layers: &[usize],
        progress: &dyn Fn(usize),
    ) -> Result<Vec<Vec<f32>>> {
        let lengths: Vec<usize> = inputs.iter().map(ModelInput::len).collect();
        let mut scores = vec![Vec::new(); inputs.len()];
        for batch in plan_batches(&lengths, limits) {
            let members: Vec<&ModelInput> = batch.iter().map(|&i| &inputs[i]).collect();
            let batch_scores = self.score_batch(&members, layers)?;
            for (&i, score) in batch.iter().zip(batch_scores) {
                scores[i] = score;
            }
            progress(batch.len());
        }
        Ok(scores)
    }

    /// FlagEmbedding's `compute_score(pairs, normalize)` for one answering layer: one score per pair.
    pub fn compute_score<Q: AsRef<str>, P: AsRef<str>>(
        &self,
        pairs: &[(Q, P)],
        options: &ScoreOptions,
    ) -> Result<Vec<f64>> {
        self.compute_scores(pairs, options, &|_| {})?
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
        progress: &dyn Fn(usize),
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

/// A loaded model family, before it is boxed behind `ScoringModel`.
// Built once per load and boxed behind `ScoringModel` right after: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Family {
    Encoder(CrossEncoder),
    Gemma(GemmaReranker),
    Layerwise(LayerwiseReranker),
}

impl Family {
    fn boxed(self) -> Box<dyn ScoringModel> {
        match self {
            Family::Encoder(m) => Box::new(m),
            Family::Gemma(m) => Box::new(m),
            Family::Layerwise(m) => Box::new(m),
        }
    }
}

/// A model folder with its config read and its weights mapped: what every family's loader needs.
pub(crate) struct OpenedFolder {
    pub dir: ModelDir,
    pub config_path: std::path::PathBuf,
    pub architecture: Architecture,
    pub weights: Weights,
    pub precision: ResolvedPrecision,
}

impl OpenedFolder {
    pub fn config_json(&self) -> Result<serde_json::Value> {
        read_json(&self.config_path)
    }

    fn parse_config<T: serde::de::DeserializeOwned>(
        &self,
        config: &serde_json::Value,
    ) -> Result<T> {
        serde_json::from_value(config.clone()).map_err(|error| Error::Json {
            path: self.config_path.clone(),
            error,
        })
    }

    /// How this folder's tokenizer turns pairs into inputs for `architecture`.
    pub fn input_builder(&self, architecture: Architecture) -> Result<InputBuilder> {
        let tokenizer_path = self.dir.tokenizer_path();
        let tokenizer = load_tokenizer(&tokenizer_path)?;
        let root = self.dir.root();
        match architecture {
            Architecture::GemmaForCausalLM => {
                let bos = special_token_id(root, &tokenizer, "bos_token");
                let pad = special_token_id(root, &tokenizer, "pad_token");
                // FlagLLMReranker prepends bos only when it exists and differs from pad.
                let bos = bos.filter(|b| Some(*b) != pad);
                InputBuilder::for_llm(tokenizer, bos)
            }
            Architecture::LayerWiseMiniCPMForCausalLM => {
                let bos = special_token_id(root, &tokenizer, "bos_token").ok_or_else(|| {
                    Error::Tokenizer {
                        path: tokenizer_path.clone(),
                        message: "no bos_token: the layerwise reranker's inputs start with it"
                            .into(),
                    }
                })?;
                InputBuilder::for_llm(tokenizer, Some(bos))
            }
            _ => InputBuilder::for_encoder(tokenizer, &tokenizer_path),
        }
    }

    /// The model of `architecture` (a family with a score head), configured by `config` and with
    /// weights from `vb`; `inputs` is the folder's input builder (Gemma reads its "Yes" token).
    pub fn load_family(
        &self,
        architecture: Architecture,
        config: &serde_json::Value,
        vb: candle_nn::VarBuilder<'static>,
        numerics: Numerics,
        inputs: &InputBuilder,
    ) -> Result<Family> {
        let loaded = match architecture {
            Architecture::XlmRobertaForSequenceClassification
            | Architecture::BertForSequenceClassification => {
                let flavor = Self::encoder_flavor(architecture)?;
                let cfg: encoder::Config = self.parse_config(config)?;
                CrossEncoder::load(vb, &cfg, flavor, numerics).map(Family::Encoder)
            }
            Architecture::GemmaForCausalLM => {
                let cfg: gemma::Config = self.parse_config(config)?;
                let yes = inputs.first_token_id("Yes")?;
                GemmaReranker::load(vb, &cfg, yes, numerics).map(Family::Gemma)
            }
            Architecture::LayerWiseMiniCPMForCausalLM => {
                let cfg: minicpm::Config = self.parse_config(config)?;
                LayerwiseReranker::load(vb, &cfg, numerics).map(Family::Layerwise)
            }
            Architecture::XlmRobertaModel | Architecture::BertModel => {
                return Err(Error::Unsupported(format!(
                    "`{}` has no classification head",
                    architecture.name()
                )))
            }
        };
        loaded.map_err(|e| self.load_error(e))
    }

    pub fn open(
        model: &str,
        precision: Precision,
        kernel: Option<crate::ops::cpu::MatmulKernel>,
    ) -> Result<Self> {
        let dir = ModelDir::resolve(model)?;
        let config_path = dir.config_path();
        let architecture = Architecture::from_config_file(&config_path)?;
        let weights = Weights::open(&dir)?;
        let precision = precision.resolve(weights.stored_dtype(), kernel)?;
        tracing::debug!(model = %dir.root().display(), arch = architecture.name(), "{}", precision.explanation);
        Ok(Self {
            dir,
            config_path,
            architecture,
            weights,
            precision,
        })
    }

    fn encoder_config(&self) -> Result<(encoder::Config, Flavor)> {
        Ok((
            read_json(&self.config_path)?,
            Self::encoder_flavor(self.architecture)?,
        ))
    }

    pub fn encoder_flavor(architecture: Architecture) -> Result<Flavor> {
        Ok(match architecture {
            Architecture::BertForSequenceClassification | Architecture::BertModel => Flavor::Bert,
            Architecture::XlmRobertaForSequenceClassification | Architecture::XlmRobertaModel => {
                Flavor::XlmRoberta
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "`{}` is not an encoder",
                    other.name()
                )))
            }
        })
    }

    pub fn numerics(&self) -> Numerics {
        self.precision.numerics
    }

    /// Weights are read as f32; `Numerics` rounds them where a lower precision was asked for.
    pub fn var_builder(&self) -> candle_nn::VarBuilder<'static> {
        self.weights.var_builder(DType::F32, &Device::Cpu)
    }

    /// Tensor errors already name file and tensor; config-level ones get the config path.
    pub fn load_error(&self, error: Error) -> Error {
        match error {
            Error::Compute(e) => Error::Load {
                path: self.dir.root().to_path_buf(),
                message: e.to_string(),
            },
            Error::Unsupported(message) => Error::Config {
                path: self.config_path.clone(),
                message,
            },
            other => other,
        }
    }
}
