//! The HTTP handlers: parse and check a request, hand its pairs to the model's scheduler, shape the
//! answer for the API that was called.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bge_rerank_engine::{finish_score, ranking, InputOptions};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::api::*;
use crate::error::ApiError;
use crate::scheduler::{build_inputs, JobOutput, Pairs, ScoreJob};
use crate::state::{AppState, Limits, ServedModel};

/// Parses a JSON body: malformed JSON (or not UTF-8) is 400, well-formed but wrong (types, unknown
/// or missing fields, negative numbers) is 422.
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::validation(format!("invalid request: {e}")),
        _ => ApiError::bad_request(format!("malformed JSON: {e}")),
    })
}

/// Checks shared by every scoring route: a list to score, within the limit. An empty query (or
/// passage) is scored, on every route and in the CLI, as FlagEmbedding scores it: the fixtures hold
/// its numbers for "" and "   ".
fn check_texts<'a>(
    state: &AppState,
    texts: impl ExactSizeIterator<Item = &'a str>,
    field: &str,
) -> Result<(), ApiError> {
    let count = texts.len();
    if count == 0 {
        return Err(ApiError::validation(format!("`{field}` is empty")));
    }
    if count > state.limits.max_documents {
        return Err(ApiError::too_large(format!(
            "{count} {field} exceed the limit of {} per request (--max-documents)",
            state.limits.max_documents
        )));
    }
    Ok(())
}

fn input_options(limits: &Limits, knobs: &Knobs) -> Result<InputOptions, ApiError> {
    // Inputs longer than the model's positions are refused by the engine when they are built.
    let max_length = knobs.max_length.unwrap_or(limits.default_max_length);
    if max_length == 0 {
        return Err(ApiError::validation("max_length must be at least 1"));
    }
    Ok(InputOptions {
        max_length,
        query_max_length: knobs.query_max_length,
        prompt: knobs.prompt.clone(),
        passage_max_length: knobs.passage_max_length,
    })
}

/// Tokenizes pairs off the model's worker, sends them to it and waits (bounded by the request
/// timeout) for their raw scores.
async fn score_pairs(
    state: &AppState,
    model: &ServedModel,
    pairs: Vec<(String, String)>,
    knobs: &Knobs,
    truncate: bool,
) -> Result<JobOutput, ApiError> {
    let knobs = &knobs.or(&model.defaults);
    let work = Pairs {
        pairs,
        options: input_options(&state.limits, knobs)?,
        cutoff_layers: knobs.cutoff_layers.clone(),
        truncate,
    };
    let (reranker, metrics) = (model.reranker.clone(), state.metrics.clone());
    let started = std::time::Instant::now();
    let (inputs, layers) =
        tokio::task::spawn_blocking(move || build_inputs(&reranker, &work, &metrics))
            .await
            .map_err(|e| ApiError::internal(format!("tokenization failed: {e}")))??;
    let tokenization = started.elapsed();
    let (reply, answer) = oneshot::channel();
    model.scheduler.submit(ScoreJob {
        inputs,
        layers,
        reply,
    })?;
    let remaining = state.limits.request_timeout.saturating_sub(tokenization);
    match tokio::time::timeout(remaining, answer).await {
        Ok(Ok(result)) => result.map(|mut output| {
            output.tokenization = tokenization;
            output
        }),
        Ok(Err(_)) => Err(ApiError::internal("the model worker dropped the request")),
        // Dropping `answer` tells the worker to skip this request's remaining pairs.
        Err(_) => Err(ApiError::timeout(
            state.limits.request_timeout.as_secs_f64(),
        )),
    }
}

/// Scores of a ranking request, one per pair (`score_for_ranking` checked that there is one).
fn single_scores(output: &JobOutput, normalize: bool) -> Vec<f64> {
    (output.scores.iter())
        .map(|layers| finish_score(layers[0], normalize))
        .collect()
}

/// Ranking orders by one score: a request for several layers is refused before it is scored.
fn check_ranking_layers(model: &ServedModel, knobs: &Knobs) -> Result<(), ApiError> {
    let knobs = &knobs.or(&model.defaults);
    let layers = model
        .reranker
        .resolve_layers(knobs.cutoff_layers.as_deref())
        .and_then(ranking::one_score_per_pair);
    layers
        .map(|_| ())
        .map_err(|e| ApiError::validation(e.to_string()))
}

