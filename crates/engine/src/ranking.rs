//! Ranking passages by score, and how a pair's scores are shown: one home for the rules every front
//! end (CLI `rerank` and `score`, evaluation, the server's routes) follows.

use crate::error::{Error, Result};

/// The answering layers of a ranking request, checked: ranking orders by one score, so a layerwise
/// request for several layers is an error (scoring, not ranking, returns one score per layer).
pub fn one_score_per_pair(layers: Vec<usize>) -> Result<Vec<usize>> {
    match layers.len() {
        0 | 1 => Ok(layers),
        n => Err(Error::InvalidOption(format!(
            "ranking orders by one score, but {n} cutoff layers give {n} per pair: ask for a \
             single cutoff layer"
        ))),
    }
}

/// Indices of `scores`, best first; equal scores keep their input order.
pub fn rank(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

/// A pair's scores as FlagEmbedding returns them: a number for one answering layer, a list (in
/// ascending layer order) for several.
pub fn scores_json(layers: &[f64]) -> serde_json::Value {
    match layers {
        [one] => serde_json::json!(one),
        several => serde_json::json!(several),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_best_first_and_keeps_ties_in_order() {
        assert_eq!(rank(&[0.1, 0.9, 0.5, 0.9]), vec![1, 3, 2, 0]);
        assert!(rank(&[]).is_empty());
    }

    #[test]
    fn one_score_is_a_number_several_a_list() {
        assert_eq!(scores_json(&[0.5]), serde_json::json!(0.5));
        assert_eq!(scores_json(&[0.5, 1.0]), serde_json::json!([0.5, 1.0]));
        assert!(one_score_per_pair(vec![28]).is_ok());
        let error = one_score_per_pair(vec![28, 40]).unwrap_err().to_string();
        assert!(error.contains("single cutoff layer"), "{error}");
    }
}
