//! Rerankers built for training: the inference model code, with the trained tensors as autograd
//! variables and the ops switched to their differentiable forms (`Numerics::differentiable`).
//!
//! Full fine-tuning (the encoders) makes every float weight a variable. LoRA (the LLM families) adds
//! variables for the low-rank pairs of the target projections and leaves the base weights frozen and
//! memory-mapped. Models derive tensors from their weights at load (stacked projections, scaled LoRA
//! factors), so after each optimizer step the model is rebuilt over the same variables: cheap, and
//! the forward pass then always reads current values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_distr::Distribution;

use crate::config::Architecture;
use crate::error::{Error, Result};
use crate::input::{InputBuilder, InputOptions, ModelInput};
use crate::lora::{read_adapter, write_adapter, LoraPair};
use crate::model_folder::OpenedFolder;
use crate::models::encoder::{Flavor, BODY_PROBE};
use crate::models::layers::Numerics;
use crate::models::ScoringModel;
use crate::ops::cpu::MatmulKernel;
use crate::precision::Precision;
use crate::weights::Weights;

/// LoRA settings (peft's names): rank, alpha and the projections (last module-name component) it
/// adapts. `start` continues from an existing adapter instead, whose own settings then apply.
#[derive(Debug, Clone)]
pub struct LoraSettings {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<String>,
    pub start: Option<PathBuf>,
    /// The user set some of these (rather than taking the defaults): an error for an encoder,
    /// which trains in full, as a prompt is.
    pub explicit: bool,
}

impl Default for LoraSettings {
    /// The model card's: r 32, alpha 64, q/k/v/o projections.
    fn default() -> Self {
        Self {
            rank: 32,
            alpha: 64.0,
            targets: ["q_proj", "k_proj", "v_proj", "o_proj"]
                .map(String::from)
                .to_vec(),
            start: None,
            explicit: false,
        }
    }
}

/// How to train: encoders train every weight; the LLM rerankers train LoRA pairs with `lora`.
#[derive(Debug, Clone, Default)]
pub struct TrainSetup {
    pub lora: LoraSettings,
    /// Seeds the new classification head (plain encoders), LoRA initialisation and dropout masks.
    pub seed: u64,
    /// Dropout at the config's probabilities; off gives deterministic forward passes.
    pub dropout: bool,
}

/// The LoRA state of a model being trained.
struct LoraState {
    rank: usize,
    alpha: f64,
    scaling: f64,
    targets: Vec<String>,
    /// module path -> (A, B), in `params` too.
    pairs: Vec<(String, Var, Var)>,
}

/// A reranker whose forward pass records gradients for its trainable variables.
pub struct TrainableModel {
    folder: OpenedFolder,
    /// The architecture written to checkpoints (with its score head).
    architecture: Architecture,
    config: serde_json::Value,
    inputs: InputBuilder,
    model: Box<dyn ScoringModel>,
    params: Params,
    variables: Variables,
    setup: TrainSetup,
}

/// Trainable variables by checkpoint tensor name, sorted.
type Params = Vec<(String, Var)>;

/// Where the model's weights come from.
enum Variables {
    /// Every float weight is a variable in the map; `frozen` holds the stored tensors that are not
    /// trained (integer buffers), saved unchanged.
    Full {
        varmap: VarMap,
        frozen: Vec<(String, Tensor)>,
    },
    /// The base weights stay frozen and mapped; the LoRA pairs are the variables.
    Lora(LoraState),
}

impl TrainableModel {
    pub fn load(model: &str, setup: TrainSetup) -> Result<Self> {
        let folder = OpenedFolder::open(model, Precision::F32, Some(MatmulKernel::Candle))?;
        let mut config = folder.config_json()?;
        let architecture = match folder.architecture {
            Architecture::XlmRobertaModel => Architecture::XlmRobertaForSequenceClassification,
            Architecture::BertModel => Architecture::BertForSequenceClassification,
            other => other,
        };
        let is_encoder = matches!(
            architecture,
            Architecture::XlmRobertaForSequenceClassification
                | Architecture::BertForSequenceClassification
        );
        let inputs = folder.input_builder(architecture)?;
        if is_encoder && (setup.lora.explicit || setup.lora.start.is_some()) {
            return Err(Error::InvalidOption(
                "LoRA options (--lora-rank, --lora-alpha, --lora-targets, --adapter) apply to the \
                 LLM rerankers; a cross-encoder is fine-tuned in full"
                    .into(),
            ));
        }
        let (params, variables) = if is_encoder {
            if !folder.architecture.has_score_head() {
                add_score_head(&mut config, architecture);
            }
            full_params(&folder.weights, architecture, &config, setup.seed)?
        } else {
            lora_params(&folder.weights, &setup.lora, setup.seed)?
        };
        let model = build_model(
            &folder,
            architecture,
            &config,
            &inputs,
            &variables,
            &setup,
            0,
        )?;
        Ok(Self {
            folder,
            architecture,
            config,
            inputs,
            model,
            params,
            variables,
            setup,
        })
    }