pub async fn tei_rerank(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: TeiRerankRequest = parse_body(&body)?;
    if request
        .truncation_direction
        .as_deref()
        .is_some_and(|d| !d.eq_ignore_ascii_case("right"))
    {
        return Err(ApiError::validation(
            "only truncation_direction \"right\" is supported",
        ));
    }
    check_texts(&state, request.texts.iter().map(String::as_str), "texts")?;
    let model = state.model(request.model.as_deref())?;
    let pairs = request
        .texts
        .iter()
        .map(|t| (request.query.clone(), t.clone()))
        .collect();
    check_ranking_layers(model, &request.knobs())?;
    let output = score_pairs(&state, model, pairs, &request.knobs(), request.truncate).await?;
    let scores = single_scores(&output, !request.raw_scores);
    let ranks: Vec<TeiRank> = ranking::rank(&scores)
        .into_iter()
        .map(|index| TeiRank {
            index,
            score: scores[index],
            text: request.return_text.then(|| request.texts[index].clone()),
        })
        .collect();
    Ok(with_timings(Json(ranks).into_response(), &output))
}

static RESPONSE_ID: AtomicU64 = AtomicU64::new(1);

pub async fn cohere_rerank(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CohereRerankRequest = parse_body(&body)?;
    let texts = request
        .documents
        .iter()
        .enumerate()
        .map(|(i, d)| {
            d.ranked_text(request.rank_fields.as_deref())
                .map_err(|e| ApiError::validation(format!("document {i} {e}")))
        })
        .collect::<Result<Vec<String>, ApiError>>()?;
    check_texts(&state, texts.iter().map(String::as_str), "documents")?;
    let model = state.model(request.model.as_deref())?;
    let pairs = texts
        .into_iter()
        .map(|text| (request.query.clone(), text))
        .collect();
    let knobs = Knobs {
        passage_max_length: request.max_tokens_per_doc,
        ..request.knobs()
    };
    check_ranking_layers(model, &knobs)?;
    let output = score_pairs(&state, model, pairs, &knobs, true).await?;
    let scores = single_scores(&output, true);
    let top_n = request.top_n.unwrap_or(scores.len());
    let return_documents = request.return_documents.unwrap_or(false);
    let results = ranking::rank(&scores)
        .into_iter()
        .take(top_n)
        .map(|index| CohereResult {
            index,
            relevance_score: scores[index],
            document: return_documents.then(|| request.documents[index].returned()),
        })
        .collect();
    let id = format!(
        "{:x}-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        RESPONSE_ID.fetch_add(1, Ordering::Relaxed)
    );
    let response = Json(CohereRerankResponse {
        id,
        model: model.name.clone(),
        results,
        usage: Usage {
            total_tokens: output.total_tokens,
        },
    });
    Ok(with_timings(response.into_response(), &output))
}

pub async fn score(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let request: ScoreRequest = parse_body(&body)?;
    check_texts(
        &state,
        request.pairs.iter().map(|(_, p)| p.as_str()),
        "pairs",
    )?;
    let model = state.model(request.model.as_deref())?;
    let knobs = request.knobs();
    let output = score_pairs(&state, model, request.pairs, &knobs, true).await?;
    let scores = output
        .scores
        .iter()
        .map(|layers| {
            let values: Vec<f64> = layers
                .iter()
                .map(|&s| finish_score(s, request.normalize))
                .collect();
            ranking::scores_json(&values)
        })
        .collect();
    Ok(with_timings(
        Json(ScoreResponse { scores }).into_response(),
        &output,
    ))
}

/// What a scored request cost, for the access log (read by the `observe` middleware).
#[derive(Debug, Clone, Copy)]
pub struct RequestCost {
    pub pairs: usize,
    pub tokens: usize,
    pub queue: std::time::Duration,
    pub inference: std::time::Duration,
}

