//! `GET /openapi.json`: the API described for clients and tools.

use serde_json::{json, Value};

fn post(summary: &str, request: Value, response: Value) -> Value {
    json!({"post": {
        "summary": summary,
        "requestBody": {"required": true, "content": {"application/json": {"schema": request}}},
        "responses": {
            "200": {"description": "scores", "content": {"application/json": {"schema": response}}},
            "4XX": {"$ref": "#/components/responses/Error"},
            "5XX": {"$ref": "#/components/responses/Error"}
        }
    }})
}

fn get(summary: &str) -> Value {
    json!({"get": {"summary": summary, "responses": {"200": {"description": "OK"}}}})
}

pub fn spec() -> Value {
    let knobs = json!({
        "max_length": {"type": "integer", "minimum": 1},
        "query_max_length": {"type": "integer", "minimum": 1},
        "prompt": {"type": "string", "description": "LLM rerankers only"},
        "cutoff_layers": {"type": "array", "items": {"type": "integer"}, "description": "layerwise reranker only"},
        "model": {"type": "string"}
    });
    let with_knobs = |mut props: Value| {
        props
            .as_object_mut()
            .unwrap()
            .extend(knobs.as_object().unwrap().clone());
        props
    };
    let document = json!({"oneOf": [{"type": "string"}, {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}]});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "bge-rerank", "version": env!("CARGO_PKG_VERSION")},
        "paths": {
            "/rerank": post(
                "Rerank texts against a query (text-embeddings-inference API)",
                json!({"type": "object", "required": ["query", "texts"], "additionalProperties": false,
                       "properties": with_knobs(json!({
                           "query": {"type": "string"}, "texts": {"type": "array", "items": {"type": "string"}},
                           "raw_scores": {"type": "boolean", "default": false},
                           "return_text": {"type": "boolean", "default": false},
                           "truncate": {"type": "boolean", "default": true},
                           "truncation_direction": {"type": "string", "enum": ["right", "Right"]}}))}),
                json!({"type": "array", "items": {"type": "object", "properties": {
                    "index": {"type": "integer"}, "score": {"type": "number"}, "text": {"type": "string"}}}})),
            "/v1/rerank": post("Rerank documents (Cohere / Jina API)", json!({"$ref": "#/components/schemas/CohereRequest"}), json!({"$ref": "#/components/schemas/CohereResponse"})),
            "/v2/rerank": post("Rerank documents (Cohere v2 API)", json!({"$ref": "#/components/schemas/CohereRequest"}), json!({"$ref": "#/components/schemas/CohereResponse"})),
            "/score": post(
                "Score (query, passage) pairs as FlagEmbedding's compute_score",
                json!({"type": "object", "required": ["pairs"], "additionalProperties": false,
                       "properties": with_knobs(json!({
                           "pairs": {"type": "array", "items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}},
                           "normalize": {"type": "boolean", "default": false}}))}),
                json!({"type": "object", "properties": {"scores": {"type": "array"}}})),
            "/tokenize": post(
                "The tokens of texts as the model's tokenizer cuts them (text-embeddings-inference API)",
                json!({"type": "object", "required": ["inputs"], "additionalProperties": false, "properties": {
                    "inputs": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                    "add_special_tokens": {"type": "boolean", "default": true},
                    "model": {"type": "string"}}}),
                json!({"type": "array", "items": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "text": {"type": "string"}, "special": {"type": "boolean"},
                    "start": {"type": "integer", "nullable": true}, "stop": {"type": "integer", "nullable": true}}}}})),
            "/decode": post(
                "Token ids back to text (text-embeddings-inference API)",
                json!({"type": "object", "required": ["ids"], "additionalProperties": false, "properties": {
                    "ids": {"oneOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}]},
                    "skip_special_tokens": {"type": "boolean", "default": true},
                    "model": {"type": "string"}}}),
                json!({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})),
            "/docs": get("This API, browsable (Redoc over /openapi.json)"),
            "/health": get("200 once the model is loaded; 503 while loading or draining"),
            "/info": get("Served models, precision and limits"),
            "/metrics": get("Prometheus metrics"),
            "/openapi.json": get("This document")
        },
        "components": {
            "schemas": {
                "CohereRequest": {"type": "object", "required": ["query", "documents"],
                    "properties": with_knobs(json!({
                        "query": {"type": "string"}, "documents": {"type": "array", "items": document},
                        "top_n": {"type": "integer", "minimum": 0}, "return_documents": {"type": "boolean"},
                        "rank_fields": {"type": "array", "items": {"type": "string"}},
                        "max_chunks_per_doc": {"type": "integer"}, "max_tokens_per_doc": {"type": "integer"}}))},
                "CohereResponse": {"type": "object", "properties": {
                    "id": {"type": "string"}, "model": {"type": "string"},
                    "results": {"type": "array", "items": {"type": "object", "properties": {
                        "index": {"type": "integer"}, "relevance_score": {"type": "number"},
                        "document": {"type": "object", "properties": {"text": {"type": "string"}}}}}},
                    "usage": {"type": "object", "properties": {"total_tokens": {"type": "integer"}}}}}
            },
            "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"error": {"type": "string"}, "type": {"type": "string"}, "error_type": {"type": "string"}}}}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}