    /// Rebuilds the model over the current variable values; `step` varies the dropout masks.
    pub fn rebuild(&mut self, step: u64) -> Result<()> {
        self.model = build_model(
            &self.folder,
            self.architecture,
            &self.config,
            &self.inputs,
            &self.variables,
            &self.setup,
            step,
        )?;
        Ok(())
    }

    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    pub fn model_dir(&self) -> &Path {
        self.folder.dir.root()
    }

    /// The fingerprint of the starting model's files (see `fingerprint`), for the run's record.
    pub fn fingerprint(&self) -> Result<String> {
        self.folder.fingerprint(self.setup.lora.start.as_deref())
    }

    /// The trainable variables by checkpoint tensor name.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    pub fn is_lora(&self) -> bool {
        matches!(self.variables, Variables::Lora(_))
    }

    /// The token ids each pair trains on: built exactly as at inference.
    pub fn build_inputs<Q: AsRef<str>, P: AsRef<str>>(
        &self,
        pairs: &[(Q, P)],
        options: &InputOptions,
    ) -> Result<Vec<ModelInput>> {
        self.inputs.build(pairs, options)
    }

    /// The layers that answer during training: every head of the layerwise reranker, else one.
    pub fn answering_layers(&self) -> Vec<usize> {
        self.model.all_layers()
    }

    /// Logits (inputs,) per answering layer (one tensor for single-score families), in the graph.
    pub fn logits(&self, inputs: &[&ModelInput]) -> Result<Vec<Tensor>> {
        self.model.logits(inputs, &self.answering_layers())
    }

    /// Writes a checkpoint transformers and FlagEmbedding load unchanged: the full model
    /// (config.json + model.safetensors) or the peft adapter, with the tokenizer files.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        match &self.variables {
            Variables::Lora(lora) => {
                let pairs: Vec<LoraPair> = lora
                    .pairs
                    .iter()
                    .map(|(module, a, b)| LoraPair {
                        module: module.clone(),
                        a: a.as_tensor().detach(),
                        b: b.as_tensor().detach(),
                    })
                    .collect();
                write_adapter(
                    dir,
                    lora.rank,
                    lora.alpha,
                    &lora.targets,
                    &self.folder.dir.root().display().to_string(),
                    &pairs,
                )?;
            }
            Variables::Full { frozen, .. } => {
                let mut tensors: HashMap<String, Tensor> = self
                    .params
                    .iter()
                    .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
                    .collect();
                tensors.extend(frozen.iter().cloned());
                self.write_model(dir, &tensors)?;
            }
        }
        copy_tokenizer_files(self.folder.dir.root(), dir)
    }

    /// LoRA: also writes the base model with the adapter merged in (W + alpha/r B A), stored dtypes.
    pub fn save_merged(&self, dir: &Path) -> Result<()> {
        let Variables::Lora(lora) = &self.variables else {
            return Err(Error::InvalidOption(
                "merging applies to LoRA training only".into(),
            ));
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let weights = &self.folder.weights;
        let mut tensors = HashMap::new();
        for name in weights.names() {
            tensors.insert(name.to_string(), weights.stored(name)?);
        }
        for (module, a, b) in &lora.pairs {
            let name = format!("{module}.weight");
            let base = &tensors[&name];
            let delta = (b.as_tensor().matmul(a.as_tensor())? * lora.scaling)?;
            let merged = (base.to_dtype(DType::F32)? + delta)?.to_dtype(base.dtype())?;
            tensors.insert(name, merged);
        }
        self.write_model(dir, &tensors)?;
        copy_tokenizer_files(self.folder.dir.root(), dir)
    }

    fn write_model(&self, dir: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let config_path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&self.config).map_err(|error| Error::Json {
            path: config_path.clone(),
            error,
        })?;
        std::fs::write(&config_path, text).map_err(|e| Error::io(&config_path, e))?;
        let weights_path = dir.join("model.safetensors");
        crate::safetensors_file::save(tensors, &weights_path)
    }
}

