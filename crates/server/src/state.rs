//! What every handler shares: the models (once loaded), the limits, the metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bge_rerank_engine::{BatchLimits, Reranker};
use tokio::sync::Semaphore;

use crate::api::Knobs;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;

/// Bounds on everything a client can make the server hold.
#[derive(Debug, Clone)]
pub struct Limits {
    pub batch: BatchLimits,
    pub max_concurrent_requests: usize,
    pub max_documents: usize,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// max_length when a request gives none.
    pub default_max_length: usize,
    /// Tests only: the n-th model batch (counted from 1, per model) panics, to show that a failure
    /// fails that batch's requests alone. Never set by the CLI.
    #[doc(hidden)]
    pub fail_batch: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Batches of 512 tokens, not the CLI's 2048: a request that arrives mid-batch waits
            // for the batch in progress, and at 512 tokens 1-document requests arriving every
            // 100 ms beside back-to-back 100-document ones kept a p50 of 2.4x their idle latency
            // (8.7x at 2048), with the large requests no slower (docs/results/queue-2026-12-02).
            batch: BatchLimits {
                max_batch_tokens: 512,
                ..BatchLimits::default()
            },
            max_concurrent_requests: 128,
            max_documents: 1000,
            max_body_bytes: 10 * 1024 * 1024,
            request_timeout: Duration::from_secs(120),
            default_max_length: 512,
            fail_batch: None,
        }
    }
}

impl Limits {
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "max_batch_tokens": self.batch.max_batch_tokens,
            "max_batch_size": self.batch.batch_size,
            "max_concurrent_requests": self.max_concurrent_requests,
            "max_documents": self.max_documents,
            "max_body_bytes": self.max_body_bytes,
            "request_timeout_s": self.request_timeout.as_secs_f64(),
            "default_max_length": self.default_max_length,
        })
    }
}

/// One loaded model and its worker.
pub struct ServedModel {
    pub name: String,
    pub reranker: Arc<Reranker>,
    pub scheduler: Scheduler,
    /// What a request that leaves a knob out gets (`--model-option`).
    pub defaults: Knobs,
}

impl ServedModel {
    pub fn describe(&self) -> serde_json::Value {
        let r = &self.reranker;
        serde_json::json!({
            "name": self.name,
            "path": r.model_dir().display().to_string(),
            "architecture": r.architecture().name(),
            "dtype": r.precision().compute,
            "precision": r.precision().explanation,
            "kernel": r.precision().kernel().name(),
            "cutoff_layers": r
                .resolve_layers(self.defaults.cutoff_layers.as_deref())
                .ok()
                .filter(|l| !l.is_empty()),
            "defaults": {
                "max_length": self.defaults.max_length,
                "query_max_length": self.defaults.query_max_length,
                "prompt": self.defaults.prompt,
            },
        })
    }
}

pub struct AppState {
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub permits: Arc<Semaphore>,
    pub api_key: Option<String>,
    models: OnceLock<Vec<ServedModel>>,
    draining: AtomicBool,
}

impl AppState {
    pub fn new(limits: Limits, api_key: Option<String>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            limits,
            metrics: Arc::new(Metrics::default()),
            api_key,
            models: OnceLock::new(),
            draining: AtomicBool::new(false),
        }
    }

    pub fn set_models(&self, models: Vec<ServedModel>) {
        let _ = self.models.set(models);
    }

    pub fn models(&self) -> Result<&[ServedModel], ApiError> {
        self.models
            .get()
            .map(Vec::as_slice)
            .ok_or_else(|| ApiError::unavailable("loading the model"))
    }

    /// The model a request names. With one model served, the name is informational, as TEI treats
    /// it: Cohere and LangChain clients always send one (`rerank-v3.5` by default) and are answered
    /// with the served name. With several, it must name one (else 404 listing them); none means
    /// the first.
    pub fn model(&self, name: Option<&str>) -> Result<&ServedModel, ApiError> {
        let models = self.models()?;
        match (name, models) {
            (None, _) | (Some(_), [_]) => Ok(&models[0]),
            (Some(name), _) => models.iter().find(|m| m.name == name).ok_or_else(|| {
                let known: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
                ApiError::not_found(format!(
                    "unknown model `{name}`; served: {}",
                    known.join(", ")
                ))
            }),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.models.get().is_some() && !self.is_draining()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}
