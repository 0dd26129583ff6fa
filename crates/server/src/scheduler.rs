//! One worker thread per model: it takes every queued request, tokenizes it, and scores the pairs of
//! all of them together in length-sorted batches under a token budget, answering each request as soon
//! as its last pair is scored. Requests whose client went away are dropped between batches. A panic in
//! one batch fails that batch's requests and the worker carries on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bge_rerank_engine::batch::plan_batches;
use bge_rerank_engine::{BatchLimits, InputOptions, ModelInput, Reranker};
use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::Limits;

/// Rounds of at least this many tokens hand their freed memory back to the kernel when done: a
/// 1000-document request left hundreds of MB resident otherwise (the heap keeps what it frees, see
/// `bge_rerank_engine::memory`); trimming after small rounds would cost more than it returns.
const LARGE_ROUND_TOKENS: usize = 32 * 1024;

/// One request's work.
pub struct ScoreJob {
    pub pairs: Vec<(String, String)>,
    pub options: InputOptions,
    pub cutoff_layers: Option<Vec<usize>>,
    /// When false, a pair that would be truncated fails the request (413).
    pub truncate: bool,
    pub reply: oneshot::Sender<Result<JobOutput, ApiError>>,
}

/// Raw scores (per pair, per answering layer, in the request's layer order), token counts and where
/// the time went.
#[derive(Debug)]
pub struct JobOutput {
    pub scores: Vec<Vec<f32>>,
    pub total_tokens: usize,
    /// From submission to the start of the request's first batch (waiting and tokenization).
    pub queue: Duration,
    /// From its first batch to its last pair scored.
    pub inference: Duration,
}

/// A handle to a model's worker thread.
pub struct Scheduler {
    sender: mpsc::Sender<(ScoreJob, Instant)>,
}

impl Scheduler {
    pub fn start(
        name: &str,
        reranker: Arc<Reranker>,
        limits: &Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (sender, receiver) = mpsc::channel();
        let (batch_limits, fail_batch) = (limits.batch, limits.fail_batch);
        std::thread::Builder::new()
            .name(format!("model-{name}"))
            .spawn(move || {
                Worker {
                    reranker,
                    limits: batch_limits,
                    metrics,
                    batches_run: 0,
                    fail_batch,
                }
                .run(receiver)
            })
            .expect("spawning a worker thread");
        Self { sender }
    }

    pub fn submit(&self, job: ScoreJob) -> Result<(), ApiError> {
        self.sender
            .send((job, Instant::now()))
            .map_err(|_| ApiError::unavailable("the model worker has stopped"))
    }
}

/// A request being scored.
struct Pending {
    /// Taken when the answer is sent.
    reply: Option<oneshot::Sender<Result<JobOutput, ApiError>>>,
    /// Its resolved layers, and where each sits in the round's union of layers.
    layer_columns: Vec<usize>,
    scores: Vec<Vec<f32>>,
    remaining: usize,
    total_tokens: usize,
    enqueued: Instant,
    /// When its first batch started.
    started: Option<Instant>,
}

impl Pending {
    /// Still waited for: not answered, client still there.
    fn live(&self) -> bool {
        self.reply.as_ref().is_some_and(|r| !r.is_closed())
    }

    fn answer(&mut self, result: Result<JobOutput, ApiError>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result);
        }
    }
}

struct Worker {
    reranker: Arc<Reranker>,
    limits: BatchLimits,
    metrics: Arc<Metrics>,
    batches_run: u64,
    /// `Limits::fail_batch`.
    fail_batch: Option<u64>,
}

impl Worker {
    fn run(mut self, receiver: mpsc::Receiver<(ScoreJob, Instant)>) {
        while let Ok(first) = receiver.recv() {
            let mut jobs = vec![first];
            jobs.extend(receiver.try_iter());
            self.score_round(jobs);
        }
    }

