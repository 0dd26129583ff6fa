//! One worker thread per model: it takes requests as they arrive (tokenized by the handlers on
//! tokio's blocking pool, see `build_inputs`) and scores their pairs in batches under a token budget,
//! each batch filled in turn from every waiting request (so a small request is not queued behind a
//! large one), answering each request as soon as its last pair is scored. Requests whose client went
//! away are dropped between batches. A panic in one batch fails that batch's requests and the worker
//! carries on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bge_rerank_engine::{BatchLimits, InputOptions, ModelInput, Reranker};
use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::Limits;

/// After this many tokens scored, the worker hands freed memory back to the kernel once it is idle: a
/// 1000-document request left hundreds of MB resident otherwise (the heap keeps what it frees, see
/// `bge_rerank_engine::memory`); trimming after every small request would cost more than it returns.
const LARGE_ROUND_TOKENS: usize = 32 * 1024;

/// One request's work.
pub struct ScoreJob {
    /// The request's inputs, tokenized (see `build_inputs`).
    pub inputs: Vec<ModelInput>,
    /// Its resolved layers.
    pub layers: Vec<usize>,
    pub reply: oneshot::Sender<Result<JobOutput, ApiError>>,
}

/// A request's pairs and how to read them.
pub struct Pairs {
    pub pairs: Vec<(String, String)>,
    pub options: InputOptions,
    pub cutoff_layers: Option<Vec<usize>>,
    /// When false, a pair that would be truncated fails the request (413).
    pub truncate: bool,
}

/// A request's inputs and resolved layers for `reranker`: run by the handlers on tokio's blocking
/// pool, so that tokenizing a large request never holds up the model's worker.
pub fn build_inputs(
    reranker: &Reranker,
    work: &Pairs,
    metrics: &Metrics,
) -> Result<(Vec<ModelInput>, Vec<usize>), ApiError> {
    let layers = reranker
        .resolve_layers(work.cutoff_layers.as_deref())
        .map_err(|e| ApiError::from_engine(&e))?;
    let inputs = reranker
        .build_inputs(&work.pairs, &work.options)
        .map_err(|e| ApiError::from_engine(&e))?;
    let truncated = inputs.iter().filter(|i| i.truncated).count();
    if truncated > 0 {
        if !work.truncate {
            let index = inputs.iter().position(|i| i.truncated).unwrap_or(0);
            return Err(ApiError::too_large(format!(
                "input {index} is longer than max_length {} tokens and truncate is false",
                work.options.max_length
            )));
        }
        metrics.pairs_truncated.inc_by(truncated as u64);
    }
    Ok((inputs, layers))
}

/// Raw scores (per pair, per answering layer, in the request's layer order), token counts and where
/// the time went.
#[derive(Debug)]
pub struct JobOutput {
    pub scores: Vec<Vec<f32>>,
    pub total_tokens: usize,
    /// Tokenizing the request (set by the handler).
    pub tokenization: Duration,
    /// From submission to the start of the request's first batch.
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

/// A request being scored: its inputs, those not yet scored, and its scores so far.
struct Pending {
    /// Taken when the answer is sent.
    reply: Option<oneshot::Sender<Result<JobOutput, ApiError>>>,
    inputs: Vec<ModelInput>,
    /// Indices into `inputs` not yet in a batch, shortest first (batches take from the end).
    unscored: Vec<usize>,
    /// Its resolved layers, in its own order.
    layers: Vec<usize>,
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
    /// Takes requests as they come and scores them batch by batch. Each batch is filled in turn
    /// from every waiting request, in arrival order, one input each per turn: a request that arrives
    /// while a large one is being scored gets its inputs into the very next batch instead of
    /// waiting for all of the large one.
    fn run(mut self, receiver: mpsc::Receiver<(ScoreJob, Instant)>) {
        let mut pending: Vec<Pending> = Vec::new();
        let mut tokens_since_trim = 0;
        loop {
            if pending.is_empty() {
                if tokens_since_trim >= LARGE_ROUND_TOKENS {
                    bge_rerank_engine::memory::release_free_memory();
                    tokens_since_trim = 0;
                }
                match receiver.recv() {
                    Ok(job) => self.admit(job, &mut pending),
                    Err(_) => return,
                }
            }
            for job in receiver.try_iter() {
                self.admit(job, &mut pending);
            }
            let batch = self.next_batch(&mut pending);
            tokens_since_trim += batch
                .iter()
                .map(|&(p, i)| pending[p].inputs[i].len())
                .sum::<usize>();
            if !batch.is_empty() {
                self.run_batch(&batch, &mut pending);
            }
            // Answered, failed or abandoned requests leave; an abandoned one's pairs are dropped.
            pending.retain(|p| {
                let keep = p.live();
                if !keep {
                    self.metrics.queue_depth.dec_by(p.unscored.len() as i64);
                }
                keep
            });
        }
    }

