//! On-disk caches: reranker scores per (model + options, query, document), appended as they are
//! computed so an interrupted evaluation loses nothing it already scored.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::error::{EvalError, Result};

/// A stable 64-bit hash of a text, for cache file names.
pub fn fnv64(text: &str) -> u64 {
    bge_rerank_engine::fingerprint::Fnv64::of(text)
}

/// The default cache folder: `$BGE_RERANK_CACHE`, else `$XDG_CACHE_HOME/bge-rerank`, else
/// `~/.cache/bge-rerank`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BGE_RERANK_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("bge-rerank");
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/bge-rerank"))
        .unwrap_or_else(|| PathBuf::from(".bge-rerank-cache"))
}

/// Raw scores of one model configuration.
pub struct ScoreCache {
    path: PathBuf,
    scores: HashMap<(String, String), f64>,
    file: std::fs::File,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    q: String,
    d: String,
    s: f64,
}

impl ScoreCache {
    /// Opens (or starts) the cache of the configuration `key` describes.
    pub fn open(cache_dir: &Path, key: &str) -> Result<Self> {
        let dir = cache_dir.join("scores");
        std::fs::create_dir_all(&dir).map_err(|e| EvalError::io(&dir, e))?;
        let path = dir.join(format!("{:016x}.jsonl", fnv64(key)));
        let mut scores = HashMap::new();
        if path.is_file() {
            let file = std::fs::File::open(&path).map_err(|e| EvalError::io(&path, e))?;
            for line in BufReader::new(file).lines() {
                let line = line.map_err(|e| EvalError::io(&path, e))?;
                // A line cut short by an interruption is simply not cached.
                if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
                    scores.insert((entry.q, entry.d), entry.s);
                }
            }
        } else {
            std::fs::write(&path, format!("{}\n", serde_json::json!({ "key": key })))
                .map_err(|e| EvalError::io(&path, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| EvalError::io(&path, e))?;
        Ok(Self { path, scores, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, query: &str, doc: &str) -> Option<f64> {
        self.scores
            .get(&(query.to_string(), doc.to_string()))
            .copied()
    }

    /// Records scores and writes them through to disk.
    pub fn insert(&mut self, entries: Vec<(String, String, f64)>) -> Result<()> {
        let mut text = String::new();
        for (q, d, s) in entries {
            text.push_str(
                &serde_json::to_string(&Entry {
                    q: q.clone(),
                    d: d.clone(),
                    s,
                })
                .unwrap_or_default(),
            );
            text.push('\n');
            self.scores.insert((q, d), s);
        }
        self.file
            .write_all(text.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| EvalError::io(&self.path, e))
    }
}
