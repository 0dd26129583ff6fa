//! Retrieval metrics with trec_eval's definitions: documents are ranked by score, ties broken by
//! document id descending; a document is relevant when its judgment is >= 1; each metric is averaged
//! over the queries that are both judged and in the run (trec_eval's default).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub use crate::data::trec_order;
use crate::data::{Qrels, Run};
use crate::error::EvalError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// trec_eval `ndcg_cut_k` (graded gains, log2 discount).
    Ndcg,
    /// trec_eval `map` (no cut) / `map_cut_k`.
    Map,
    Recall,
    Precision,
    /// Reciprocal rank of the first relevant document (within the cut).
    Mrr,
}

/// A metric and its cut-off, e.g. `ndcg@10`, `map`, `recall@100`, `p@10`, `mrr@10`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    pub kind: Kind,
    pub cutoff: Option<usize>,
    /// As the user wrote it (used as the JSON key).
    pub name: String,
}

impl FromStr for Metric {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self, EvalError> {
        let name = s.trim().to_string();
        let lower = name.to_ascii_lowercase();
        let (base, cutoff) = match lower.split_once('@') {
            Some((base, k)) => {
                let k: usize = k.parse().ok().filter(|&k| k > 0).ok_or_else(|| {
                    EvalError::Invalid(format!(
                        "metric `{s}`: the cut-off must be a positive integer"
                    ))
                })?;
                (base.to_string(), Some(k))
            }
            None => (lower.clone(), None),
        };
        let kind = match base.as_str() {
            "ndcg" => Kind::Ndcg,
            "map" => Kind::Map,
            "recall" => Kind::Recall,
            "p" | "precision" => Kind::Precision,
            "mrr" | "recip_rank" => Kind::Mrr,
            other => {
                return Err(EvalError::Invalid(format!(
                "unknown metric `{other}` (expected ndcg@k, map, map@k, recall@k, p@k, mrr, mrr@k)"
            )))
            }
        };
        if cutoff.is_none() && matches!(kind, Kind::Ndcg | Kind::Recall | Kind::Precision) {
            return Err(EvalError::Invalid(format!(
                "metric `{s}` needs a cut-off, e.g. `{base}@10`"
            )));
        }
        Ok(Self { kind, cutoff, name })
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

pub fn parse_metrics(list: &str) -> Result<Vec<Metric>, EvalError> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// Metrics whose cut-off is deeper than the `depth` documents each query's list holds (e.g.
/// `recall@100` over a reranked top 10) measure that shorter list: each is renamed (`recall@100 (of
/// top 10)`, in tables and JSON alike) so it cannot pass for the deeper figure, and a warning per
/// metric is returned for the user.
pub fn mark_deeper_than(metrics: &mut [Metric], depth: usize) -> Vec<String> {
    let mut warnings = Vec::new();
    for metric in metrics.iter_mut() {
        if let Some(cutoff) = metric.cutoff.filter(|&k| k > depth) {
            let original = std::mem::take(&mut metric.name);
            metric.name = format!("{original} (of top {depth})");
            warnings.push(format!(
                "{original} cuts at {cutoff} but only the top {depth} documents are reranked: it is \
                 computed over those {depth} and reported as `{}`",
                metric.name
            ));
        }
    }
    warnings
}

/// One query's value of `metric`.
pub fn query_value(
    metric: &Metric,
    judged: &std::collections::HashMap<String, i64>,
    docs: &[(String, f64)],
) -> f64 {
    let ranked = trec_order(docs);
    let cut = metric.cutoff.unwrap_or(usize::MAX);
    let num_rel = judged.values().filter(|&&r| r >= 1).count();
    let rel = |d: &str| judged.get(d).copied().unwrap_or(0);
    let top = &ranked[..ranked.len().min(cut)];
    match metric.kind {
        Kind::Ndcg => {
            let dcg: f64 = top
                .iter()
                .enumerate()
                .map(|(i, (d, _))| rel(d).max(0) as f64 / ((i + 2) as f64).log2())
                .sum();
            let mut gains: Vec<i64> = judged.values().copied().filter(|&g| g > 0).collect();
            gains.sort_unstable_by(|a, b| b.cmp(a));
            let ideal: f64 = gains
                .iter()
                .take(cut)
                .enumerate()
                .map(|(i, &g)| g as f64 / ((i + 2) as f64).log2())
                .sum();
            if ideal > 0.0 {
                dcg / ideal
            } else {
                0.0
            }
        }
        Kind::Map => {
            if num_rel == 0 {
                return 0.0;
            }
            let mut found = 0;
            let mut sum = 0.0;
            for (i, (d, _)) in top.iter().enumerate() {
                if rel(d) >= 1 {
                    found += 1;
                    sum += found as f64 / (i + 1) as f64;
                }
            }
            sum / num_rel as f64
        }
        Kind::Recall => {
            if num_rel == 0 {
                return 0.0;
            }
            top.iter().filter(|(d, _)| rel(d) >= 1).count() as f64 / num_rel as f64
        }
        Kind::Precision => top.iter().filter(|(d, _)| rel(d) >= 1).count() as f64 / cut as f64,
        Kind::Mrr => top
            .iter()
            .position(|(d, _)| rel(d) >= 1)
            .map_or(0.0, |i| 1.0 / (i + 1) as f64),
    }
}

/// Per-query values and means of several metrics.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub metrics: Vec<Metric>,
    /// Query id -> one value per metric.
    pub per_query: BTreeMap<String, Vec<f64>>,
    pub mean: Vec<f64>,
}

impl Evaluation {
    pub fn num_queries(&self) -> usize {
        self.per_query.len()
    }

