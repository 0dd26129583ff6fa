//! Request and response bodies of the three APIs. Unknown fields are rejected (422) rather than
//! silently ignored, except the ones the official Cohere and Jina clients send.

use serde::{Deserialize, Serialize};

/// text-embeddings-inference `POST /rerank`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeiRerankRequest {
    pub query: String,
    pub texts: Vec<String>,
    #[serde(default)]
    pub raw_scores: bool,
    #[serde(default)]
    pub return_text: bool,
    #[serde(default = "yes")]
    pub truncate: bool,
    /// TEI's truncation side; only "right" (what FlagEmbedding does) is supported.
    #[serde(default)]
    pub truncation_direction: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub max_length: Option<usize>,
    #[serde(default)]
    pub query_max_length: Option<usize>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub cutoff_layers: Option<Vec<usize>>,
}

#[derive(Debug, Serialize)]
pub struct TeiRank {
    pub index: usize,
    pub score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A Cohere/Jina document: a string or `{"text": ...}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Document {
    Text(String),
    Object(DocumentObject),
}

#[derive(Debug, Deserialize)]
pub struct DocumentObject {
    pub text: String,
}

impl Document {
    pub fn text(&self) -> &str {
        match self {
            Document::Text(t) => t,
            Document::Object(o) => &o.text,
        }
    }
}

/// Cohere (v1, v2) and Jina `POST /v1/rerank`, `POST /v2/rerank`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohereRerankRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub query: String,
    pub documents: Vec<Document>,
    #[serde(default)]
    pub top_n: Option<usize>,
    #[serde(default)]
    pub return_documents: Option<bool>,
    /// Sent by Cohere clients; accepted, not used (documents are scored whole, truncated).
    #[serde(default)]
    pub rank_fields: Option<Vec<String>>,
    #[serde(default)]
    pub max_chunks_per_doc: Option<u64>,
    #[serde(default)]
    pub max_tokens_per_doc: Option<u64>,
    #[serde(default)]
    pub max_length: Option<usize>,
    #[serde(default)]
    pub query_max_length: Option<usize>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub cutoff_layers: Option<Vec<usize>>,
}

#[derive(Debug, Serialize)]
pub struct CohereRerankResponse {
    pub id: String,
    pub model: String,
    pub results: Vec<CohereResult>,
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub struct CohereResult {
    pub index: usize,
    pub relevance_score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentOut>,
}

#[derive(Debug, Serialize)]
pub struct DocumentOut {
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub total_tokens: usize,
}

/// FlagEmbedding-native `POST /score`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    pub pairs: Vec<(String, String)>,
    #[serde(default)]
    pub normalize: bool,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub max_length: Option<usize>,
    #[serde(default)]
    pub query_max_length: Option<usize>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub cutoff_layers: Option<Vec<usize>>,
}

#[derive(Debug, Serialize)]
pub struct ScoreResponse {
    /// A number per pair, or a list per pair when several cutoff layers answer.
    pub scores: Vec<serde_json::Value>,
}

/// Per-request scoring knobs, where the model family supports them.
#[derive(Debug, Default, Clone)]
pub struct Knobs {
    pub max_length: Option<usize>,
    pub query_max_length: Option<usize>,
    pub prompt: Option<String>,
    pub cutoff_layers: Option<Vec<usize>>,
}

/// Every request type carries the same knobs at its top level (serde cannot flatten them into a
/// struct that denies unknown fields).
macro_rules! knobs_of {
    ($($request:ty),*) => {$(
        impl $request {
            pub fn knobs(&self) -> Knobs {
                Knobs {
                    max_length: self.max_length,
                    query_max_length: self.query_max_length,
                    prompt: self.prompt.clone(),
                    cutoff_layers: self.cutoff_layers.clone(),
                }
            }
        }
    )*};
}

knobs_of!(TeiRerankRequest, CohereRerankRequest, ScoreRequest);

fn yes() -> bool {
    true
}