    /// Prepares every job (errors answered at once), then scores all their pairs together.
    fn score_round(&mut self, jobs: Vec<(ScoreJob, Instant)>) {
        let mut pending: Vec<Pending> = Vec::new();
        let mut requested_layers: Vec<Vec<usize>> = Vec::new();
        let mut inputs: Vec<ModelInput> = Vec::new();
        let mut owners: Vec<(usize, usize)> = Vec::new();
        for (job, enqueued) in jobs {
            if job.reply.is_closed() {
                continue;
            }
            match self.prepare(&job) {
                Ok((job_inputs, _)) if job_inputs.is_empty() => {
                    let _ = job.reply.send(Ok(JobOutput {
                        scores: Vec::new(),
                        total_tokens: 0,
                        queue: enqueued.elapsed(),
                        inference: Duration::ZERO,
                    }));
                }
                Ok((job_inputs, layers)) => {
                    let index = pending.len();
                    let total_tokens = job_inputs.iter().map(ModelInput::len).sum();
                    owners.extend((0..job_inputs.len()).map(|i| (index, i)));
                    pending.push(Pending {
                        reply: Some(job.reply),
                        layer_columns: Vec::new(),
                        scores: vec![Vec::new(); job_inputs.len()],
                        remaining: job_inputs.len(),
                        total_tokens,
                        enqueued,
                        started: None,
                    });
                    requested_layers.push(layers);
                    inputs.extend(job_inputs);
                }
                Err(error) => {
                    let _ = job.reply.send(Err(error));
                }
            }
        }
        // The round runs to the union of the requested layers; each request reads its own.
        let mut union: Vec<usize> = requested_layers.iter().flatten().copied().collect();
        union.sort_unstable();
        union.dedup();
        for (p, layers) in pending.iter_mut().zip(&requested_layers) {
            p.layer_columns = layers
                .iter()
                .map(|l| union.binary_search(l).unwrap_or(0))
                .collect();
        }
        self.metrics.queue_depth.inc_by(inputs.len() as i64);
        let lengths: Vec<usize> = inputs.iter().map(ModelInput::len).collect();
        let round_tokens: usize = lengths.iter().sum();
        for batch in plan_batches(&lengths, self.limits) {
            let size = batch.len() as i64;
            let live: Vec<usize> = batch
                .into_iter()
                .filter(|&i| pending[owners[i].0].live())
                .collect();
            if !live.is_empty() {
                self.run_batch(&live, &inputs, &owners, &union, &mut pending);
            }
            self.metrics.queue_depth.dec_by(size);
        }
        if round_tokens >= LARGE_ROUND_TOKENS {
            drop(inputs);
            bge_rerank_engine::memory::release_free_memory();
        }
    }

    fn prepare(&self, job: &ScoreJob) -> Result<(Vec<ModelInput>, Vec<usize>), ApiError> {
        let layers = self
            .reranker
            .resolve_layers(job.cutoff_layers.as_deref())
            .map_err(|e| ApiError::from_engine(&e))?;
        let inputs = self
            .reranker
            .build_inputs(&job.pairs, &job.options)
            .map_err(|e| ApiError::from_engine(&e))?;
        let truncated = inputs.iter().filter(|i| i.truncated).count();
        if truncated > 0 {
            if !job.truncate {
                let index = inputs.iter().position(|i| i.truncated).unwrap_or(0);
                return Err(ApiError::too_large(format!(
                    "input {index} is longer than max_length {} tokens and truncate is false",
                    job.options.max_length
                )));
            }
            self.metrics.pairs_truncated.inc_by(truncated as u64);
        }
        Ok((inputs, layers))
    }

    fn run_batch(
        &mut self,
        batch: &[usize],
        inputs: &[ModelInput],
        owners: &[(usize, usize)],
        union: &[usize],
        pending: &mut [Pending],
    ) {
        let now = Instant::now();
        for &i in batch {
            let p = &mut pending[owners[i].0];
            if p.started.is_none() {
                p.started = Some(now);
                self.metrics
                    .queue_seconds
                    .observe(now.duration_since(p.enqueued).as_secs_f64());
            }
        }
        let members: Vec<&ModelInput> = batch.iter().map(|&i| &inputs[i]).collect();
        self.metrics.batch_pairs.observe(members.len() as f64);
        self.metrics
            .batch_tokens
            .observe(members.iter().map(|m| m.len()).sum::<usize>() as f64);
        self.batches_run += 1;
        let injected = self.fail_batch == Some(self.batches_run);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if injected {
                panic!(
                    "failure injected into batch {} (test hook)",
                    self.batches_run
                );
            }
            self.reranker.score_batch(&members, union)
        }));
        let failure = match outcome {
            Ok(Ok(scores)) => {
                self.metrics.pairs_scored.inc_by(scores.len() as u64);
                for (&i, row) in batch.iter().zip(scores) {
                    let (job, pair) = owners[i];
                    let p = &mut pending[job];
                    // Families without layers answer one column, whatever was asked.
                    p.scores[pair] = if p.layer_columns.is_empty() {
                        row
                    } else {
                        p.layer_columns.iter().map(|&c| row[c]).collect()
                    };
                    p.remaining -= 1;
                    if p.remaining == 0 {
                        let started = p.started.unwrap_or(now);
                        let output = JobOutput {
                            scores: std::mem::take(&mut p.scores),
                            total_tokens: p.total_tokens,
                            queue: started.duration_since(p.enqueued),
                            inference: started.elapsed(),
                        };
                        p.answer(Ok(output));
                    }
                }
                None
            }
            Ok(Err(error)) => Some(ApiError::from_engine(&error)),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!("a batch panicked: {message}");
                Some(ApiError::internal(format!("scoring failed: {message}")))
            }
        };
        if let Some(error) = failure {
            for &i in batch {
                pending[owners[i].0].answer(Err(error.clone()));
            }
        }
    }
}
