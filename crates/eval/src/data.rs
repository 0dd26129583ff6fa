//! Readers for the formats retrieval data comes in: TREC qrels and runs, BEIR folders
//! (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`) and FlagEmbedding's custom layout
//! (`corpus.jsonl`, `<split>_queries.jsonl`, `<split>_qrels.jsonl`). Every malformed line is an error
//! naming the file and the line.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{EvalError, Result};

/// Relevance judgments: query id -> document id -> graded relevance.
pub type Qrels = BTreeMap<String, HashMap<String, i64>>;

/// A ranked list per query: (document id, score), in file order.
pub type Run = BTreeMap<String, Vec<(String, f64)>>;

fn lines(path: &Path) -> Result<impl Iterator<Item = (usize, Result<String>)> + '_> {
    let file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
    Ok(BufReader::new(file)
        .lines()
        .enumerate()
        .map(move |(i, line)| {
            let line = match (i, line) {
                (0, Ok(first)) => Ok(bge_rerank_engine::text::without_bom(&first).to_string()),
                (_, line) => line.map_err(|e| EvalError::io(path, e)),
            };
            (i + 1, line)
        }))
}

/// TREC qrels (`qid iter docid rel`), or a BEIR tsv (`query-id corpus-id score` with a header line).
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    if path.extension().is_some_and(|e| e == "jsonl") {
        return read_qrels_jsonl(path);
    }
    let mut qrels = Qrels::new();
    // The first judgment line decides: 4 fields is TREC, 3 is a BEIR tsv.
    let mut width = None;
    for (line_no, line) in lines(path)? {
        let line = line?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || (line_no == 1 && fields.first() == Some(&"query-id")) {
            continue;
        }
        let expected = *width.get_or_insert(fields.len());
        let (qid, docid, rel) = match fields.as_slice() {
            [qid, _iter, docid, rel] if expected == 4 => (qid, docid, rel),
            [qid, docid, rel] if expected == 3 => (qid, docid, rel),
            _ => {
                let form = match expected {
                    4 => "`qid 0 docid relevance` (TREC qrels)",
                    3 => "`query-id corpus-id score` (BEIR tsv)",
                    _ => "`qid 0 docid relevance` (TREC) or `query-id corpus-id score` (BEIR tsv)",
                };
                return Err(EvalError::format(
                    path,
                    line_no,
                    format!("expected {form}, found {} fields", fields.len()),
                ));
            }
        };
        let rel: i64 = rel.parse().map_err(|_| {
            EvalError::format(
                path,
                line_no,
                format!("relevance `{rel}` is not an integer"),
            )
        })?;
        qrels
            .entry(qid.to_string())
            .or_default()
            .insert(docid.to_string(), rel);
    }
    Ok(qrels)
}

/// FlagEmbedding's `<split>_qrels.jsonl`: `{"qid", "docid", "relevance"}`.
fn read_qrels_jsonl(path: &Path) -> Result<Qrels> {
    let mut qrels = Qrels::new();
    for (line_no, object) in json_objects(path)? {
        let qid = id_field(path, line_no, &object, &["qid", "query-id", "query_id"])?;
        let docid = id_field(path, line_no, &object, &["docid", "corpus-id", "doc_id"])?;
        let rel = match object.get("relevance").or_else(|| object.get("score")) {
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
                EvalError::format(path, line_no, "`relevance` must be an integer")
            })?,
            _ => {
                return Err(EvalError::format(
                    path,
                    line_no,
                    "missing integer field `relevance`",
                ))
            }
        };
        qrels.entry(qid).or_default().insert(docid, rel);
    }
    Ok(qrels)
}

/// A TREC run: `qid Q0 docid rank score tag`. The rank column is ignored (as trec_eval does):
/// order comes from the scores.
pub fn read_run(path: &Path) -> Result<Run> {
    let mut run = Run::new();
    for (line_no, line) in lines(path)? {
        let line = line?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let [qid, _q0, docid, _rank, score, ..] = fields.as_slice() else {
            return Err(EvalError::format(
                path,
                line_no,
                format!(
                    "expected `qid Q0 docid rank score tag`, found {} fields",
                    fields.len()
                ),
            ));
        };
        let score: f64 = score.parse().map_err(|_| {
            EvalError::format(path, line_no, format!("score `{score}` is not a number"))
        })?;
        run.entry(qid.to_string())
            .or_default()
            .push((docid.to_string(), score));
    }
    Ok(run)
}

/// Writes a run in TREC format, each query's documents by descending score.
pub fn write_run(path: &Path, run: &Run, tag: &str) -> Result<()> {
    let mut text = String::new();
    for (qid, docs) in run {
        for (rank, (docid, score)) in trec_order(docs).iter().enumerate() {
            text.push_str(&format!("{qid} Q0 {docid} {} {score:.6} {tag}\n", rank + 1));
        }
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| EvalError::io(parent, e))?;
    }
    std::fs::write(path, text).map_err(|e| EvalError::io(path, e))
}

