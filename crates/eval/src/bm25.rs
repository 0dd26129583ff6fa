//! The built-in first stage: BM25 over the corpus with tantivy (k1 = 1.2, b = 0.75, English stemming,
//! title + text as one field). The index is built once per corpus file and reused from the cache folder.

use std::path::{Path, PathBuf};

use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{
    IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::{doc, Index, TantivyDocument};

use crate::cache::fnv64;
use crate::data::{DataSet, Run};
use crate::error::{EvalError, Result};

/// What a report says about this first stage.
pub const DESCRIPTION: &str =
    "BM25 (tantivy; k1 1.2, b 0.75; en_stem tokenizer, CJK as single characters; title + text)";

/// Chinese, Japanese and Korean text has no spaces between words: index each such character as a
/// token of its own (character unigrams), which the whitespace-and-punctuation tokenizer then keeps.
fn split_cjk(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    for c in text.chars() {
        let cjk = matches!(c as u32,
            0x3040..=0x30ff | 0x3400..=0x4dbf | 0x4e00..=0x9fff | 0xac00..=0xd7af | 0xf900..=0xfaff);
        if cjk {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

fn index_error(e: impl std::fmt::Display) -> EvalError {
    EvalError::Index(e.to_string())
}

pub struct Bm25Index {
    index: Index,
}

impl Bm25Index {
    /// Opens the cached index of `data`'s corpus, building it first if needed.
    pub fn open_or_build(data: &DataSet, cache_dir: &Path) -> Result<Self> {
        let corpus = data.corpus_path();
        let meta = std::fs::metadata(&corpus).map_err(|e| EvalError::io(&corpus, e))?;
        let canonical = corpus.canonicalize().unwrap_or(corpus.clone());
        let key = format!(
            "{DESCRIPTION}|{}|{}|{:?}",
            canonical.display(),
            meta.len(),
            meta.modified().ok()
        );
        let dir: PathBuf = cache_dir.join("bm25").join(format!("{:016x}", fnv64(&key)));
        if dir.join("complete").is_file() {
            let index = Index::open_in_dir(&dir).map_err(index_error)?;
            return Ok(Self { index });
        }
        tracing::info!(
            "building the BM25 index of {} in {}",
            corpus.display(),
            dir.display()
        );
        let building = dir.with_extension("building");
        let _ = std::fs::remove_dir_all(&building);
        std::fs::create_dir_all(&building).map_err(|e| EvalError::io(&building, e))?;
        let mut schema = Schema::builder();
        let id = schema.add_text_field("id", STRING | STORED);
        let body = schema.add_text_field(
            "body",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("en_stem")
                    .set_index_option(IndexRecordOption::WithFreqs),
            ),
        );
        let index = Index::create_in_dir(&building, schema.build()).map_err(index_error)?;
        let mut writer = index.writer(64_000_000).map_err(index_error)?;
        let mut failure = None;
        data.stream_corpus(
            |_| true,
            |doc_id, text| {
                if failure.is_none() {
                    if let Err(e) =
                        writer.add_document(doc!(id => doc_id, body => split_cjk(&text)))
                    {
                        failure = Some(index_error(e));
                    }
                }
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        writer.commit().map_err(index_error)?;
        drop(writer);
        drop(index);
        std::fs::write(building.join("complete"), "").map_err(|e| EvalError::io(&building, e))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&building, &dir).map_err(|e| EvalError::io(&dir, e))?;
        let index = Index::open_in_dir(&dir).map_err(index_error)?;
        Ok(Self { index })
    }

    /// The top `k` documents of each query.
    pub fn search(&self, queries: &[(String, String)], k: usize) -> Result<Run> {
        let schema = self.index.schema();
        let id = schema.get_field("id").map_err(index_error)?;
        let body = schema.get_field("body").map_err(index_error)?;
        let reader = self.index.reader().map_err(index_error)?;
        let searcher = reader.searcher();
        let parser = QueryParser::for_index(&self.index, vec![body]);
        let mut run = Run::new();
        for (qid, text) in queries {
            // Plain words only: no query syntax (operators, fields, phrases) from the user's text.
            let words: String = split_cjk(text)
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        ' '
                    }
                })
                .collect();
            let (query, _) = parser.parse_query_lenient(&words);
            let hits = searcher
                .search(&query, &TopDocs::with_limit(k.max(1)))
                .map_err(index_error)?;
            let mut docs = Vec::with_capacity(hits.len());
            for (score, address) in hits {
                let stored: TantivyDocument = searcher.doc(address).map_err(index_error)?;
                if let Some(doc_id) = stored.get_first(id).and_then(|v| v.as_str()) {
                    docs.push((doc_id.to_string(), f64::from(score)));
                }
            }
            run.insert(qid.clone(), docs);
        }
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cjk_characters_become_tokens() {
        assert_eq!(super::split_cjk("大熊猫 panda"), " 大  熊  猫  panda");
        assert_eq!(super::split_cjk("plain text"), "plain text");
    }
}
