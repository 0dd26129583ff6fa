//! Finding a model's files: a local Hugging Face model folder, or a model id resolved through the
//! local Hugging Face cache (downloaded into it when the network allows).

use std::path::{Path, PathBuf};

use crate::error::{read_json, Error, Result};

const CONFIG: &str = "config.json";
const TOKENIZER: &str = "tokenizer.json";
const SINGLE_WEIGHTS: &str = "model.safetensors";
const SHARD_INDEX: &str = "model.safetensors.index.json";

/// A model folder laid out as on the Hugging Face Hub.
#[derive(Debug, Clone)]
pub struct ModelDir {
    root: PathBuf,
}

impl ModelDir {
    /// `spec` is a folder, or a Hub id such as `BAAI/bge-reranker-v2-m3`.
    pub fn resolve(spec: &str) -> Result<Self> {
        Self::resolve_in(spec, None)
    }

    /// As `resolve`, with Hub ids looked up (and downloaded) in `hub_cache` when given
    /// (transformers' `cache_dir`), else in the cache the environment names.
    pub fn resolve_in(spec: &str, hub_cache: Option<&Path>) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(Self {
                root: path.to_path_buf(),
            });
        }
        if path.exists() {
            return Err(Error::ModelNotFound {
                model: spec.into(),
                message: "this is a file; give the model folder that holds config.json".into(),
            });
        }
        if !looks_like_hub_id(spec) {
            return Err(Error::ModelNotFound {
                model: spec.into(),
                message: "no such folder (and not a Hugging Face id of the form org/name)".into(),
            });
        }
        let cache = match hub_cache {
            Some(dir) => hf_hub::Cache::new(dir.to_path_buf()),
            None => env_hub_cache(),
        };
        resolve_hub_id(spec, cache, offline())
    }

    /// Resolves a Hub id in a given cache folder (the `hub` folder: `models--org--name/...`),
    /// without downloading.
    pub fn from_hub_cache(id: &str, cache_root: &Path) -> Result<Self> {
        resolve_hub_id(id, hf_hub::Cache::new(cache_root.to_path_buf()), true)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG)
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.root.join(TOKENIZER)
    }

    /// The safetensors files holding the weights: one file, or the shards an index names.
    pub fn weight_files(&self) -> Result<Vec<PathBuf>> {
        let single = self.root.join(SINGLE_WEIGHTS);
        if single.is_file() {
            return Ok(vec![single]);
        }
        let index_path = self.root.join(SHARD_INDEX);
        if index_path.is_file() {
            let index: ShardIndex = read_json(&index_path)?;
            let mut files: Vec<&String> = index.weight_map.values().collect();
            files.sort();
            files.dedup();
            if files.is_empty() {
                return Err(Error::Config {
                    path: index_path,
                    message: "weight_map is empty".into(),
                });
            }
            return Ok(files.into_iter().map(|f| self.root.join(f)).collect());
        }
        Err(Error::Config {
            path: self.root.clone(),
            message: format!(
                "no weights: expected {SINGLE_WEIGHTS}, or {SHARD_INDEX} with its shards \
                 (pytorch_model.bin is not supported: convert it to safetensors)"
            ),
        })
    }

    /// The shard index's tensor -> file map, when the weights are sharded.
    pub fn shard_map(&self) -> Result<Option<std::collections::BTreeMap<String, String>>> {
        let index_path = self.root.join(SHARD_INDEX);
        if self.root.join(SINGLE_WEIGHTS).is_file() || !index_path.is_file() {
            return Ok(None);
        }
        let index: ShardIndex = read_json(&index_path)?;
        Ok(Some(index.weight_map))
    }
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

fn looks_like_hub_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// The Hub cache in use: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
fn env_hub_cache() -> hf_hub::Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) if !dir.is_empty() => hf_hub::Cache::new(PathBuf::from(dir)),
        _ => hf_hub::Cache::from_env(),
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn resolve_hub_id(id: &str, cache: hf_hub::Cache, offline: bool) -> Result<ModelDir> {
    let repo = cache.model(id.to_string());
    if let Some(config) = repo.get(CONFIG) {
        let root = config.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = ModelDir { root };
        // A snapshot is usable only once its tokenizer and weights are there too.
        if dir.tokenizer_path().is_file() && dir.weight_files().is_ok() {
            return Ok(dir);
        }
    }
    let cache_path = cache.path().display().to_string();
    if offline {
        return Err(Error::ModelNotFound {
            model: id.into(),
            message: format!(
                "not in the Hugging Face cache at {cache_path} (offline: not downloading)"
            ),
        });
    }
    download(id, cache).map_err(|e| Error::ModelNotFound {
        model: id.into(),
        message: format!(
            "not in the Hugging Face cache at {cache_path}, and downloading it failed: {e}"
        ),
    })
}

fn download(id: &str, cache: hf_hub::Cache) -> std::result::Result<ModelDir, String> {
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache)
        .with_progress(true)
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.model(id.to_string());
    let config = repo.get(CONFIG).map_err(|e| e.to_string())?;
    repo.get(TOKENIZER).map_err(|e| e.to_string())?;
    if repo.get(SINGLE_WEIGHTS).is_err() {
        let index_path = repo.get(SHARD_INDEX).map_err(|e| e.to_string())?;
        let index: ShardIndex = read_json(&index_path).map_err(|e| e.to_string())?;
        let mut shards: Vec<&String> = index.weight_map.values().collect();
        shards.sort();
        shards.dedup();
        for shard in shards {
            repo.get(shard).map_err(|e| e.to_string())?;
        }
    }
    // Optional files some families read; absence is fine.
    for optional in ["tokenizer_config.json", "special_tokens_map.json"] {
        let _ = repo.get(optional);
    }
    let root = config.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(ModelDir { root })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_recognised() {
        assert!(looks_like_hub_id("BAAI/bge-reranker-v2-m3"));
        assert!(!looks_like_hub_id("some/deep/path"));
        assert!(!looks_like_hub_id("plainname"));
        assert!(!looks_like_hub_id("a b/c"));
    }
}