/// Every float tensor becomes a variable; a plain encoder gets a seeded head.
fn full_params(
    weights: &Weights,
    architecture: Architecture,
    config: &serde_json::Value,
    seed: u64,
) -> Result<(Params, Variables)> {
    let flavor = OpenedFolder::encoder_flavor(architecture)?;
    let prefix = flavor.prefix();
    // The same test as `Encoder::load`: a body without the prefix gets it, as the head's model names it.
    let bare = !weights.contains(&format!("{prefix}.{BODY_PROBE}"));
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for name in weights.names() {
        let name_out = if bare {
            format!("{prefix}.{name}")
        } else {
            name.to_string()
        };
        tensors.push((name_out, weights.stored(name)?));
    }
    let hidden = config["hidden_size"].as_u64().unwrap_or(0) as usize;
    let std = config["initializer_range"].as_f64().unwrap_or(0.02);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let head: &[(&str, usize)] = match flavor {
        Flavor::XlmRoberta => &[("classifier.dense", hidden), ("classifier.out_proj", 1)],
        Flavor::Bert => &[("bert.pooler.dense", hidden), ("classifier", 1)],
    };
    for &(layer, rows) in head {
        let weight = format!("{layer}.weight");
        if tensors.iter().any(|(n, _)| *n == weight) {
            continue;
        }
        // transformers' _init_weights: normal(0, initializer_range) weights, zero biases.
        let normal = rand_distr::Normal::new(0.0, std as f32)
            .map_err(|e| Error::InvalidOption(format!("initializer_range {std}: {e}")))?;
        let values: Vec<f32> = (0..rows * hidden)
            .map(|_| normal.sample(&mut rng))
            .collect();
        tracing::info!("new classification head layer `{layer}` ({rows}x{hidden}), seeded");
        tensors.push((
            weight,
            Tensor::from_vec(values, (rows, hidden), &Device::Cpu)?,
        ));
        tensors.push((
            format!("{layer}.bias"),
            Tensor::zeros(rows, DType::F32, &Device::Cpu)?,
        ));
    }
    let varmap = VarMap::new();
    let (mut params, mut frozen) = (Vec::new(), Vec::new());
    {
        let mut data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        for (name, tensor) in tensors {
            if tensor.dtype().is_float() {
                let var = Var::from_tensor(&tensor.to_dtype(DType::F32)?)?;
                data.insert(name.clone(), var.clone());
                params.push((name, var));
            } else {
                frozen.push((name, tensor));
            }
        }
    }
    params.sort_by(|a: &(String, Var), b| a.0.cmp(&b.0));
    Ok((params, Variables::Full { varmap, frozen }))
}

/// LoRA pairs for every target projection of the decoder layers: from `start`, or A uniform in
/// ±1/sqrt(in) (peft's kaiming-uniform) and B zero, so training starts at the base model.
fn lora_params(
    weights: &Weights,
    settings: &LoraSettings,
    seed: u64,
) -> Result<(Params, Variables)> {
    let (rank, alpha, targets, scaling, start_pairs) = match &settings.start {
        Some(dir) => {
            let adapter = read_adapter(dir, &|name| weights.contains(name))?;
            let pairs = adapter.pairs;
            (
                adapter.rank,
                adapter.alpha,
                adapter.targets,
                adapter.scaling,
                Some(pairs),
            )
        }
        None => {
            if settings.rank == 0 || settings.targets.is_empty() {
                return Err(Error::InvalidOption(
                    "LoRA needs a rank of at least 1 and at least one target module".into(),
                ));
            }
            let scaling = settings.alpha / settings.rank as f64;
            (
                settings.rank,
                settings.alpha,
                settings.targets.clone(),
                scaling,
                None,
            )
        }
    };
    let pairs: Vec<LoraPair> = match start_pairs {
        Some(pairs) => pairs,
        None => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut pairs = Vec::new();
            for name in weights.names() {
                let Some(module) = name.strip_suffix(".weight") else {
                    continue;
                };
                let leaf = module.rsplit('.').next().unwrap_or(module);
                if !module.starts_with("model.layers.") || !targets.iter().any(|t| t == leaf) {
                    continue;
                }
                let (out_dim, in_dim) = match weights.shape(name)?[..] {
                    [out_dim, in_dim] => (out_dim, in_dim),
                    ref other => {
                        return Err(Error::Unsupported(format!(
                            "`{name}` has shape {other:?}; LoRA adapts matrices"
                        )))
                    }
                };
                let bound = 1.0 / (in_dim as f32).sqrt();
                let uniform = rand_distr::Uniform::new(-bound, bound)
                    .map_err(|e| Error::InvalidOption(e.to_string()))?;
                let a: Vec<f32> = (0..rank * in_dim)
                    .map(|_| uniform.sample(&mut rng))
                    .collect();
                pairs.push(LoraPair {
                    module: module.to_string(),
                    a: Tensor::from_vec(a, (rank, in_dim), &Device::Cpu)?,
                    b: Tensor::zeros((out_dim, rank), DType::F32, &Device::Cpu)?,
                });
            }
            pairs
        }
    };
    let missing: Vec<&String> = targets
        .iter()
        .filter(|t| !pairs.iter().any(|p| p.module.ends_with(&format!(".{t}"))))
        .collect();
    if !missing.is_empty() {
        return Err(Error::InvalidOption(format!(
            "LoRA target modules {missing:?} match no projection of this model"
        )));
    }
    let mut params = Vec::new();
    let mut state = LoraState {
        rank,
        alpha,
        scaling,
        targets,
        pairs: Vec::new(),
    };
    for pair in pairs {
        let a = Var::from_tensor(&pair.a)?;
        let b = Var::from_tensor(&pair.b)?;
        let name = |which: &str| format!("base_model.model.{}.{which}.weight", pair.module);
        params.push((name("lora_A"), a.clone()));
        params.push((name("lora_B"), b.clone()));
        state.pairs.push((pair.module, a, b));
    }
    params.sort_by(|a: &(String, Var), b| a.0.cmp(&b.0));
    Ok((params, Variables::Lora(state)))
}