/// The response with its timings in headers, as TEI sends them (milliseconds:
/// `x-tokenization-time`, `x-queue-time`, `x-inference-time`), and its cost attached for the access
/// log.
fn with_timings(mut response: Response, output: &JobOutput) -> Response {
    let ms = |d: std::time::Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    for (name, value) in [
        ("x-tokenization-time", ms(output.tokenization)),
        ("x-queue-time", ms(output.queue)),
        ("x-inference-time", ms(output.inference)),
        ("x-total-tokens", output.total_tokens.to_string()),
    ] {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response.extensions_mut().insert(RequestCost {
        pairs: output.scores.len(),
        tokens: output.total_tokens,
        queue: output.queue,
        inference: output.inference,
    });
    response
}

/// The tokens of each input, as the model's tokenizer cuts it (character offsets).
pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: TokenizeRequest = parse_body(&body)?;
    let (inputs, _) = request.inputs.into_items();
    check_texts(&state, inputs.iter().map(String::as_str), "inputs")?;
    let tokenizer = state.model(request.model.as_deref())?.reranker.tokenizer();
    let mut all = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let encoding = tokenizer
            .encode_char_offsets(input.as_str(), request.add_special_tokens)
            .map_err(|e| ApiError::validation(format!("cannot tokenize: {e}")))?;
        let chars: Vec<char> = input.chars().collect();
        let tokens: Vec<Token> = (0..encoding.len())
            .map(|i| {
                let id = encoding.get_ids()[i];
                let special = encoding.get_special_tokens_mask()[i] == 1;
                let (start, stop) = encoding.get_offsets()[i];
                let text = match special {
                    true => tokenizer.id_to_token(id).unwrap_or_default(),
                    false => chars[start.min(chars.len())..stop.min(chars.len())]
                        .iter()
                        .collect(),
                };
                let (start, stop) = if special {
                    (None, None)
                } else {
                    (Some(start), Some(stop))
                };
                Token {
                    id,
                    text,
                    special,
                    start,
                    stop,
                }
            })
            .collect();
        all.push(tokens);
    }
    Ok(Json(all).into_response())
}

/// Token ids back to text: one list of ids gives a string, a list of lists a list of strings.
pub async fn decode(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let request: DecodeRequest = parse_body(&body)?;
    let tokenizer = state.model(request.model.as_deref())?.reranker.tokenizer();
    let (ids, alone) = request.ids.into_items();
    let vocabulary = tokenizer.get_vocab_size(true) as u32;
    let texts = ids
        .iter()
        .map(|ids| {
            if let Some(bad) = ids.iter().find(|&&id| id >= vocabulary) {
                return Err(ApiError::validation(format!(
                    "token id {bad} is outside the vocabulary of {vocabulary}"
                )));
            }
            tokenizer
                .decode(ids, request.skip_special_tokens)
                .map_err(|e| ApiError::validation(format!("cannot decode: {e}")))
        })
        .collect::<Result<Vec<String>, ApiError>>()?;
    Ok(match alone {
        true => Json(&texts[0]).into_response(),
        false => Json(texts).into_response(),
    })
}

/// The API, browsable: Redoc over `/openapi.json` (the page loads Redoc from its CDN).
pub async fn docs() -> Response {
    axum::response::Html(
        "<!DOCTYPE html><html><head><title>bge-rerank API</title><meta charset=\"utf-8\"/></head>\
         <body><redoc spec-url=\"/openapi.json\"></redoc>\
         <script src=\"https://cdn.redoc.ly/redoc/latest/bundles/redoc.standalone.js\"></script>\
         </body></html>",
    )
    .into_response()
}

pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response()
    } else if state.is_draining() {
        ApiError::unavailable("shutting down").into_response()
    } else {
        ApiError::unavailable("loading the model").into_response()
    }
}

pub async fn info(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let models = state.models()?;
    Ok(Json(serde_json::json!({
        "name": "bge-rerank",
        "version": env!("CARGO_PKG_VERSION"),
        "models": models.iter().map(|m| m.describe()).collect::<Vec<_>>(),
        "limits": state.limits.describe(),
    }))
    .into_response())
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        state.metrics.render(),
    )
        .into_response()
}

pub async fn openapi() -> Response {
    Json(crate::openapi::spec()).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json")
}
