//! peft LoRA adapters (adapter_config.json + adapter_model.safetensors): read, merged into the base
//! weights at load as FlagEmbedding's `peft_path` does (`merge_and_unload`): W += (alpha / r) * B A,
//! and written by training in the layout peft loads.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{read_json, Error, Result};

const CONFIG: &str = "adapter_config.json";
const WEIGHTS: &str = "adapter_model.safetensors";
const KEY_PREFIX: &str = "base_model.model.";

#[derive(serde::Deserialize)]
struct AdapterConfig {
    peft_type: String,
    r: usize,
    lora_alpha: f64,
    target_modules: serde_json::Value,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    bias: Option<String>,
    #[serde(default)]
    rank_pattern: Option<serde_json::Value>,
    #[serde(default)]
    alpha_pattern: Option<serde_json::Value>,
    #[serde(default)]
    layers_to_transform: Option<serde_json::Value>,
    #[serde(default)]
    modules_to_save: Option<serde_json::Value>,
}

fn is_empty(value: &Option<serde_json::Value>) -> bool {
    match value {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Object(o)) => o.is_empty(),
        Some(serde_json::Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

/// One adapted module: `module` is the base model's module path (`model.layers.0.self_attn.q_proj`),
/// `a` is (r, in) and `b` is (out, r), in f32.
#[derive(Debug, Clone)]
pub struct LoraPair {
    pub module: String,
    pub a: Tensor,
    pub b: Tensor,
}

/// A peft LoRA adapter as read from its folder.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub rank: usize,
    pub alpha: f64,
    /// alpha / r (or alpha / sqrt(r) with rsLoRA).
    pub scaling: f64,
    pub targets: Vec<String>,
    pub pairs: Vec<LoraPair>,
}

/// The weight deltas of one adapter, keyed by the base model's tensor names (`...q_proj.weight`).
pub fn load_deltas(
    dir: &Path,
    has_base_tensor: &dyn Fn(&str) -> bool,
) -> Result<HashMap<String, Tensor>> {
    let adapter = read_adapter(dir, has_base_tensor)?;
    adapter
        .pairs
        .iter()
        .map(|pair| {
            let delta = (pair.b.matmul(&pair.a)? * adapter.scaling)?;
            Ok((format!("{}.weight", pair.module), delta))
        })
        .collect()
}

/// Reads and checks an adapter folder against the base model it is meant for.
pub fn read_adapter(dir: &Path, has_base_tensor: &dyn Fn(&str) -> bool) -> Result<Adapter> {
    let config_path = dir.join(CONFIG);
    let cfg: AdapterConfig = read_json(&config_path)?;
    let unsupported = |message: String| Error::Config {
        path: config_path.clone(),
        message,
    };
    if cfg.peft_type != "LORA" {
        return Err(unsupported(format!(
            "peft_type `{}` is not supported (only LORA)",
            cfg.peft_type
        )));
    }
    if cfg.use_dora {
        return Err(unsupported(
            "DoRA adapters (use_dora) are not supported".into(),
        ));
    }
    if cfg.fan_in_fan_out {
        return Err(unsupported(
            "fan_in_fan_out adapters are not supported".into(),
        ));
    }
    if cfg.bias.as_deref().is_some_and(|b| b != "none") {
        return Err(unsupported(format!(
            "bias `{}` is not supported (only none)",
            cfg.bias.unwrap_or_default()
        )));
    }
    for (name, value) in [
        ("rank_pattern", &cfg.rank_pattern),
        ("alpha_pattern", &cfg.alpha_pattern),
        ("layers_to_transform", &cfg.layers_to_transform),
        ("modules_to_save", &cfg.modules_to_save),
    ] {
        if !is_empty(value) {
            return Err(unsupported(format!("`{name}` is not supported")));
        }
    }
    let targets: Vec<String> = match &cfg.target_modules {
        serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        other => {
            return Err(unsupported(format!(
                "target_modules must be a list of module names (a regex such as {other} is not supported)"
            )))
        }
    };
    if cfg.r == 0 {
        return Err(unsupported("r must be at least 1".into()));
    }
    let scaling = if cfg.use_rslora {
        cfg.lora_alpha / (cfg.r as f64).sqrt()
    } else {
        cfg.lora_alpha / cfg.r as f64
    };

    let weights_path = dir.join(WEIGHTS);
    if !weights_path.is_file() {
        return Err(Error::Safetensors {
            path: weights_path,
            message: "file not found".into(),
        });
    }
    let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu).map_err(|e| {
        Error::Safetensors {
            path: weights_path.clone(),
            message: e.to_string(),
        }
    })?;
    let tensor_error = |name: &str, message: String| Error::Tensor {
        file: WEIGHTS.into(),
        name: name.into(),
        message,
    };
    let mut pairs = Vec::new();
    for (key, a) in &tensors {
        let Some(module) = key.strip_suffix(".lora_A.weight") else {
            if !key.ends_with(".lora_B.weight") {
                return Err(tensor_error(
                    key,
                    "not a LoRA matrix (lora_A / lora_B)".into(),
                ));
            }
            continue;
        };
        let module = module.strip_prefix(KEY_PREFIX).unwrap_or(module);
        let leaf = module.rsplit('.').next().unwrap_or(module);
        if !targets.iter().any(|t| t == leaf) {
            return Err(tensor_error(
                key,
                format!("module `{leaf}` is not in target_modules {targets:?}"),
            ));
        }
        let base_name = format!("{module}.weight");
        if !has_base_tensor(&base_name) {
            return Err(tensor_error(
                key,
                format!("the base model has no tensor `{base_name}`"),
            ));
        }
        let b_key = key.replace(".lora_A.weight", ".lora_B.weight");
        let b = tensors
            .get(&b_key)
            .ok_or_else(|| tensor_error(&b_key, "missing (its lora_A is present)".into()))?;
        let (a, b) = (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
        if a.dim(0)? != cfg.r || b.dim(1)? != cfg.r {
            return Err(tensor_error(
                key,
                format!(
                    "rank {:?} / {:?} does not match r = {}",
                    a.dims(),
                    b.dims(),
                    cfg.r
                ),
            ));
        }
        pairs.push(LoraPair {
            module: module.to_string(),
            a,
            b,
        });
    }
    if pairs.is_empty() {
        return Err(Error::Safetensors {
            path: weights_path,
            message: "no LoRA matrices found".into(),
        });
    }
    pairs.sort_by(|x, y| x.module.cmp(&y.module));
    Ok(Adapter {
        rank: cfg.r,
        alpha: cfg.lora_alpha,
        scaling,
        targets,
        pairs,
    })
}

/// Writes `pairs` as a peft adapter folder that peft, FlagEmbedding's `peft_path` and `--adapter`
/// load: adapter_config.json and adapter_model.safetensors with peft's tensor names. (Training
/// applies no LoRA dropout, and the config says so.)
pub fn write_adapter(
    dir: &Path,
    rank: usize,
    alpha: f64,
    targets: &[String],
    base_model: &str,
    pairs: &[LoraPair],
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": null,
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
    });
    let config_path = dir.join(CONFIG);
    let text = serde_json::to_string_pretty(&config).map_err(|error| Error::Json {
        path: config_path.clone(),
        error,
    })?;
    std::fs::write(&config_path, text).map_err(|e| Error::io(&config_path, e))?;
    let mut tensors = HashMap::new();
    for pair in pairs {
        tensors.insert(
            format!("{KEY_PREFIX}{}.lora_A.weight", pair.module),
            pair.a.clone(),
        );
        tensors.insert(
            format!("{KEY_PREFIX}{}.lora_B.weight", pair.module),
            pair.b.clone(),
        );
    }
    let weights_path = dir.join(WEIGHTS);
    crate::safetensors_file::save(&tensors, &weights_path)
}
