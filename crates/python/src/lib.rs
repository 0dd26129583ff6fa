//! `bge_rerank._native`: the engine as a Python extension module. The Python package
//! (`python/bge_rerank`) holds FlagEmbedding's argument conventions; this module holds only what
//! crosses into Rust: load a model, score lists of queries and passages with the GIL released (other
//! Python threads run meanwhile), stopping between batches when Python has a signal to raise
//! (Ctrl-C).
//!
//! Memory: as the CLI, the module keeps freed memory in the heap (glibc's mmap threshold pinned at
//! 32 MB: compute_score on bge-reranker-base int8 took 2.25 s instead of 2.00 s without it, every
//! large activation page-faulted afresh). It hands it back to the kernel after a load, and after a
//! scoring call that leaves more than `KEEP_FREE` of it, so that the Python process does not hold
//! a large call's peak.

use std::path::PathBuf;
use std::sync::Mutex;

use bge_rerank_engine::memory;
use bge_rerank_engine::ops::cpu::MatmulKernel;
use bge_rerank_engine::{
    Architecture, BatchLimits, Error, InputOptions, LoadOptions, ModelDir, Reranker, ScoreOptions,
};
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// Freed memory kept for the next scoring call: a base-sized model's working set at the default
/// batch (2048 tokens) stays under it.
const KEEP_FREE: usize = 256 << 20;

/// A loaded reranker (any of the three families).
#[pyclass(frozen, name = "Engine", module = "bge_rerank._native")]
struct Engine {
    reranker: Reranker,
}

#[pymethods]
impl Engine {
    /// Loads a model folder or a Hugging Face id (resolved in `cache_dir`, else the environment's
    /// Hugging Face cache). `dtype`: auto, f32, f16, bf16 or int8; `adapter`: a peft LoRA folder
    /// merged at load (LLM rerankers); `kernel`: force a matrix kernel (candle, avx512, amx).
    #[new]
    #[pyo3(signature = (model, *, dtype = "auto", adapter = None, cache_dir = None, kernel = None))]
    fn new(
        py: Python<'_>,
        model: &str,
        dtype: &str,
        adapter: Option<PathBuf>,
        cache_dir: Option<PathBuf>,
        kernel: Option<&str>,
    ) -> PyResult<Self> {
        let options = LoadOptions {
            precision: dtype.parse().map_err(to_py_err)?,
            adapter,
            kernel: kernel
                .map(MatmulKernel::from_name)
                .transpose()
                .map_err(to_py_err)?,
            hub_cache: cache_dir,
        };
        let reranker = py
            .detach(|| {
                let loaded = Reranker::load(model, &options);
                // A load leaves transient f32 copies of every weight freed in the heap.
                memory::release_free_memory();
                loaded
            })
            .map_err(to_py_err)?;
        Ok(Self { reranker })
    }

    /// Scores of `queries[i]` with `passages[i]`, in order: for each pair one score per answering
    /// layer (one, except for a layerwise model asked for several). Runs without the GIL.
    #[pyo3(signature = (
        queries, passages, *, max_length = 512, query_max_length = None,
        passage_max_length = None, prompt = None, batch_size = 128, max_batch_tokens = 2048,
        normalize = false, cutoff_layers = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn score(
        &self,
        py: Python<'_>,
        queries: Vec<String>,
        passages: Vec<String>,
        max_length: usize,
        query_max_length: Option<usize>,
        passage_max_length: Option<usize>,
        prompt: Option<String>,
        batch_size: usize,
        max_batch_tokens: usize,
        normalize: bool,
        cutoff_layers: Option<Vec<usize>>,
    ) -> PyResult<Vec<Vec<f64>>> {
        if queries.len() != passages.len() {
            return Err(PyValueError::new_err(format!(
                "{} queries but {} passages: give one passage per query",
                queries.len(),
                passages.len()
            )));
        }
        if batch_size == 0 || max_batch_tokens == 0 {
            return Err(PyValueError::new_err(
                "batch_size and max_batch_tokens must be at least 1",
            ));
        }
        let options = ScoreOptions {
            input: InputOptions {
                max_length,
                query_max_length,
                prompt,
                passage_max_length,
            },
            batch: BatchLimits {
                batch_size,
                max_batch_tokens,
            },
            normalize,
            cutoff_layers,
        };
        let pairs: Vec<(String, String)> = queries.into_iter().zip(passages).collect();
        // The signal's own exception (KeyboardInterrupt) is what Python should see, not ours.
        let signal: Mutex<Option<PyErr>> = Mutex::new(None);
        let scores = py.detach(|| {
            let scores = self.reranker.compute_scores(&pairs, &options, &|_| {
                Python::attach(|py| py.check_signals()).map_err(|raised| {
                    let message = raised.to_string();
                    *signal.lock().unwrap_or_else(|e| e.into_inner()) = Some(raised);
                    Error::Interrupted(message)
                })
            });
            memory::release_free_memory_above(KEEP_FREE);
            scores
        });
        match (
            scores,
            signal.into_inner().unwrap_or_else(|e| e.into_inner()),
        ) {
            (Err(_), Some(raised)) => Err(raised),
            (scores, _) => scores.map_err(to_py_err),
        }
    }

