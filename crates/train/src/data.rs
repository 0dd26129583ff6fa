//! Training data in the model card's JSON Lines format and FlagEmbedding's group sampling.
//!
//! One line: `{"query": str, "pos": [str, ...], "neg": [str, ...], "prompt"?: str,
//! "pos_scores"?: [num], "neg_scores"?: [num]}`. A group is one positive (a random choice) followed
//! by `group_size - 1` negatives: sampled without replacement when there are enough, from the list
//! repeated when there are fewer, and from other queries' passages when a query has none.

use std::path::{Path, PathBuf};

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::error::{Result, TrainError};

#[derive(Debug, Clone, PartialEq)]
pub struct TrainExample {
    pub query: String,
    pub pos: Vec<String>,
    pub neg: Vec<String>,
    /// The LLM rerankers' instruction for this query (FlagEmbedding's `prompt`).
    pub prompt: Option<String>,
    pub pos_scores: Option<Vec<f64>>,
    pub neg_scores: Option<Vec<f64>>,
}

/// A training file, read and checked.
#[derive(Debug, Clone)]
pub struct TrainData {
    pub path: PathBuf,
    pub examples: Vec<TrainExample>,
}

impl TrainData {
    /// Reads every line; any problem is an error naming the file, the line and the field.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| TrainError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let mut examples = Vec::new();
        for (index, line) in bge_rerank_engine::text::without_bom(&text)
            .lines()
            .enumerate()
        {
            if line.trim().is_empty() {
                continue;
            }
            let example = parse_line(line).map_err(|message| TrainError::Data {
                path: path.to_path_buf(),
                line: index + 1,
                message,
            })?;
            examples.push(example);
        }
        if examples.is_empty() {
            return Err(TrainError::Data {
                path: path.to_path_buf(),
                line: 0,
                message: "the file holds no training examples".into(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            examples,
        })
    }

    /// How many queries have no negatives of their own (they borrow other queries' passages).
    pub fn without_negatives(&self) -> usize {
        self.examples.iter().filter(|e| e.neg.is_empty()).count()
    }

    /// Whether every example carries teacher scores (needed by `--distill`).
    pub fn has_teacher_scores(&self) -> bool {
        self.examples
            .iter()
            .all(|e| e.pos_scores.is_some() && (e.neg.is_empty() || e.neg_scores.is_some()))
    }

    /// The group of example `index`, sampled with `rng`.
    pub fn group(&self, index: usize, group_size: usize, rng: &mut impl Rng) -> Group {
        let example = &self.examples[index];
        let pos_index = rng.random_range(0..example.pos.len());
        let wanted = group_size.saturating_sub(1);
        let mut passages = vec![example.pos[pos_index].clone()];
        let mut teacher = example
            .pos_scores
            .as_ref()
            .map(|s| vec![s[pos_index] as f32]);
        if example.neg.is_empty() {
            // FlagEmbedding requires negatives; we borrow passages of other queries instead.
            for _ in 0..wanted {
                passages.push(self.random_other_passage(index, rng));
            }
            teacher = None;
        } else {
            let indices: Vec<usize> = if example.neg.len() < wanted {
                let repeats = wanted.div_ceil(example.neg.len());
                let pool: Vec<usize> = (0..repeats).flat_map(|_| 0..example.neg.len()).collect();
                pool.choose_multiple(rng, wanted).copied().collect()
            } else {
                let pool: Vec<usize> = (0..example.neg.len()).collect();
                pool.choose_multiple(rng, wanted).copied().collect()
            };
            for &i in &indices {
                passages.push(example.neg[i].clone());
            }
            if let (Some(t), Some(scores)) = (&mut teacher, &example.neg_scores) {
                t.extend(indices.iter().map(|&i| scores[i] as f32));
            } else {
                teacher = None;
            }
        }
        Group {
            query: example.query.clone(),
            passages,
            prompt: example.prompt.clone(),
            teacher,
        }
    }

    fn random_other_passage(&self, index: usize, rng: &mut impl Rng) -> String {
        let others = self.examples.len() - 1;
        if others == 0 {
            // A single query: its own positives are all there is.
            let own = &self.examples[index].pos;
            return own[rng.random_range(0..own.len())].clone();
        }
        let mut other = rng.random_range(0..others);
        if other >= index {
            other += 1;
        }
        let example = &self.examples[other];
        let total = example.pos.len() + example.neg.len();
        let pick = rng.random_range(0..total);
        if pick < example.pos.len() {
            example.pos[pick].clone()
        } else {
            example.neg[pick - example.pos.len()].clone()
        }
    }

    /// The order of examples in `epoch`: a permutation fixed by the seed and the epoch, so a resumed
    /// run sees the same order.
    pub fn epoch_order(&self, seed: u64, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.examples.len()).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(mix(
            seed,
            epoch as u64,
        )));
        order
    }

    /// The group sampler for one position of one epoch, independent of what came before.
    pub fn group_rng(seed: u64, epoch: usize, position: usize) -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(mix(mix(seed, epoch as u64), position as u64 + 1))
    }
}

