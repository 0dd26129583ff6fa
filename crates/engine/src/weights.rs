//! Safetensors weights (one file or shards) behind candle's `VarBuilder`, read tensor by tensor
//! (see `safetensors_file`), with errors that name the file and the tensor.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::model_dir::ModelDir;
use crate::safetensors_file::SafetensorsFile;

#[derive(Clone)]
struct WeightFile {
    /// File name as the user sees it in the model folder.
    name: String,
    tensors: std::sync::Arc<SafetensorsFile>,
}

/// All weights of one model, looked up by tensor name across shards. Cloning shares the mappings.
#[derive(Clone)]
pub struct Weights {
    files: Vec<WeightFile>,
    by_name: HashMap<String, usize>,
    /// Merged adapters: added (in f32) to the base tensor of the same name when it is read.
    deltas: std::sync::Arc<HashMap<String, Tensor>>,
}

impl Weights {
    pub fn open(dir: &ModelDir) -> Result<Self> {
        let paths = dir.weight_files()?;
        let mut files = Vec::with_capacity(paths.len());
        let mut by_name = HashMap::new();
        for path in &paths {
            let tensors = open_file(path)?;
            let index = files.len();
            for name in tensors.entries().keys() {
                by_name.insert(name.clone(), index);
            }
            files.push(WeightFile {
                name: display_name(path),
                tensors: std::sync::Arc::new(tensors),
            });
        }
        // The index must not promise tensors its shards lack.
        if let Some(map) = dir.shard_map()? {
            for (tensor, file) in map {
                let found = by_name.get(&tensor).map(|&i| files[i].name.as_str());
                if found != Some(file.as_str()) {
                    return Err(Error::Tensor {
                        file,
                        name: tensor,
                        message: "listed in model.safetensors.index.json but not in this shard"
                            .into(),
                    });
                }
            }
        }
        Ok(Self {
            files,
            by_name,
            deltas: Default::default(),
        })
    }

    /// Merges a peft LoRA adapter folder into these weights.
    pub fn merge_lora(&mut self, adapter_dir: &Path) -> Result<()> {
        let deltas = crate::lora::load_deltas(adapter_dir, &|name| self.contains(name))?;
        let mut merged = (*self.deltas).clone();
        for (name, delta) in deltas {
            let base = self.get_unchecked(&name, DType::F32, &Device::Cpu)?;
            if base.dims() != delta.dims() {
                return Err(Error::Tensor {
                    file: "adapter_model.safetensors".into(),
                    name,
                    message: format!(
                        "B A has shape {:?} but the base weight has {:?}",
                        delta.dims(),
                        base.dims()
                    ),
                });
            }
            merged.insert(name, delta);
        }
        self.deltas = std::sync::Arc::new(merged);
        Ok(())
    }

    /// The floating-point dtype most of the weights are stored in.
    pub fn stored_dtype(&self) -> DType {
        let mut counts: HashMap<DType, usize> = HashMap::new();
        for file in &self.files {
            for entry in file.tensors.entries().values() {
                if let Ok(dtype) = entry.dtype() {
                    if dtype.is_float() {
                        *counts.entry(dtype).or_default() += 1;
                    }
                }
            }
        }
        counts
            .into_iter()
            .max_by_key(|(dtype, n)| (*n, dtype.size_in_bytes()))
            .map(|(d, _)| d)
            .unwrap_or(DType::F32)
    }

    /// Parameters across all files (what the compute format multiplies): floating-point tensors
    /// and saved int8 ones, not the scales beside those.
    pub fn parameters(&self) -> usize {
        let mut count = 0;
        for file in &self.files {
            for (name, entry) in file.tensors.entries() {
                let int8 = entry.dtype_name == "I8";
                let scale = name
                    .strip_suffix(crate::ops::saved_int8::SCALE_SUFFIX)
                    .and_then(|of| file.tensors.entry(of))
                    .is_some_and(|of| of.dtype_name == "I8");
                if int8 || (entry.dtype().is_ok_and(|d| d.is_float()) && !scale) {
                    count += entry.shape.iter().product::<usize>();
                }
            }
        }
        count
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// A tensor's shape, read from the header without loading it.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.header(name)?.0)
    }

    /// A tensor's bytes as stored (no adapter applied), with its safetensors dtype name and shape.
    pub fn raw(&self, name: &str) -> Result<(String, Vec<usize>, Vec<u8>)> {
        let file = self.file_of(name)?;
        file.tensors.raw(name).map_err(|message| Error::Tensor {
            file: file.name.clone(),
            name: name.into(),
            message,
        })
    }

    /// A tensor in the dtype it is stored in, with any merged adapter delta applied.
    pub fn stored(&self, name: &str) -> Result<Tensor> {
        let dtype = self.header(name)?.1;
        Ok(self.get_unchecked(name, dtype, &Device::Cpu)?)
    }

    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// Shape and dtype from the file's header.
    fn header(&self, name: &str) -> Result<(Vec<usize>, DType)> {
        let file = self.file_of(name)?;
        let error = |message: String| Error::Tensor {
            file: file.name.clone(),
            name: name.into(),
            message,
        };
        let entry = file
            .tensors
            .entry(name)
            .ok_or_else(|| error("missing".into()))?;
        let dtype = entry.dtype().map_err(error)?;
        Ok((entry.shape.clone(), dtype))
    }

    fn file_of(&self, name: &str) -> candle_core::Result<&WeightFile> {
        match self.by_name.get(name) {
            Some(&i) => Ok(&self.files[i]),
            None => {
                let files: Vec<&str> = self.files.iter().map(|f| f.name.as_str()).collect();
                Err(candle_core::Error::msg(format!(
                    "{}: tensor `{name}` is missing",
                    files.join(", ")
                )))
            }
        }
    }
}

impl SimpleBackend for Weights {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _init: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, dev)?;
        if tensor.shape() != &shape {
            let file = self.file_of(name)?;
            return Err(candle_core::Error::msg(format!(
                "{}: tensor `{name}` has shape {:?}, expected {:?}",
                file.name,
                tensor.dims(),
                shape.dims()
            )));
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let file = self.file_of(name)?;
        let tensor = file
            .tensors
            .load(name, dev)
            .map_err(|e| candle_core::Error::msg(format!("{}: tensor `{name}`: {e}", file.name)))?;
        match self.deltas.get(name) {
            Some(delta) => (tensor.to_dtype(DType::F32)? + delta.to_device(dev)?)?.to_dtype(dtype),
            None => tensor.to_dtype(dtype),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.contains(name)
    }
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn open_file(path: &Path) -> Result<SafetensorsFile> {
    if !path.is_file() {
        return Err(Error::Safetensors {
            path: path.into(),
            message: "file not found".into(),
        });
    }
    SafetensorsFile::open(path).map_err(|message| Error::Safetensors {
        path: path.into(),
        message,
    })
}
