//! `bge-rerank serve`: the HTTP server.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bge_rerank_engine::{BatchLimits, LoadOptions, Precision};
use bge_rerank_server::{Limits, ModelSpec, ServeConfig};
use clap::Args;

#[derive(Args)]
pub struct ServeArgs {
    /// Model to serve: DIR, HF_ID or NAME=DIR; repeat for several (the first is the default).
    /// With one model, requests may name any model (clients always send one); with several, a
    /// request's `model` must be one of their names.
    #[arg(
        long,
        short,
        required = true,
        env = "BGE_RERANK_MODEL",
        value_delimiter = ','
    )]
    model: Vec<String>,
    /// A served model's own setting, NAME:KEY=VALUE (repeat): dtype, adapter, and the defaults of
    /// requests that leave them out: max_length, query_max_length, prompt, cutoff_layers (e.g.
    /// `m:cutoff_layers=28`; Cohere clients cannot send it). NAME is as --model names it.
    #[arg(long, env = "BGE_RERANK_MODEL_OPTION", value_delimiter = ';')]
    model_option: Vec<String>,
    /// The name of the one served model, as requests and responses give it (default: its
    /// --model NAME= or its folder / hub id).
    #[arg(long, env = "BGE_RERANK_SERVED_MODEL_NAME")]
    served_model_name: Option<String>,
    /// Precision for every model: auto, f32, f16, bf16 or int8.
    #[arg(long, default_value = "auto", env = "BGE_RERANK_DTYPE", value_parser = crate::model_args::parse_precision)]
    dtype: Precision,
    /// A LoRA adapter merged into every (LLM) model.
    #[arg(long, env = "BGE_RERANK_ADAPTER")]
    adapter: Option<std::path::PathBuf>,
    /// Address or host name to listen on (e.g. 0.0.0.0, localhost).
    #[arg(long, default_value = "127.0.0.1", env = "BGE_RERANK_HOST")]
    host: String,
    #[arg(long, default_value_t = 8080, env = "BGE_RERANK_PORT")]
    port: u16,
    /// Also serve /metrics alone on this port (same host), for scrapers kept off the API.
    #[arg(long, env = "BGE_RERANK_METRICS_PORT")]
    metrics_port: Option<u16>,
    /// Real tokens per model batch at most (batches mix pairs of concurrent requests).
    #[arg(long, default_value_t = Limits::default().batch.max_batch_tokens, env = "BGE_RERANK_MAX_BATCH_TOKENS")]
    max_batch_tokens: usize,
    /// Pairs per model batch at most.
    #[arg(long, default_value_t = Limits::default().batch.batch_size, env = "BGE_RERANK_BATCH_SIZE")]
    batch_size: usize,
    /// Scoring requests in flight at most; beyond, 429 with Retry-After.
    #[arg(long, default_value_t = Limits::default().max_concurrent_requests, env = "BGE_RERANK_MAX_CONCURRENT_REQUESTS")]
    max_concurrent_requests: usize,
    /// Documents (or pairs) per request at most (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_documents, env = "BGE_RERANK_MAX_DOCUMENTS")]
    max_documents: usize,
    /// Request body size at most, in bytes (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_body_bytes, env = "BGE_RERANK_MAX_BODY_BYTES")]
    max_body_bytes: usize,
    /// Seconds a request may take (504 beyond).
    #[arg(long, default_value_t = Limits::default().request_timeout.as_secs_f64(), env = "BGE_RERANK_REQUEST_TIMEOUT")]
    request_timeout: f64,
    /// max_length of requests that give none.
    #[arg(long, default_value_t = 512, env = "BGE_RERANK_MAX_LENGTH")]
    max_length: usize,
    /// Require `Authorization: Bearer KEY` on every route but /health and /metrics.
    #[arg(long, env = "BGE_RERANK_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    if args.max_concurrent_requests == 0 || args.max_documents == 0 || args.max_length == 0 {
        anyhow::bail!(
            "--max-concurrent-requests, --max-documents and --max-length must be at least 1"
        );
    }
    if !args.request_timeout.is_finite() || args.request_timeout <= 0.0 {
        anyhow::bail!("--request-timeout must be positive");
    }
    let load = LoadOptions {
        precision: args.dtype,
        adapter: args.adapter.clone(),
        ..Default::default()
    };
    let mut models: Vec<ModelSpec> = args
        .model
        .iter()
        .map(|m| ModelSpec::parse(m, load.clone()))
        .collect();
    for option in &args.model_option {
        apply_model_option(&mut models, option)?;
    }
    match (args.served_model_name, models.as_mut_slice()) {
        (Some(name), [one]) if !name.is_empty() => one.name = name,
        (Some(_), [_]) => anyhow::bail!("--served-model-name is empty"),
        (Some(_), _) => anyhow::bail!(
            "--served-model-name names the one served model; with several, name each as --model NAME=DIR"
        ),
        (None, _) => {}
    }
    let config = ServeConfig {
        models,
        addr: listen_address(&args.host, args.port)?,
        metrics_addr: args
            .metrics_port
            .map(|port| listen_address(&args.host, port))
            .transpose()?,
        limits: Limits {
            batch: BatchLimits {
                batch_size: args.batch_size.max(1),
                max_batch_tokens: args.max_batch_tokens.max(1),
            },
            max_concurrent_requests: args.max_concurrent_requests,
            max_documents: args.max_documents,
            max_body_bytes: args.max_body_bytes,
            request_timeout: Duration::from_secs_f64(args.request_timeout),
            default_max_length: args.max_length,
            fail_batch: None,
        },
        api_key: args.api_key.filter(|k| !k.is_empty()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = bge_rerank_server::start(config)
            .await
            .map_err(anyhow::Error::msg)?;
        crate::release_load_memory();
        // Printed (not only logged) so scripts can wait for it.
        if let Some(metrics) = server.metrics_addr {
            eprintln!("bge-rerank metrics on http://{metrics}/metrics");
        }
        eprintln!("bge-rerank listening on http://{}", server.addr);
        shutdown_signal().await;
        eprintln!("bge-rerank: shutting down, finishing accepted requests");
        server.shutdown().await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// `--model-option NAME:KEY=VALUE` applied to the model it names.
fn apply_model_option(models: &mut [ModelSpec], option: &str) -> anyhow::Result<()> {
    let bad = |why: &str| anyhow::anyhow!("--model-option {option}: {why}");
    let (name, setting) = option
        .split_once(':')
        .ok_or_else(|| bad("expected NAME:KEY=VALUE"))?;
    let (key, value) = setting
        .split_once('=')
        .ok_or_else(|| bad("expected NAME:KEY=VALUE"))?;
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    let known = names.join(", ");
    let spec = models.iter_mut().find(|m| m.name == name).ok_or_else(|| {
        bad(&format!(
            "no served model is named `{name}` (served: {known})"
        ))
    })?;
    let number = |v: &str| -> anyhow::Result<usize> {
        match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad("expected a positive whole number")),
        }
    };
    match key {
        "dtype" => {
            spec.load.precision = crate::model_args::parse_precision(value).map_err(|e| bad(&e))?
        }
        "adapter" => spec.load.adapter = Some(value.into()),
        "max_length" => spec.defaults.max_length = Some(number(value)?),
        "query_max_length" => spec.defaults.query_max_length = Some(number(value)?),
        "prompt" => spec.defaults.prompt = Some(value.to_string()),
        "cutoff_layers" => {
            let layers = value
                .split(',')
                .map(|l| l.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad("expected layer numbers, e.g. 28 or 24,28"))?;
            spec.defaults.cutoff_layers = Some(layers);
        }
        other => {
            return Err(bad(&format!(
                "unknown key `{other}` (dtype, adapter, max_length, query_max_length, prompt, \
                 cutoff_layers)"
            )))
        }
    }
    Ok(())
}

/// `--host` and `--port` as a socket address: an IP address, or a host name resolved by the system
/// (its first address; `localhost` is usually 127.0.0.1 or ::1).
fn listen_address(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let resolved = (host, port)
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("--host {host}: cannot resolve it: {e}"))?
        .next();
    resolved.ok_or_else(|| anyhow::anyhow!("--host {host}: it resolves to no address"))
}