    /// The layers that answer for `cutoff_layers` (sorted, checked); empty for one-score families.
    #[pyo3(signature = (cutoff_layers = None))]
    fn resolve_layers(&self, cutoff_layers: Option<Vec<usize>>) -> PyResult<Vec<usize>> {
        self.reranker
            .resolve_layers(cutoff_layers.as_deref())
            .map_err(to_py_err)
    }

    /// config.json's architecture, e.g. `XLMRobertaForSequenceClassification`.
    #[getter]
    fn architecture(&self) -> &'static str {
        self.reranker.architecture().name()
    }

    /// What the scores are computed as: "f32", "bf16", "f16" or "int8".
    #[getter]
    fn dtype(&self) -> &'static str {
        self.reranker.precision().compute
    }

    /// How the precision was chosen and what it computes, in words.
    #[getter]
    fn precision(&self) -> String {
        self.reranker.precision().explanation.clone()
    }

    #[getter]
    fn kernel(&self) -> &'static str {
        self.reranker.precision().kernel().name()
    }

    #[getter]
    fn model_dir(&self) -> PathBuf {
        self.reranker.model_dir().to_path_buf()
    }

    /// Changes whenever a file the scores depend on changes (cache keys).
    #[getter]
    fn fingerprint(&self) -> &str {
        self.reranker.fingerprint()
    }

    fn __repr__(&self) -> String {
        format!(
            "Engine(model={:?}, architecture={}, dtype={}, kernel={})",
            self.reranker.model_dir().display().to_string(),
            self.architecture(),
            self.dtype(),
            self.kernel()
        )
    }
}

impl Drop for Engine {
    /// The model's smaller weights were freed into the heap, which keeps freed memory: give it back.
    fn drop(&mut self) {
        memory::release_free_memory();
    }
}

/// The architecture named in a model's config.json (folder or Hugging Face id), without loading
/// its weights.
#[pyfunction]
#[pyo3(signature = (model, cache_dir = None))]
fn architecture(model: &str, cache_dir: Option<PathBuf>) -> PyResult<&'static str> {
    let dir = ModelDir::resolve_in(model, cache_dir.as_deref()).map_err(to_py_err)?;
    let architecture = Architecture::from_config_file(&dir.config_path()).map_err(to_py_err)?;
    Ok(architecture.name())
}

/// Indices of `scores`, best first; equal scores keep their input order (the engine's ranking rule,
/// shared with the CLI and the server).
#[pyfunction]
fn rank(scores: Vec<f64>) -> Vec<usize> {
    bge_rerank_engine::ranking::rank(&scores)
}

/// The engine's errors as the Python exceptions users catch: a missing model or file is
/// `FileNotFoundError`, a failed computation `RuntimeError`, everything the caller can fix (input,
/// options, malformed model files) `ValueError`; the message is the engine's.
fn to_py_err(error: Error) -> PyErr {
    let message = error.to_string();
    match error {
        Error::ModelNotFound { .. } => PyFileNotFoundError::new_err(message),
        Error::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(message)
        }
        Error::Compute(_) | Error::Io { .. } | Error::Interrupted(_) => {
            PyRuntimeError::new_err(message)
        }
        _ => PyValueError::new_err(message),
    }
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    memory::keep_freed_memory();
    module.add_class::<Engine>()?;
    module.add_function(wrap_pyfunction!(architecture, module)?)?;
    module.add_function(wrap_pyfunction!(rank, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
