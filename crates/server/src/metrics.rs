//! Prometheus metrics: requests by route and status, latencies, batches, queue depth, truncation.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

type HistogramFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteStatus, Counter>,
    pub request_seconds: HistogramFamily,
    pub queue_seconds: Histogram,
    pub batch_pairs: Histogram,
    pub batch_tokens: Histogram,
    pub queue_depth: Gauge,
    pub pairs_truncated: Counter,
    pub pairs_scored: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("bge_rerank");
        let requests = Family::<RouteStatus, Counter>::default();
        let request_seconds: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let queue_seconds = latency_histogram();
        let batch_pairs = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        let batch_tokens = Histogram::new(exponential_buckets(64.0, 2.0, 12));
        let queue_depth = Gauge::default();
        let pairs_truncated = Counter::default();
        let pairs_scored = Counter::default();
        registry.register(
            "requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Request latency by route",
            request_seconds.clone(),
        );
        registry.register(
            "queue_duration_seconds",
            "Time a request waited before its first batch ran",
            queue_seconds.clone(),
        );
        registry.register("batch_pairs", "Pairs per model batch", batch_pairs.clone());
        registry.register(
            "batch_tokens",
            "Real tokens per model batch",
            batch_tokens.clone(),
        );
        registry.register(
            "queue_depth",
            "Pairs waiting to be scored",
            queue_depth.clone(),
        );
        registry.register(
            "pairs_truncated",
            "Pairs whose query or passage was cut to the length limits",
            pairs_truncated.clone(),
        );
        registry.register("pairs_scored", "Pairs scored", pairs_scored.clone());
        Self {
            registry,
            requests,
            request_seconds,
            queue_seconds,
            batch_pairs,
            batch_tokens,
            queue_depth,
            pairs_truncated,
            pairs_scored,
        }
    }
}

/// The content type of `Metrics::render`: Prometheus' text format, which every scraper reads.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Metrics {
    /// The metrics in Prometheus' text format (0.0.4).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        openmetrics_to_prometheus(&text)
    }
}

/// prometheus_client writes OpenMetrics, which names a counter's family without the `_total` its
/// samples carry and ends with `# EOF`; Prometheus' text format names the family as its samples
/// (else its parser types them `unknown`) and has no end marker.
fn openmetrics_to_prometheus(text: &str) -> String {
    let mut counters = Vec::new();
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.push(name.to_string());
        }
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .iter()
                .any(|c| c == name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}
