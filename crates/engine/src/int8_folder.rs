//! `bge-rerank quantize`: a model folder saved with the int8 weights its int8 load computes (the
//! transformer layers' matrices with a scale per output channel, embedding tables with a scale per 32
//! values; see `ops::saved_int8`), so that a server starts without quantizing again and the scores
//! are those of `--dtype int8` on the original folder, bit for bit. Everything else (norms, score
//! heads, a table that doubles as a score head, the tokenizer files) is kept as stored.
//!
//! config.json says what the folder holds (`quantization_config.quant_method`), and such a folder
//! loads as int8 only: `--dtype auto` (the default) and `int8` load it, any other precision is refused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{read_json, Error, Result};
use crate::model_folder::OpenedFolder;
use crate::ops::saved_int8::{self, QuantizedTensor, SCALE_SUFFIX};
use crate::precision::Precision;
use crate::safetensors_file::{save_raw, RawTensor};

/// `quantization_config.quant_method` of a saved int8 folder.
pub const QUANT_METHOD: &str = "bge-rerank-int8";

/// What `save` wrote.
#[derive(Debug, Clone)]
pub struct SavedInt8 {
    pub folder: PathBuf,
    /// Tensors saved as int8, and tensors kept as stored.
    pub quantized: usize,
    pub kept: usize,
    /// Bytes of the weights before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Whether a config.json (parsed) describes a saved int8 folder.
pub fn is_int8_config(config: &serde_json::Value) -> bool {
    config
        .pointer("/quantization_config/quant_method")
        .and_then(|m| m.as_str())
        == Some(QUANT_METHOD)
}

/// Whether the folder of this config.json was saved by `save`.
pub(crate) fn is_saved_int8(config_path: &Path) -> Result<bool> {
    Ok(is_int8_config(&read_json(config_path)?))
}

/// The precision a saved int8 folder loads in: int8 (`auto` included); any other is refused.
pub(crate) fn saved_precision(config_path: &Path, asked: Precision) -> Result<Precision> {
    match asked {
        Precision::Auto | Precision::Int8 => Ok(Precision::Int8),
        other => Err(Error::Config {
            path: config_path.to_path_buf(),
            message: format!(
                "this folder holds int8 weights saved by `bge-rerank quantize` and loads as int8 \
                 only (--dtype auto or int8), not as {other}; quantize the original folder's \
                 weights for another precision"
            ),
        }),
    }
}

/// Loads `model` in int8, recording what the load quantizes, and writes it to `output` as a model
/// folder (refusing a non-empty `output` unless `overwrite`, and never writing over the model).
pub fn save(model: &str, output: &Path, overwrite: bool) -> Result<SavedInt8> {
    let folder = OpenedFolder::open(model, Precision::Int8, None)?;
    let mut config = folder.config_json()?;
    if is_int8_config(&config) {
        return Err(Error::InvalidOption(format!(
            "{} already holds int8 weights saved by bge-rerank quantize",
            folder.dir.root().display()
        )));
    }
    prepare_output(folder.dir.root(), output, overwrite)?;
    let inputs = folder.input_builder(folder.architecture)?;
    let (loaded, quantized) = saved_int8::recording(|| {
        folder.load_family(
            folder.architecture,
            &config,
            folder.var_builder(),
            folder.numerics(),
            &inputs,
        )
    });
    drop(loaded?);
    let tensors = saved_tensors(&folder, quantized)?;
    let saved = SavedInt8 {
        folder: output.to_path_buf(),
        quantized: tensors
            .iter()
            .filter(|t| t.dtype == safetensors::Dtype::I8)
            .count(),
        kept: tensors
            .iter()
            .filter(|t| t.dtype != safetensors::Dtype::I8 && !t.name.ends_with(SCALE_SUFFIX))
            .count(),
        bytes_before: folder
            .dir
            .weight_files()?
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum(),
        bytes_after: tensors.iter().map(|t| t.bytes.len() as u64).sum(),
    };
    copy_side_files(folder.dir.root(), output)?;
    config["quantization_config"] = serde_json::json!({
        "quant_method": QUANT_METHOD,
        "weights": "int8, symmetric, one scale per output channel (<name>_scale)",
        "embeddings": "int8, symmetric, one scale per 32 values (<name>_scale)",
        "activations": "u8 per row with a zero point, quantized at run time",
    });
    let config_path = output.join("config.json");
    let text = serde_json::to_string_pretty(&config).expect("a JSON value serializes");
    std::fs::write(&config_path, text + "\n").map_err(|e| Error::io(&config_path, e))?;
    save_raw(tensors, &output.join("model.safetensors"))?;
    Ok(saved)
}

/// Every tensor of the folder: the recorded ones as int8 plus scales, the others as stored.
fn saved_tensors(folder: &OpenedFolder, quantized: Vec<QuantizedTensor>) -> Result<Vec<RawTensor>> {
    let mut quantized: HashMap<String, QuantizedTensor> =
        quantized.into_iter().map(|t| (t.name.clone(), t)).collect();
    let mut tensors = Vec::new();
    for name in folder.weights.names() {
        if let Some(q) = quantized.remove(name) {
            tensors.push(RawTensor {
                name: format!("{name}{SCALE_SUFFIX}"),
                dtype: safetensors::Dtype::F32,
                shape: vec![q.scales.len()],
                bytes: q.scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            });
            tensors.push(RawTensor {
                name: q.name,
                dtype: safetensors::Dtype::I8,
                shape: q.shape,
                bytes: q.values.iter().map(|&v| v as u8).collect(),
            });
            continue;
        }
        let (dtype, shape, bytes) = folder.weights.raw(name)?;
        let dtype =
            serde_json::from_value(serde_json::Value::String(dtype.clone())).map_err(|_| {
                Error::Tensor {
                    file: "model weights".into(),
                    name: name.into(),
                    message: format!("dtype {dtype} cannot be saved"),
                }
            })?;
        tensors.push(RawTensor {
            name: name.into(),
            dtype,
            shape,
            bytes,
        });
    }
    // The load reads every tensor it quantizes from the checkpoint by name.
    if let Some(name) = quantized.keys().next() {
        return Err(Error::Unsupported(format!(
            "quantized tensor `{name}` has no counterpart in the checkpoint"
        )));
    }
    Ok(tensors)
}

/// Creates `output`, refusing the model's own folder, and a non-empty one unless `overwrite`.
fn prepare_output(model_root: &Path, output: &Path, overwrite: bool) -> Result<()> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(model_root, output) {
        return Err(Error::InvalidOption(format!(
            "--output {} is the model's own folder; choose another",
            output.display()
        )));
    }
    let empty = match std::fs::read_dir(output) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::io(output, e)),
    };
    if !empty && !overwrite {
        return Err(Error::InvalidOption(format!(
            "--output {} is not empty; pass --overwrite to write over it",
            output.display()
        )));
    }
    std::fs::create_dir_all(output).map_err(|e| Error::io(output, e))
}

/// Copies the folder's files other than its weights and config.json (tokenizer files, README...).
fn copy_side_files(model_root: &Path, output: &Path) -> Result<()> {
    let entries = std::fs::read_dir(model_root).map_err(|e| Error::io(model_root, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(model_root, e))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let weights = name.ends_with(".safetensors")
            || name.ends_with(".bin")
            || name.ends_with(".index.json");
        if weights || name == "config.json" || !path.is_file() {
            continue;
        }
        let target = output.join(name);
        std::fs::copy(&path, &target).map_err(|e| Error::io(&target, e))?;
    }
    Ok(())
}
