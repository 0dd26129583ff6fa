//! Opening a model folder: its config, architecture, weights and precision, and the loader of each
//! family. The front door (`Reranker`) and the trainer (`TrainableModel`) both load through it.

use candle_core::{DType, Device};

use crate::config::Architecture;
use crate::error::{read_json, Error, Result};
use crate::input::{load_tokenizer, special_token_id, InputBuilder};
use crate::model_dir::ModelDir;
use crate::models::encoder::{self, CrossEncoder, Flavor};
use crate::models::gemma::{self, GemmaReranker};
use crate::models::layers::Numerics;
use crate::models::minicpm::{self, LayerwiseReranker};
use crate::models::ScoringModel;
use crate::ops::cpu::MatmulKernel;
use crate::precision::{Precision, ResolvedPrecision};
use crate::weights::Weights;

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
        input_builder(&self.dir, architecture)
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
    ) -> Result<Box<dyn ScoringModel>> {
        let loaded = match architecture {
            Architecture::XlmRobertaForSequenceClassification
            | Architecture::BertForSequenceClassification => {
                let flavor = Self::encoder_flavor(architecture)?;
                let cfg: encoder::Config = self.parse_config(config)?;
                CrossEncoder::load(vb, &cfg, flavor, numerics).map(|m| Box::new(m) as _)
            }
            Architecture::GemmaForCausalLM => {
                let cfg: gemma::Config = self.parse_config(config)?;
                let yes = inputs.first_token_id("Yes")?;
                GemmaReranker::load(vb, &cfg, yes, numerics).map(|m| Box::new(m) as _)
            }
            Architecture::LayerWiseMiniCPMForCausalLM => {
                let cfg: minicpm::Config = self.parse_config(config)?;
                LayerwiseReranker::load(vb, &cfg, numerics).map(|m| Box::new(m) as _)
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

    pub fn open(model: &str, precision: Precision, kernel: Option<MatmulKernel>) -> Result<Self> {
        Self::in_dir(ModelDir::resolve(model)?, precision, kernel)
    }

    pub fn in_dir(
        dir: ModelDir,
        precision: Precision,
        kernel: Option<MatmulKernel>,
    ) -> Result<Self> {
        let config_path = dir.config_path();
        let architecture = Architecture::from_config_file(&config_path)?;
        let weights = Weights::open(&dir)?;
        let saved_int8 = crate::int8_folder::is_saved_int8(&config_path)?;
        let precision = match saved_int8 {
            true => crate::int8_folder::saved_precision(&config_path, precision)?,
            false => precision,
        };
        let precision = precision.resolve(weights.stored_dtype(), saved_int8, kernel)?;
        tracing::debug!(model = %dir.root().display(), arch = architecture.name(), "{}", precision.explanation);
        Ok(Self {
            dir,
            config_path,
            architecture,
            weights,
            precision,
        })
    }

    pub fn encoder_config(&self) -> Result<(encoder::Config, Flavor)> {
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

    /// The fingerprint of every file the scores depend on, an adapter's included.
    pub fn fingerprint(&self, adapter: Option<&std::path::Path>) -> Result<String> {
        let root = self.dir.root();
        let mut paths = vec![
            self.config_path.clone(),
            self.dir.tokenizer_path(),
            root.join("tokenizer_config.json"),
            root.join("special_tokens_map.json"),
        ];
        paths.extend(self.dir.weight_files()?);
        if let Some(adapter) = adapter {
            for name in [
                "adapter_config.json",
                "adapter_model.safetensors",
                "adapter_model.bin",
            ] {
                paths.push(adapter.join(name));
            }
        }
        let paths: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
        crate::fingerprint::of_files(&paths)
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

/// How a model folder's tokenizer turns pairs into inputs for `architecture`.
fn input_builder(dir: &ModelDir, architecture: Architecture) -> Result<InputBuilder> {
    let tokenizer_path = dir.tokenizer_path();
    let tokenizer = load_tokenizer(&tokenizer_path)?;
    let root = dir.root();
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
                    message: "no bos_token: the layerwise reranker's inputs start with it".into(),
                }
            })?;
            InputBuilder::for_llm(tokenizer, Some(bos))
        }
        _ => InputBuilder::for_encoder(tokenizer, &tokenizer_path),
    }
}

/// A model folder's architecture and input builder, from config.json and the tokenizer files alone
/// (no weights are opened): what `tokenize` needs.
pub fn inputs_only(model: &str) -> Result<(Architecture, InputBuilder)> {
    let dir = ModelDir::resolve(model)?;
    let architecture = Architecture::from_config_file(&dir.config_path())?;
    Ok((architecture, input_builder(&dir, architecture)?))
}