fn mix(a: u64, b: u64) -> u64 {
    (a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// One positive first, then negatives; `teacher` holds their teacher scores when the data has them.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub query: String,
    pub passages: Vec<String>,
    pub prompt: Option<String>,
    pub teacher: Option<Vec<f32>>,
}

fn parse_line(line: &str) -> std::result::Result<TrainExample, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("expected a JSON object".into());
    };
    let query = match object.get("query") {
        Some(Value::String(q)) if !q.trim().is_empty() => q.clone(),
        Some(Value::String(_)) => return Err("`query` is empty".into()),
        Some(_) => return Err("`query` must be a string".into()),
        None => return Err("missing field `query`".into()),
    };
    let pos = match object.get("pos") {
        Some(v) => strings(v, "pos")?,
        None => return Err("missing field `pos`".into()),
    };
    if pos.is_empty() {
        return Err("`pos` is empty: each query needs at least one positive passage".into());
    }
    let neg = match object.get("neg") {
        Some(Value::Null) | None => Vec::new(),
        Some(v) => strings(v, "neg")?,
    };
    let prompt = match object.get("prompt") {
        Some(Value::String(p)) => Some(p.clone()),
        Some(Value::Null) | None => None,
        Some(_) => return Err("`prompt` must be a string".into()),
    };
    let pos_scores = scores(object.get("pos_scores"), "pos_scores", pos.len())?;
    let neg_scores = scores(object.get("neg_scores"), "neg_scores", neg.len())?;
    Ok(TrainExample {
        query,
        pos,
        neg,
        prompt,
        pos_scores,
        neg_scores,
    })
}

fn strings(value: &Value, field: &str) -> std::result::Result<Vec<String>, String> {
    let Value::Array(items) = value else {
        return Err(format!("`{field}` must be a list of strings"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            _ => Err(format!("`{field}[{i}]` must be a string")),
        })
        .collect()
}

fn scores(
    value: Option<&Value>,
    field: &str,
    expected: usize,
) -> std::result::Result<Option<Vec<f64>>, String> {
    let items = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(format!("`{field}` must be a list of numbers")),
    };
    let scores = items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("`{field}[{i}]` must be a finite number"))
        })
        .collect::<std::result::Result<Vec<f64>, String>>()?;
    if scores.len() != expected {
        let passages = field.trim_end_matches("_scores");
        return Err(format!(
            "`{field}` has {} scores but `{passages}` has {expected} passages",
            scores.len()
        ));
    }
    Ok(Some(scores))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(lines: &str) -> Result<TrainData> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        std::fs::write(&path, lines).unwrap();
        TrainData::read(&path)
    }

    fn error_of(lines: &str) -> String {
        data(lines).unwrap_err().to_string()
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let d = data("\u{feff}{\"query\": \"q\", \"pos\": [\"p\"], \"neg\": [\"n\"]}\n").unwrap();
        assert_eq!(d.examples.len(), 1);
    }

    #[test]
    fn bad_lines_are_named() {
        let good = r#"{"query": "q", "pos": ["p"], "neg": ["n"]}"#;
        let cases = [
            (r#"{"pos": ["p"]}"#, "missing field `query`"),
            (r#"{"query": "q", "neg": ["n"]}"#, "missing field `pos`"),
            (r#"{"query": "q", "pos": []}"#, "`pos` is empty"),
            (r#"{"query": 3, "pos": ["p"]}"#, "`query` must be a string"),
            (
                r#"{"query": "q", "pos": "p"}"#,
                "`pos` must be a list of strings",
            ),
            (
                r#"{"query": "q", "pos": ["p"], "neg": [1]}"#,
                "`neg[0]` must be a string",
            ),
            (
                r#"{"query": "q", "pos": ["p"], "pos_scores": [1, 2]}"#,
                "`pos_scores` has 2 scores but `pos` has 1 passages",
            ),
            ("[1, 2]", "expected a JSON object"),
            ("{oops", "not valid JSON"),
        ];
        for (bad, message) in cases {
            let error = error_of(&format!("{good}\n\n{bad}\n"));
            assert!(error.contains("line 3"), "{error}");
            assert!(error.contains(message), "{error} lacks {message}");
        }
    }

    #[test]
    fn groups_put_the_positive_first_and_sample_negatives() {
        let d = data(concat!(
            r#"{"query": "a", "pos": ["a+"], "neg": ["n1", "n2", "n3", "n4", "n5"]}"#,
            "\n",
            r#"{"query": "b", "pos": ["b+"], "neg": ["m1"]}"#,
            "\n",
            r#"{"query": "c", "pos": ["c+"]}"#,
            "\n"
        ))
        .unwrap();
        assert_eq!(d.without_negatives(), 1);
        let mut rng = TrainData::group_rng(7, 0, 0);
        let enough = d.group(0, 4, &mut rng);
        assert_eq!(enough.passages[0], "a+");
        assert_eq!(enough.passages.len(), 4);
        let mut negs = enough.passages[1..].to_vec();
        negs.sort();
        negs.dedup();
        assert_eq!(negs.len(), 3, "without replacement: {:?}", enough.passages);
        let repeated = d.group(1, 4, &mut rng);
        assert_eq!(repeated.passages, ["b+", "m1", "m1", "m1"]);
        let borrowed = d.group(2, 4, &mut rng);
        assert_eq!(borrowed.passages[0], "c+");
        assert!(borrowed.passages[1..].iter().all(|p| !p.starts_with('c')));
        // Same seed, same position: same group.
        assert_eq!(
            d.group(0, 4, &mut TrainData::group_rng(7, 0, 0)),
            d.group(0, 4, &mut TrainData::group_rng(7, 0, 0))
        );
    }
}
