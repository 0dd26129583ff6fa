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

/// A Cohere/Jina document: a string, or an object of fields (`{"text": ...}`, or any fields that
/// `rank_fields` names).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Document {
    Text(String),
    Object(serde_json::Map<String, serde_json::Value>),
}

impl Document {
    /// The text scored: a string as it is; an object's `text` field, or with `rank_fields` those
    /// fields as `field: value` lines in the order given (as Cohere reads structured documents).
    pub fn ranked_text(&self, rank_fields: Option<&[String]>) -> Result<String, String> {
        let object = match self {
            Document::Text(text) => return Ok(text.clone()),
            Document::Object(object) => object,
        };
        let field = |name: &str| match object.get(name) {
            Some(serde_json::Value::String(value)) => Ok(value.as_str()),
            Some(_) => Err(format!("field `{name}` is not a string")),
            None => Err(format!("has no field `{name}`")),
        };
        match rank_fields {
            None => field("text").map(str::to_string),
            Some(names) => names
                .iter()
                .map(|name| field(name).map(|value| format!("{name}: {value}")))
                .collect::<Result<Vec<_>, _>>()
                .map(|lines| lines.join("\n")),
        }
    }

    /// The document as a response returns it: `{"text"}` for a string, the object as given.
    pub fn returned(&self) -> serde_json::Value {
        match self {
            Document::Text(text) => serde_json::json!({ "text": text }),
            Document::Object(object) => serde_json::Value::Object(object.clone()),
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
    /// The fields of object documents to rank on (Cohere v1), in order.
    #[serde(default)]
    pub rank_fields: Option<Vec<String>>,
    /// Sent by Cohere v1 clients; accepted, not used (documents are scored whole, truncated).
    #[serde(default)]
    pub max_chunks_per_doc: Option<u64>,
    /// Each document cut to this many tokens before scoring (Cohere v2).
    #[serde(default)]
    pub max_tokens_per_doc: Option<usize>,
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
    /// `{"text"}` for a string document, an object document as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<serde_json::Value>,
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
    /// Tokens of each document kept at most (Cohere's `max_tokens_per_doc`).
    pub passage_max_length: Option<usize>,
    pub prompt: Option<String>,
    pub cutoff_layers: Option<Vec<usize>>,
}

impl Knobs {
    /// These knobs, each one a request leaves out taken from `defaults` (a served model's).
    pub fn or(&self, defaults: &Knobs) -> Knobs {
        Knobs {
            max_length: self.max_length.or(defaults.max_length),
            query_max_length: self.query_max_length.or(defaults.query_max_length),
            passage_max_length: self.passage_max_length.or(defaults.passage_max_length),
            prompt: self.prompt.clone().or_else(|| defaults.prompt.clone()),
            cutoff_layers: self
                .cutoff_layers
                .clone()
                .or_else(|| defaults.cutoff_layers.clone()),
        }
    }
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
                    passage_max_length: None,
                    prompt: self.prompt.clone(),
                    cutoff_layers: self.cutoff_layers.clone(),
                }
            }
        }
    )*};
}

knobs_of!(TeiRerankRequest, CohereRerankRequest, ScoreRequest);

/// One text or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The items, and whether one was given alone (answered alone).
    pub fn into_items(self) -> (Vec<T>, bool) {
        match self {
            OneOrMany::One(item) => (vec![item], true),
            OneOrMany::Many(items) => (items, false),
        }
    }
}

/// text-embeddings-inference `POST /tokenize`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    pub inputs: OneOrMany<String>,
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
    #[serde(default)]
    pub model: Option<String>,
}

/// One token of `/tokenize`: character offsets into its input (`None` for added special tokens).
#[derive(Debug, Serialize)]
pub struct Token {
    pub id: u32,
    pub text: String,
    pub special: bool,
    pub start: Option<usize>,
    pub stop: Option<usize>,
}

/// text-embeddings-inference `POST /decode`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeRequest {
    pub ids: OneOrMany<Vec<u32>>,
    #[serde(default = "yes")]
    pub skip_special_tokens: bool,
    #[serde(default)]
    pub model: Option<String>,
}

fn yes() -> bool {
    true
}