/// The JSON objects of a JSON Lines file, one per non-blank line, with their line numbers.
fn json_object_lines(
    path: &Path,
) -> Result<impl Iterator<Item = Result<(usize, serde_json::Map<String, Value>)>> + '_> {
    Ok(lines(path)?.filter_map(move |(line_no, line)| {
        let line = match line {
            Ok(line) => line,
            Err(e) => return Some(Err(e)),
        };
        if line.trim().is_empty() {
            return None;
        }
        Some(match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(object)) => Ok((line_no, object)),
            Ok(_) => Err(EvalError::format(path, line_no, "expected a JSON object")),
            Err(e) => Err(EvalError::format(
                path,
                line_no,
                format!("invalid JSON: {e}"),
            )),
        })
    }))
}

fn json_objects(path: &Path) -> Result<Vec<(usize, serde_json::Map<String, Value>)>> {
    json_object_lines(path)?.collect()
}

/// An id field (string or number) under any of `names`.
fn id_field(
    path: &Path,
    line_no: usize,
    object: &serde_json::Map<String, Value>,
    names: &[&str],
) -> Result<String> {
    for name in names {
        match object.get(*name) {
            Some(Value::String(s)) => return Ok(s.clone()),
            Some(Value::Number(n)) => return Ok(n.to_string()),
            Some(_) => {
                return Err(EvalError::format(
                    path,
                    line_no,
                    format!("`{name}` must be a string"),
                ))
            }
            None => {}
        }
    }
    Err(EvalError::format(
        path,
        line_no,
        format!("missing field `{}`", names[0]),
    ))
}

fn text_field(
    path: &Path,
    line_no: usize,
    object: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<String> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(EvalError::format(
            path,
            line_no,
            format!("`{name}` must be a string"),
        )),
    }
}

/// Which layout a data folder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Beir,
    FlagEmbedding,
}

/// A retrieval data set on disk.
#[derive(Debug, Clone)]
pub struct DataSet {
    pub dir: PathBuf,
    pub split: String,
    pub layout: Layout,
}

impl DataSet {
    pub fn open(dir: &Path, split: &str) -> Result<Self> {
        let corpus = dir.join("corpus.jsonl");
        if !corpus.is_file() {
            return Err(EvalError::Invalid(format!(
                "{}: no corpus.jsonl (expected a BEIR folder or FlagEmbedding's layout)",
                dir.display()
            )));
        }
        let layout = if dir.join("qrels").join(format!("{split}.tsv")).is_file() {
            Layout::Beir
        } else if dir.join(format!("{split}_qrels.jsonl")).is_file() {
            Layout::FlagEmbedding
        } else {
            return Err(EvalError::Invalid(format!(
                "{}: no judgments for split `{split}` (qrels/{split}.tsv or {split}_qrels.jsonl)",
                dir.display()
            )));
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            split: split.to_string(),
            layout,
        })
    }

    /// A short name for tables: the folder's name.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.dir.display().to_string())
    }

    pub fn corpus_path(&self) -> PathBuf {
        self.dir.join("corpus.jsonl")
    }

    pub fn qrels(&self) -> Result<Qrels> {
        match self.layout {
            Layout::Beir => read_qrels(&self.dir.join("qrels").join(format!("{}.tsv", self.split))),
            Layout::FlagEmbedding => {
                read_qrels(&self.dir.join(format!("{}_qrels.jsonl", self.split)))
            }
        }
    }

    /// Query id -> text, for the split's queries (BEIR keeps all splits' queries in one file).
    pub fn queries(&self) -> Result<BTreeMap<String, String>> {
        let path = match self.layout {
            Layout::Beir => self.dir.join("queries.jsonl"),
            Layout::FlagEmbedding => self.dir.join(format!("{}_queries.jsonl", self.split)),
        };
        let mut queries = BTreeMap::new();
        for (line_no, object) in json_objects(&path)? {
            let id = id_field(&path, line_no, &object, &["_id", "id"])?;
            let text = text_field(&path, line_no, &object, "text")?;
            queries.insert(id, text);
        }
        Ok(queries)
    }

    /// Streams the corpus, calling `visit(id, text)` for each document whose id `wanted` accepts;
    /// text is `title + " " + text`, stripped, as FlagEmbedding builds it.
    pub fn stream_corpus(
        &self,
        mut wanted: impl FnMut(&str) -> bool,
        mut visit: impl FnMut(String, String),
    ) -> Result<()> {
        let path = self.corpus_path();
        for item in json_object_lines(&path)? {
            let (line_no, object) = item?;
            let id = id_field(&path, line_no, &object, &["_id", "id"])?;
            if !wanted(&id) {
                continue;
            }
            let title = text_field(&path, line_no, &object, "title")?;
            let text = text_field(&path, line_no, &object, "text")?;
            visit(id, format!("{title} {text}").trim().to_string());
        }
        Ok(())
    }
}

/// A query's documents in trec_eval's order: score descending, then document id descending.
pub fn trec_order(docs: &[(String, f64)]) -> Vec<(String, f64)> {
    let mut sorted = docs.to_vec();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    // A document listed twice counts once, at its best position.
    let mut seen = std::collections::HashSet::new();
    sorted.retain(|(d, _)| seen.insert(d.clone()));
    sorted
}