    /// Adds a request to the waiting ones (one without inputs is answered at once).
    fn admit(&self, (job, enqueued): (ScoreJob, Instant), pending: &mut Vec<Pending>) {
        let ScoreJob {
            inputs,
            layers,
            reply,
        } = job;
        if reply.is_closed() {
            return;
        }
        if inputs.is_empty() {
            let _ = reply.send(Ok(JobOutput {
                scores: Vec::new(),
                total_tokens: 0,
                tokenization: Duration::ZERO,
                queue: enqueued.elapsed(),
                inference: Duration::ZERO,
            }));
            return;
        }
        let mut unscored: Vec<usize> = (0..inputs.len()).collect();
        unscored.sort_by_key(|&i| inputs[i].len());
        self.metrics.queue_depth.inc_by(inputs.len() as i64);
        pending.push(Pending {
            reply: Some(reply),
            total_tokens: inputs.iter().map(ModelInput::len).sum(),
            scores: vec![Vec::new(); inputs.len()],
            remaining: inputs.len(),
            inputs,
            unscored,
            layers,
            enqueued,
            started: None,
        });
    }

    /// The next batch, as (request, input) indices: one input from each waiting request in turn
    /// (arrival order, each request's longest first), up to the batch limits. Requests not started
    /// yet go first, in a batch of their own: a small request that arrives while a large one is
    /// being scored waits for the batch in progress and one short batch, not for a full one. An
    /// input longer than the token budget is a batch of its own.
    fn next_batch(&self, pending: &mut [Pending]) -> Vec<(usize, usize)> {
        let newcomers = pending.iter().any(|p| p.live() && p.started.is_none());
        let mut batch = Vec::new();
        let mut tokens = 0;
        loop {
            let mut took = false;
            for (p, request) in pending.iter_mut().enumerate() {
                if !request.live() || (newcomers && request.started.is_some()) {
                    continue;
                }
                let Some(&next) = request.unscored.last() else {
                    continue;
                };
                let len = request.inputs[next].len();
                let full = batch.len() >= self.limits.batch_size
                    || tokens + len > self.limits.max_batch_tokens;
                if full && !batch.is_empty() {
                    return batch;
                }
                request.unscored.pop();
                batch.push((p, next));
                tokens += len;
                took = true;
            }
            if !took {
                return batch;
            }
        }
    }

    /// Scores one batch (to the union of its requests' layers) and answers the requests it
    /// completes; a failure fails the requests it holds pairs of, and the worker carries on.
    fn run_batch(&mut self, batch: &[(usize, usize)], pending: &mut [Pending]) {
        let now = Instant::now();
        let mut union: Vec<usize> = Vec::new();
        for &(p, _) in batch {
            let request = &mut pending[p];
            if request.started.is_none() {
                request.started = Some(now);
                self.metrics
                    .queue_seconds
                    .observe(now.duration_since(request.enqueued).as_secs_f64());
            }
            union.extend(&request.layers);
        }
        union.sort_unstable();
        union.dedup();
        let members: Vec<&ModelInput> = batch.iter().map(|&(p, i)| &pending[p].inputs[i]).collect();
        self.metrics.batch_pairs.observe(members.len() as f64);
        self.metrics
            .batch_tokens
            .observe(members.iter().map(|m| m.len()).sum::<usize>() as f64);
        self.metrics.queue_depth.dec_by(members.len() as i64);
        self.batches_run += 1;
        let injected = self.fail_batch == Some(self.batches_run);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if injected {
                panic!(
                    "failure injected into batch {} (test hook)",
                    self.batches_run
                );
            }
            self.reranker.score_batch(&members, &union)
        }));
        let failure = match outcome {
            Ok(Ok(scores)) => {
                self.metrics.pairs_scored.inc_by(scores.len() as u64);
                for (&(p, i), row) in batch.iter().zip(scores) {
                    let request = &mut pending[p];
                    // Families without layers answer one column, whatever was asked.
                    request.scores[i] = match request.layers.is_empty() {
                        true => row,
                        false => (request.layers.iter())
                            .map(|l| row[union.binary_search(l).unwrap_or(0)])
                            .collect(),
                    };
                    request.remaining -= 1;
                    if request.remaining == 0 {
                        let started = request.started.unwrap_or(now);
                        let output = JobOutput {
                            scores: std::mem::take(&mut request.scores),
                            total_tokens: request.total_tokens,
                            tokenization: Duration::ZERO,
                            queue: started.duration_since(request.enqueued),
                            inference: started.elapsed(),
                        };
                        request.answer(Ok(output));
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
            for &(p, _) in batch {
                pending[p].answer(Err(error.clone()));
            }
        }
    }
}