/// The model over the variables (a var map, or frozen weights plus LoRA pairs).
fn build_model(
    folder: &OpenedFolder,
    architecture: Architecture,
    config: &serde_json::Value,
    inputs: &InputBuilder,
    variables: &Variables,
    setup: &TrainSetup,
    step: u64,
) -> Result<Box<dyn ScoringModel>> {
    let numerics = Numerics {
        round_to: None,
        differentiable: true,
        kernel: MatmulKernel::Candle,
        int8: false,
    };
    let vb = match variables {
        Variables::Full { varmap, .. } => VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu),
        Variables::Lora(lora) => VarBuilder::from_backend(
            Box::new(LoraBackend::new(folder.weights.clone(), lora)?),
            DType::F32,
            Device::Cpu,
        ),
    };
    let mut model = folder.load_family(architecture, config, vb, numerics, inputs)?;
    let seed = setup
        .seed
        .wrapping_add(step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    model.set_dropout(setup.dropout.then_some(seed));
    Ok(model)
}

/// config.json of a plain encoder, turned into that of a one-label sequence classifier.
fn add_score_head(config: &mut serde_json::Value, architecture: Architecture) {
    config["architectures"] = serde_json::json!([architecture.name()]);
    config["id2label"] = serde_json::json!({"0": "LABEL_0"});
    config["label2id"] = serde_json::json!({"LABEL_0": 0});
}

/// The files a tokenizer is loaded from, by transformers or by us.
fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<()> {
    const NAMES: [&str; 9] = [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "sentencepiece.bpe.model",
        "tokenizer.model",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
    ];
    for name in NAMES {
        let source = from.join(name);
        if source.is_file() && from != to {
            std::fs::copy(&source, to.join(name)).map_err(|e| Error::io(&source, e))?;
        }
    }
    Ok(())
}

/// Frozen base weights plus the LoRA pairs being trained, served to the model loaders under
/// `<module>.lora_A.weight` / `<module>.lora_B.weight`; B is served times alpha / r, so `Dense`
/// needs no scaling of its own and the gradient still reaches the variable.
struct LoraBackend {
    base: Weights,
    lora: HashMap<String, Tensor>,
}

impl LoraBackend {
    fn new(base: Weights, state: &LoraState) -> Result<Self> {
        let mut lora = HashMap::new();
        for (module, a, b) in &state.pairs {
            lora.insert(format!("{module}.lora_A.weight"), a.as_tensor().clone());
            lora.insert(
                format!("{module}.lora_B.weight"),
                (b.as_tensor() * state.scaling)?,
            );
        }
        Ok(Self { base, lora })
    }
}

impl SimpleBackend for LoraBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.lora.get(name) {
            Some(t) => Ok(t.clone()),
            None => self.base.get(shape, name, init, dtype, dev),
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.lora.get(name) {
            Some(t) => Ok(t.clone()),
            None => self.base.get_unchecked(name, dtype, dev),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.lora.contains_key(name) || self.base.contains_tensor(name)
    }
}
