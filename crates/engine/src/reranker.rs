//! The engine's front door: load a model folder, then pairs -> inputs -> batches -> model -> scores.

use std::path::Path;

use candle_core::{DType, Device};

use crate::batch::{plan_batches, BatchLimits};
use crate::config::Architecture;
use crate::error::{read_json, Error, Result};
use crate::input::{load_tokenizer, InputBuilder, InputOptions, ModelInput};
use crate::model_dir::ModelDir;
use crate::models::encoder::{self, CrossEncoder, Encoder, Flavor};
use crate::models::layers::Numerics;
use crate::models::ScoringModel;
use crate::precision::{Precision, ResolvedPrecision};
use crate::weights::Weights;

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub precision: Precision,
}

/// How to score: FlagEmbedding's `compute_score` arguments, plus our batch token budget.
#[derive(Debug, Clone, Default)]
pub struct ScoreOptions {
    pub input: InputOptions,
    pub batch: BatchLimits,
    /// Apply the sigmoid (in f64, to the f32 logit) as FlagEmbedding's `normalize=True`.
    pub normalize: bool,
}

/// A loaded reranker, ready to score.
pub struct Reranker {
    dir: ModelDir,
    architecture: Architecture,
    precision: ResolvedPrecision,
    inputs: InputBuilder,
    model: Box<dyn ScoringModel>,
}

impl Reranker {
    /// Loads a model folder or a Hugging Face id (through the local cache).
    pub fn load(model: &str, options: &LoadOptions) -> Result<Self> {
        let folder = OpenedFolder::open(model, options.precision)?;
        if !folder.architecture.has_score_head() {
            return Err(Error::Unsupported(format!(
                "{}: `{}` is an encoder without a classification head, so it cannot score pairs; \
                 fine-tune it into a reranker first",
                folder.config_path.display(),
                folder.architecture.name()
            )));
        }
        let tokenizer_path = folder.dir.tokenizer_path();
        let tokenizer = load_tokenizer(&tokenizer_path)?;
        let (inputs, model): (InputBuilder, Box<dyn ScoringModel>) = match folder.architecture {
            Architecture::XlmRobertaForSequenceClassification
            | Architecture::BertForSequenceClassification => {
                let (cfg, flavor) = folder.encoder_config()?;
                let model = CrossEncoder::load(folder.var_builder(), &cfg, flavor, folder.numerics())
                    .map_err(|e| folder.load_error(e))?;
                (
                    InputBuilder::for_encoder(tokenizer, &tokenizer_path)?,
                    Box::new(model),
                )
            }
            Architecture::XlmRobertaModel | Architecture::BertModel => unreachable!("checked above"),
        };
        Ok(Self {
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

    /// Raw scores of prepared inputs, in input order. `progress` is told how many inputs each
    /// finished batch held.
    pub fn score_inputs(
        &self,
        inputs: &[ModelInput],
        limits: BatchLimits,
        progress: &dyn Fn(usize),
    ) -> Result<Vec<f32>> {
        let lengths: Vec<usize> = inputs.iter().map(ModelInput::len).collect();
        let mut scores = vec![0f32; inputs.len()];
        for batch in plan_batches(&lengths, limits) {
            let members: Vec<&ModelInput> = batch.iter().map(|&i| &inputs[i]).collect();
            let batch_scores = self.model.score(&members)?;
            for (&i, score) in batch.iter().zip(batch_scores) {
                scores[i] = score;
            }
            progress(batch.len());
        }
        Ok(scores)
    }

    /// FlagEmbedding's `compute_score(pairs, normalize)`: one score per pair, in order.
    pub fn compute_score<Q: AsRef<str>, P: AsRef<str>>(
        &self,
        pairs: &[(Q, P)],
        options: &ScoreOptions,
    ) -> Result<Vec<f64>> {
        self.compute_score_with_progress(pairs, options, &|_| {})
    }

    pub fn compute_score_with_progress<Q: AsRef<str>, P: AsRef<str>>(
        &self,
        pairs: &[(Q, P)],
        options: &ScoreOptions,
        progress: &dyn Fn(usize),
    ) -> Result<Vec<f64>> {
        let inputs = self.build_inputs(pairs, &options.input)?;
        let raw = self.score_inputs(&inputs, options.batch, progress)?;
        Ok(raw
            .into_iter()
            .map(|s| finish_score(s, options.normalize))
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
    let folder = OpenedFolder::open(model, precision)?;
    let (cfg, flavor) = folder.encoder_config()?;
    let encoder = Encoder::load(folder.var_builder(), &cfg, flavor, folder.numerics())
        .map_err(|e| folder.load_error(e))?;
    let tokenizer_path = folder.dir.tokenizer_path();
    let inputs = InputBuilder::for_encoder(load_tokenizer(&tokenizer_path)?, &tokenizer_path)?;
    Ok((encoder, inputs))
}

/// A model folder with its config read and its weights mapped: what every family's loader needs.
struct OpenedFolder {
    dir: ModelDir,
    config_path: std::path::PathBuf,
    architecture: Architecture,
    weights: Weights,
    precision: ResolvedPrecision,
}

impl OpenedFolder {
    fn open(model: &str, precision: Precision) -> Result<Self> {
        let dir = ModelDir::resolve(model)?;
        let config_path = dir.config_path();
        let architecture = Architecture::from_config_file(&config_path)?;
        let weights = Weights::open(&dir)?;
        let precision = precision.resolve(weights.stored_dtype());
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
        let flavor = match self.architecture {
            Architecture::BertForSequenceClassification | Architecture::BertModel => Flavor::Bert,
            Architecture::XlmRobertaForSequenceClassification | Architecture::XlmRobertaModel => {
                Flavor::XlmRoberta
            }
        };
        Ok((read_json(&self.config_path)?, flavor))
    }

    fn numerics(&self) -> Numerics {
        self.precision.numerics
    }

    /// Weights are read as f32; `Numerics` rounds them where a lower precision was asked for.
    fn var_builder(&self) -> candle_nn::VarBuilder<'static> {
        self.weights.var_builder(DType::F32, &Device::Cpu)
    }

    /// Tensor errors already name file and tensor; config-level ones get the config path.
    fn load_error(&self, error: Error) -> Error {
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
