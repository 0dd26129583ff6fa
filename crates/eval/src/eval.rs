//! Reranking a first stage's top-k and measuring both: the data set -> first-stage run -> pairs
//! (scored once, cached) -> reranked run -> metrics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bge_rerank_engine::{Reranker, ScoreOptions};

use crate::bm25::{self, Bm25Index};
use crate::cache::ScoreCache;
use crate::data::{read_run, DataSet, Qrels, Run};
use crate::error::{EvalError, Result};
use crate::metrics::{evaluate, trec_order, Evaluation, Metric};

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub split: String,
    pub top_k: usize,
    pub metrics: Vec<Metric>,
    pub max_queries: Option<usize>,
    pub cache_dir: PathBuf,
    pub score: ScoreOptions,
    /// Pairs per scoring call between cache writes.
    pub chunk_pairs: usize,
}

/// How the pairs of a data set were obtained.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PairCounts {
    pub total: usize,
    pub from_cache: usize,
    pub scored: usize,
}

#[derive(Debug, Clone)]
pub struct DataSetResult {
    pub name: String,
    pub first_stage_name: String,
    pub first_stage: Evaluation,
    pub reranked: Evaluation,
    pub reranked_run: Run,
    pub pairs: PairCounts,
    /// Documents the run names that the corpus lacks: count and a few examples.
    pub missing_docs: (usize, Vec<String>),
    /// Queries the run names that the data set lacks (no text or no judgments).
    pub missing_queries: (usize, Vec<String>),
    pub seconds: f64,
}

impl DataSetResult {
    /// (improved, worsened, unchanged) queries by the metric at `index`.
    pub fn changes(&self, index: usize) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for (qid, after) in &self.reranked.per_query {
            let before = self
                .first_stage
                .per_query
                .get(qid)
                .map_or(0.0, |v| v[index]);
            match after[index].partial_cmp(&before) {
                Some(std::cmp::Ordering::Greater) if after[index] - before > 1e-12 => counts.0 += 1,
                Some(std::cmp::Ordering::Less) if before - after[index] > 1e-12 => counts.1 += 1,
                _ => counts.2 += 1,
            }
        }
        counts
    }

    /// Per-query change of the metric at `index`, sorted ascending.
    pub fn sorted_deltas(&self, index: usize) -> Vec<f64> {
        let mut deltas: Vec<f64> = self
            .reranked
            .per_query
            .iter()
            .map(|(qid, after)| {
                after[index]
                    - self
                        .first_stage
                        .per_query
                        .get(qid)
                        .map_or(0.0, |v| v[index])
            })
            .collect();
        deltas.sort_by(f64::total_cmp);
        deltas
    }
}

/// A count and the first few (sorted, so reports are deterministic).
fn examples(items: impl Iterator<Item = String>) -> (usize, Vec<String>) {
    let mut all: Vec<String> = items.collect();
    all.sort();
    let shown = all.iter().take(5).cloned().collect();
    (all.len(), shown)
}

/// A description of everything that changes a score, for the cache key: the model's files by
/// their fingerprint (retrained weights in the same folder are a new model), and the options.
pub fn cache_key(reranker: &Reranker, model_key: &str, options: &ScoreOptions) -> String {
    format!(
        "model={}|files={}|dir={}|arch={}|dtype={}|max_length={}|query_max_length={:?}|prompt={:?}|layers={:?}",
        model_key,
        reranker.fingerprint(),
        reranker.model_dir().canonicalize().unwrap_or(reranker.model_dir().to_path_buf()).display(),
        reranker.architecture().name(),
        reranker.precision().compute,
        options.input.max_length,
        options.input.query_max_length,
        options.input.prompt,
        options.cutoff_layers,
    )
}

/// A data set's first stage: its judged queries' top k, and what the run named that the data set lacks.
pub struct FirstStage {
    pub name: String,
    pub qrels: Qrels,
    pub queries: BTreeMap<String, String>,
    pub run: Run,
    pub missing_queries: (usize, Vec<String>),
}

impl FirstStage {
    pub fn evaluate(&self, metrics: &[Metric]) -> Evaluation {
        evaluate(&self.qrels, &self.run, metrics)
    }
}

/// Reads (or, with `run` = `None`, computes with the built-in BM25) the first stage of `data`,
/// restricted to the judged queries with text, each cut to its top k.
pub fn first_stage(
    data: &DataSet,
    run: Option<&Path>,
    options: &EvalOptions,
) -> Result<FirstStage> {
    let qrels = data.qrels()?;
    let queries = data.queries()?;
    let (name, full_run) = match run {
        Some(path) => (path.display().to_string(), read_run(path)?),
        None => {
            let index = Bm25Index::open_or_build(data, &options.cache_dir)?;
            let wanted: Vec<(String, String)> = qrels
                .keys()
                .filter_map(|q| queries.get(q).map(|t| (q.clone(), t.clone())))
                .collect();
            (
                bm25::DESCRIPTION.to_string(),
                index.search(&wanted, options.top_k)?,
            )
        }
    };
    let missing_queries = examples(
        full_run
            .keys()
            .filter(|q| !queries.contains_key(*q) || !qrels.contains_key(*q))
            .cloned(),
    );
    let mut cut: Run = full_run
        .into_iter()
        .filter(|(q, _)| queries.contains_key(q) && qrels.contains_key(q))
        .map(|(q, docs)| {
            let mut top = trec_order(&docs);
            top.truncate(options.top_k);
            (q, top)
        })
        .collect();
    if let Some(n) = options.max_queries {
        cut = cut.into_iter().take(n).collect();
    }
    if cut.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{}: no judged query of split `{}` is in the first-stage run",
            data.dir.display(),
            data.split
        )));
    }
    Ok(FirstStage {
        name,
        qrels,
        queries,
        run: cut,
        missing_queries,
    })
}

