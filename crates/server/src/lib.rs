//! bge-rerank's HTTP server: one process serves one or more rerankers over the APIs their users
//! already call (text-embeddings-inference `/rerank`, Cohere/Jina `/v1|v2/rerank`, FlagEmbedding-style
//! `/score`). Handlers stay on the async runtime; each model scores on its own worker thread, which
//! batches pairs across concurrent requests.

pub mod api;
pub mod error;
pub mod load_test;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod scheduler;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bge_rerank_engine::{LoadOptions, Reranker};
use tokio::sync::watch;

pub use crate::api::Knobs;
use crate::error::ApiError;
use crate::metrics::{RouteLabel, RouteStatus};
pub use crate::state::Limits;
use crate::state::{AppState, ServedModel};

/// One model to serve: its name in requests, and how to load it.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub model: String,
    pub load: LoadOptions,
    /// Knobs for requests that leave them out (a Cohere client cannot send `cutoff_layers`).
    pub defaults: Knobs,
}

impl ModelSpec {
    /// `--model NAME=DIR` or `--model DIR` (named after the folder or hub id).
    pub fn parse(arg: &str, load: LoadOptions) -> Self {
        match arg.split_once('=') {
            Some((name, model)) if !name.is_empty() && !model.is_empty() => Self {
                name: name.to_string(),
                model: model.to_string(),
                load,
                defaults: Knobs::default(),
            },
            _ => Self {
                name: arg.trim_end_matches('/').to_string(),
                model: arg.to_string(),
                load,
                defaults: Knobs::default(),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub models: Vec<ModelSpec>,
    pub addr: SocketAddr,
    /// A second address that serves `/metrics` alone (no API key), for scrapers kept off the API.
    pub metrics_addr: Option<SocketAddr>,
    pub limits: Limits,
    pub api_key: Option<String>,
}

/// The routes, with auth, metrics, body-size and concurrency limits.
pub fn router(state: Arc<AppState>) -> Router {
    let scoring = Router::new()
        .route("/rerank", post(routes::tei_rerank))
        .route("/v1/rerank", post(routes::cohere_rerank))
        .route("/v2/rerank", post(routes::cohere_rerank))
        .route("/score", post(routes::score))
        .layer(middleware::from_fn_with_state(state.clone(), admit));
    Router::new()
        .merge(scoring)
        .route("/health", get(routes::health))
        .route("/info", get(routes::info))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi))
        .route("/docs", get(routes::docs))
        .route("/tokenize", post(routes::tokenize))
        .route("/decode", post(routes::decode))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Errors the framework answers itself (a body over the size limit, a wrong method or content
/// type) come as plain text: they are given the JSON shape of every other error, their text kept
/// as the message.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match text.is_empty() {
        true => status.canonical_reason().unwrap_or("error").to_string(),
        false => text,
    };
    ApiError::from_status(status, message).into_response()
}

/// Bounded admission: beyond `max_concurrent_requests` scoring requests in flight, answer 429.
async fn admit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if state.is_draining() {
        return refuse(request, &state, ApiError::unavailable("shutting down")).await;
    }
    match state.permits.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            refuse(
                request,
                &state,
                ApiError::overloaded(state.limits.max_concurrent_requests),
            )
            .await
        }
    }
}

/// Answers a request without serving it. Its body is read first (up to the size limit), so the
/// client is not cut off mid-upload: it gets the error, not a broken connection.
async fn refuse(request: Request, state: &AppState, error: ApiError) -> Response {
    let _ = axum::body::to_bytes(request.into_body(), state.limits.max_body_bytes).await;
    error.into_response()
}

async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        // Probes and metric scrapers carry no key.
        if !matches!(request.uri().path(), "/health" | "/metrics") {
            let given = request
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(key.as_str()) {
                return refuse(request, &state, ApiError::unauthorized()).await;
            }
        }
    }
    next.run(request).await
}