    pub fn mean_of(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .position(|m| m.name == name)
            .map(|i| self.mean[i])
    }
}

/// Evaluates `run` against `qrels` over the queries present in both.
pub fn evaluate(qrels: &Qrels, run: &Run, metrics: &[Metric]) -> Evaluation {
    let mut per_query = BTreeMap::new();
    for (qid, docs) in run {
        if let Some(judged) = qrels.get(qid) {
            let values = metrics
                .iter()
                .map(|m| query_value(m, judged, docs))
                .collect();
            per_query.insert(qid.clone(), values);
        }
    }
    let n = per_query.len().max(1) as f64;
    let mean = (0..metrics.len())
        .map(|i| per_query.values().map(|v: &Vec<f64>| v[i]).sum::<f64>() / n)
        .collect();
    Evaluation {
        metrics: metrics.to_vec(),
        per_query,
        mean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, i64)]) -> std::collections::HashMap<String, i64> {
        pairs.iter().map(|(d, r)| (d.to_string(), *r)).collect()
    }

    fn docs(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
        pairs.iter().map(|(d, s)| (d.to_string(), *s)).collect()
    }

    #[test]
    fn ties_break_by_docid_descending() {
        let order = trec_order(&docs(&[("a", 1.0), ("c", 1.0), ("b", 2.0)]));
        let ids: Vec<&str> = order.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(ids, ["b", "c", "a"]);
    }

    #[test]
    fn hand_computed_values() {
        let j = judged(&[("d1", 2), ("d2", 1), ("d9", 1), ("d5", 0)]);
        let run = docs(&[("d1", 3.0), ("d5", 2.0), ("d2", 1.0)]);
        let m = |s: &str| query_value(&s.parse().unwrap(), &j, &run);
        assert!((m("p@2") - 0.5).abs() < 1e-12);
        assert!((m("recall@3") - 2.0 / 3.0).abs() < 1e-12);
        assert!((m("map") - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert!((m("mrr@10") - 1.0).abs() < 1e-12);
        let dcg = 2.0 + 1.0 / 4f64.log2();
        let idcg = 2.0 + 1.0 / 3f64.log2() + 1.0 / 4f64.log2();
        assert!((m("ndcg@3") - dcg / idcg).abs() < 1e-12);
    }

    #[test]
    fn metric_names_are_checked() {
        assert!("ndcg".parse::<Metric>().is_err());
        assert!("ndcg@0".parse::<Metric>().is_err());
        assert!("bleu@4".parse::<Metric>().is_err());
        assert_eq!("MAP@100".parse::<Metric>().unwrap().cutoff, Some(100));
        let mut metrics = parse_metrics("ndcg@10,recall@100,map").unwrap();
        let warnings = mark_deeper_than(&mut metrics, 10);
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["ndcg@10", "recall@100 (of top 10)", "map"]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("only the top 10"), "{}", warnings[0]);
    }
}