/// Reranks one data set. `run` is a TREC run file, or `None` for the built-in BM25.
/// `on_total` is told how many pairs need scoring, `on_scored` how many each step scored.
pub fn evaluate_dataset(
    reranker: &Reranker,
    model_key: &str,
    data: &DataSet,
    run: Option<&Path>,
    options: &EvalOptions,
    on_total: &dyn Fn(usize),
    on_scored: &dyn Fn(usize),
) -> Result<DataSetResult> {
    let start = Instant::now();
    let layers = bge_rerank_engine::ranking::one_score_per_pair(
        reranker.resolve_layers(options.score.cutoff_layers.as_deref())?,
    )?;
    let FirstStage {
        name: first_stage_name,
        qrels,
        queries,
        run: first_stage,
        missing_queries,
    } = first_stage(data, run, options)?;

    let needed: HashSet<&str> = first_stage
        .values()
        .flatten()
        .map(|(d, _)| d.as_str())
        .collect();
    let mut texts: HashMap<String, String> = HashMap::with_capacity(needed.len());
    data.stream_corpus(
        |id| needed.contains(id),
        |id, text| {
            texts.insert(id, text);
        },
    )?;
    let missing_docs = examples(
        needed
            .iter()
            .filter(|d| !texts.contains_key(**d))
            .map(|d| d.to_string()),
    );

    let mut cache = ScoreCache::open(
        &options.cache_dir,
        &cache_key(reranker, model_key, &options.score),
    )?;
    let mut pairs = PairCounts::default();
    let mut todo: Vec<(String, String)> = Vec::new();
    for (qid, docs) in &first_stage {
        for (doc, _) in docs {
            if !texts.contains_key(doc) {
                continue;
            }
            pairs.total += 1;
            if cache.get(qid, doc).is_some() {
                pairs.from_cache += 1;
            } else {
                todo.push((qid.clone(), doc.clone()));
            }
        }
    }
    on_total(todo.len());
    for chunk in todo.chunks(options.chunk_pairs.max(1)) {
        let texts_of: Vec<(&str, &str)> = chunk
            .iter()
            .map(|(q, d)| (queries[q].as_str(), texts[d].as_str()))
            .collect();
        let inputs = reranker.build_inputs(&texts_of, &options.score.input)?;
        let raw = reranker.score_inputs(&inputs, options.score.batch, &layers, &|_| Ok(()))?;
        let entries = chunk
            .iter()
            .zip(raw)
            .map(|((q, d), s)| (q.clone(), d.clone(), f64::from(s[0])))
            .collect();
        cache.insert(entries)?;
        pairs.scored += chunk.len();
        on_scored(chunk.len());
    }

    // Documents the corpus lacks cannot be read: they go to the bottom, in first-stage order
    // (distinct scores far below any logit; -1e30 - i would round to one value and tie).
    let reranked_run: Run = first_stage
        .iter()
        .map(|(qid, docs)| {
            let reranked = docs
                .iter()
                .enumerate()
                .map(|(i, (doc, _))| {
                    let score = cache.get(qid, doc).unwrap_or(-1e9 - i as f64);
                    (doc.clone(), score)
                })
                .collect();
            (qid.clone(), reranked)
        })
        .collect();
    Ok(DataSetResult {
        name: data.name(),
        first_stage_name,
        first_stage: evaluate(&qrels, &first_stage, &options.metrics),
        reranked: evaluate(&qrels, &reranked_run, &options.metrics),
        reranked_run,
        pairs,
        missing_docs,
        missing_queries,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Mean of each metric over several data sets (a macro average: each data set counts once).
pub fn average(results: &[DataSetResult]) -> (Vec<f64>, Vec<f64>) {
    let n = results.len().max(1) as f64;
    let metrics = results.first().map_or(0, |r| r.first_stage.mean.len());
    let mean = |pick: &dyn Fn(&DataSetResult) -> &Evaluation| -> Vec<f64> {
        (0..metrics)
            .map(|i| results.iter().map(|r| pick(r).mean[i]).sum::<f64>() / n)
            .collect()
    };
    (mean(&|r| &r.first_stage), mean(&|r| &r.reranked))
}

/// Per data set, a map for reports.
pub fn summary(results: &[DataSetResult]) -> BTreeMap<String, serde_json::Value> {
    results
        .iter()
        .map(|r| {
            let metrics: serde_json::Map<String, serde_json::Value> = r
                .first_stage
                .metrics
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    (
                        m.name.clone(),
                        serde_json::json!({
                            "first_stage": r.first_stage.mean[i],
                            "reranked": r.reranked.mean[i],
                            "diff": r.reranked.mean[i] - r.first_stage.mean[i],
                        }),
                    )
                })
                .collect();
            let (improved, worsened, unchanged) = r.changes(0);
            (
                r.name.clone(),
                serde_json::json!({
                    "first_stage": r.first_stage_name,
                    "queries": r.reranked.num_queries(),
                    "metrics": metrics,
                    "improved": improved,
                    "worsened": worsened,
                    "unchanged": unchanged,
                    "pairs": r.pairs,
                    "missing_docs": {"count": r.missing_docs.0, "examples": r.missing_docs.1},
                    "missing_queries": {"count": r.missing_queries.0, "examples": r.missing_queries.1},
                    "seconds": r.seconds,
                }),
            )
        })
        .collect()
}