/// Counts requests by route and status, and times them.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let start = Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
    // One access-log line per request.
    match response.extensions().get::<routes::RequestCost>() {
        Some(cost) => tracing::info!(
            %method, route = %route, status, ms = elapsed_ms,
            pairs = cost.pairs, tokens = cost.tokens,
            queue_ms = cost.queue.as_secs_f64() * 1000.0,
            inference_ms = cost.inference.as_secs_f64() * 1000.0,
            "request"
        ),
        None => tracing::info!(%method, route = %route, status, ms = elapsed_ms, "request"),
    }
    state
        .metrics
        .requests
        .get_or_create(&RouteStatus {
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    state
        .metrics
        .request_seconds
        .get_or_create(&RouteLabel { route })
        .observe(start.elapsed().as_secs_f64());
    response
}

/// A server that is listening and has its models loaded.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where `/metrics` is served alone, if asked for.
    pub metrics_addr: Option<SocketAddr>,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// Stops accepting, finishes every accepted request, then returns.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.state.start_draining();
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))?;
        }
        Ok(())
    }
}

/// Serves `app` on `listener` until `stop` turns true, then finishes the requests in flight.
fn serve_until(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            })
            .await
    })
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Binds, starts answering (`/health` is 503 until the models are loaded), loads the models on a
/// blocking thread, and returns once they are ready.
pub async fn start(config: ServeConfig) -> Result<RunningServer, String> {
    if config.models.is_empty() {
        return Err("no model to serve".into());
    }
    let listener = bind(config.addr).await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let metrics_listener = match config.metrics_addr {
        Some(metrics_addr) => Some(bind(metrics_addr).await?),
        None => None,
    };
    let state = Arc::new(AppState::new(config.limits.clone(), config.api_key.clone()));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = vec![serve_until(
        listener,
        router(state.clone()),
        stopped.clone(),
    )];
    let mut metrics_addr = None;
    if let Some(listener) = metrics_listener {
        metrics_addr = Some(listener.local_addr().map_err(|e| e.to_string())?);
        let metrics_only = Router::new()
            .route("/metrics", get(routes::metrics))
            .with_state(state.clone());
        tasks.push(serve_until(listener, metrics_only, stopped));
    }
    let loading = state.clone();
    let specs = config.models.clone();
    let models = tokio::task::spawn_blocking(move || load_models(&specs, &loading))
        .await
        .map_err(|e| e.to_string())?;
    match models {
        Ok(models) => state.set_models(models),
        Err(e) => {
            let _ = stop.send(true);
            for task in tasks {
                let _ = task.await;
            }
            return Err(e);
        }
    }
    Ok(RunningServer {
        addr,
        metrics_addr,
        state,
        stop,
        tasks,
    })
}

fn load_models(specs: &[ModelSpec], state: &AppState) -> Result<Vec<ServedModel>, String> {
    let mut models = Vec::with_capacity(specs.len());
    for spec in specs {
        if models.iter().any(|m: &ServedModel| m.name == spec.name) {
            return Err(format!("two models are named `{}`", spec.name));
        }
        // The engine's error names the path; a model served under another name gets that too.
        let reranker =
            Reranker::load(&spec.model, &spec.load).map_err(|e| match spec.name == spec.model {
                true => e.to_string(),
                false => format!("model `{}`: {e}", spec.name),
            })?;
        tracing::info!(
            "model `{}`: {} ({}), {}",
            spec.name,
            reranker.model_dir().display(),
            reranker.architecture().name(),
            reranker.precision().explanation
        );
        // A default the model cannot honour would fail every request that relies on it.
        if let Some(layers) = &spec.defaults.cutoff_layers {
            reranker
                .resolve_layers(Some(layers))
                .map_err(|e| format!("model `{}`: cutoff_layers option: {e}", spec.name))?;
        }
        let reranker = Arc::new(reranker);
        models.push(ServedModel {
            scheduler: scheduler::Scheduler::start(
                &spec.name,
                reranker.clone(),
                &state.limits,
                state.metrics.clone(),
            ),
            name: spec.name.clone(),
            reranker,
            defaults: spec.defaults.clone(),
        });
    }
    Ok(models)
}
