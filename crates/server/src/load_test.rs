//! A load-test client: sends one request body to a server from many concurrent clients and reports
//! throughput and latency percentiles (`bge-rerank bench --url`).

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LoadTest {
    /// Full URL of the route, e.g. http://127.0.0.1:8080/rerank.
    pub url: String,
    pub body: String,
    pub concurrency: usize,
    pub requests: usize,
    pub api_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LoadReport {
    pub requests: usize,
    pub ok: usize,
    pub failed: usize,
    /// Non-2xx statuses seen, with counts (0: no response at all).
    pub statuses: Vec<(u16, usize)>,
    pub seconds: f64,
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// The q-quantile of successful requests' latency (nearest rank).
    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1]
    }
}

impl LoadReport {
    /// "3 of 10 requests failed (status 422: 2, no response: 1)", or `None` when all succeeded.
    pub fn failure_summary(&self) -> Option<String> {
        if self.failed == 0 {
            return None;
        }
        let by_status: Vec<String> = (self.statuses.iter())
            .map(|(status, count)| match status {
                0 => format!("no response: {count}"),
                s => format!("status {s}: {count}"),
            })
            .collect();
        Some(format!(
            "{} of {} requests failed ({})",
            self.failed,
            self.requests,
            by_status.join(", ")
        ))
    }
}

/// The failures first (a run with failed requests measured something else than serving), then
/// throughput and latency.
impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(failures) = self.failure_summary() {
            writeln!(f, "FAILED       {failures}")?;
        }
        writeln!(
            f,
            "requests     {} ({} ok, {} failed) in {:.2} s",
            self.requests, self.ok, self.failed, self.seconds
        )?;
        writeln!(
            f,
            "throughput   {:.2} requests/s",
            self.requests_per_second()
        )?;
        write!(
            f,
            "latency      p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
            self.percentile(0.50).as_secs_f64() * 1e3,
            self.percentile(0.95).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3
        )
    }
}

pub async fn run(test: LoadTest) -> Result<LoadReport, String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(test.concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..test.concurrency.max(1) {
        let (client, test, next) = (client.clone(), test.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut results = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < test.requests {
                let sent = Instant::now();
                let mut request = client
                    .post(&test.url)
                    .header("content-type", "application/json")
                    .body(test.body.clone());
                if let Some(key) = &test.api_key {
                    request = request.bearer_auth(key);
                }
                let status = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let _ = response.bytes().await;
                        status
                    }
                    Err(_) => 0,
                };
                results.push((status, sent.elapsed()));
            }
            results
        }));
    }
    let mut report = LoadReport {
        requests: 0,
        ok: 0,
        failed: 0,
        statuses: Vec::new(),
        seconds: 0.0,
        latencies: Vec::new(),
    };
    for worker in workers {
        for (status, latency) in worker.await.map_err(|e| e.to_string())? {
            report.requests += 1;
            if (200..300).contains(&status) {
                report.ok += 1;
                report.latencies.push(latency);
            } else {
                report.failed += 1;
                match report.statuses.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, count)) => *count += 1,
                    None => report.statuses.push((status, 1)),
                }
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.latencies.sort();
    Ok(report)
}
