//! A real server on 127.0.0.1 (random port) with the fixture models, called over real HTTP.

use std::path::PathBuf;
use std::time::Duration;

use bge_rerank_engine::{LoadOptions, Reranker, ScoreOptions};
use bge_rerank_server::{start, Limits, ModelSpec, RunningServer, ServeConfig};
use serde_json::{json, Value};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

async fn serve_with(models: &[&str], limits: Limits, api_key: Option<&str>) -> RunningServer {
    let config = ServeConfig {
        models: models
            .iter()
            .map(|m| ModelSpec::parse(m, LoadOptions::default()))
            .collect(),
        addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: None,
        limits,
        api_key: api_key.map(str::to_string),
    };
    start(config).await.expect("server starts")
}

async fn serve() -> RunningServer {
    serve_with(
        &[&format!("xlmr={}", fixture("xlmr-reranker"))],
        Limits::default(),
        None,
    )
    .await
}

fn url(server: &RunningServer, path: &str) -> String {
    format!("http://{}{}", server.addr, path)
}

async fn post(server: &RunningServer, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url(server, path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post_raw(server: &RunningServer, path: &str, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url(server, path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

const QUERY: &str = "what is panda?";
const DOCS: [&str; 4] = [
    "hi",
    "The giant panda (Ailuropoda melanoleuca) is a bear species endemic to China.",
    "Paris is the capital of France.",
    "pandas eat bamboo",
];

fn engine_scores(model: &str, docs: &[&str], normalize: bool) -> Vec<f64> {
    let reranker = Reranker::load(&fixture(model), &LoadOptions::default()).unwrap();
    let pairs: Vec<(&str, &str)> = docs.iter().map(|d| (QUERY, *d)).collect();
    let options = ScoreOptions {
        normalize,
        ..Default::default()
    };
    reranker.compute_score(&pairs, &options).unwrap()
}

#[tokio::test]
async fn every_route_answers() {
    let server = serve().await;
    let raw = engine_scores("xlmr-reranker", &DOCS, false);
    let sigmoid = engine_scores("xlmr-reranker", &DOCS, true);

    // FlagEmbedding-native: input order, the same numbers as `bge-rerank score`.
    let pairs: Vec<[&str; 2]> = DOCS.iter().map(|d| [QUERY, *d]).collect();
    let (status, body) = post(&server, "/score", json!({"pairs": pairs})).await;
    assert_eq!(status, 200, "{body}");
    let scores: Vec<f64> = body["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(scores, raw);
    let (_, body) = post(
        &server,
        "/score",
        json!({"pairs": pairs, "normalize": true}),
    )
    .await;
    assert_eq!(body["scores"][0].as_f64().unwrap(), sigmoid[0]);

    // TEI: sorted best first, sigmoid unless raw_scores.
    let (status, body) = post(
        &server,
        "/rerank",
        json!({"query": QUERY, "texts": DOCS, "return_text": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ranks = body.as_array().unwrap();
    assert_eq!(ranks.len(), 4);
    for pair in ranks.windows(2) {
        assert!(pair[0]["score"].as_f64() >= pair[1]["score"].as_f64());
    }
    for rank in ranks {
        let i = rank["index"].as_u64().unwrap() as usize;
        assert_eq!(rank["score"].as_f64().unwrap(), sigmoid[i]);
        assert_eq!(rank["text"], DOCS[i]);
    }
    let (_, body) = post(
        &server,
        "/rerank",
        json!({"query": QUERY, "texts": DOCS, "raw_scores": true}),
    )
    .await;
    let first = &body[0];
    assert_eq!(
        first["score"].as_f64().unwrap(),
        raw[first["index"].as_u64().unwrap() as usize]
    );
    assert!(first.get("text").is_none());

    // Cohere client body (v1 sends rank_fields / max_chunks_per_doc) and Jina's {"text"} documents.
    let cohere = json!({"model": "xlmr", "query": QUERY, "documents": DOCS, "top_n": 2,
                        "return_documents": true, "max_chunks_per_doc": 10, "rank_fields": ["text"]});
    let (status, body) = post(&server, "/v1/rerank", cohere).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(body["model"], "xlmr");
    assert!(body["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let best = results[0]["index"].as_u64().unwrap() as usize;
    assert_eq!(
        results[0]["relevance_score"].as_f64().unwrap(),
        sigmoid[best]
    );
    assert_eq!(results[0]["document"]["text"], DOCS[best]);
    // Cohere and LangChain clients always send a model name: with one model served it is
    // informational, and the answer names the served model.
    let named = json!({"model": "rerank-v3.5", "query": QUERY, "documents": DOCS});
    let (status, body) = post(&server, "/v2/rerank", named).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "xlmr");
    let jina = json!({"model": "xlmr", "query": QUERY,
                      "documents": DOCS.iter().map(|d| json!({"text": d})).collect::<Vec<_>>(),
                      "top_n": 3, "return_documents": false});
    let (status, body) = post(&server, "/v2/rerank", jina).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 3);
    assert!(body["results"][0].get("document").is_none());

    let client = reqwest::Client::new();
    let health = client.get(url(&server, "/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let info: Value = client
        .get(url(&server, "/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["models"][0]["name"], "xlmr");
    assert_eq!(
        info["models"][0]["architecture"],
        "XLMRobertaForSequenceClassification"
    );
    assert_eq!(info["limits"]["max_documents"], 1000);
    // Timings in headers, as TEI sends them.
    let response = client
        .post(url(&server, "/rerank"))
        .json(&json!({"query": QUERY, "texts": DOCS}))
        .send()
        .await
        .unwrap();
    for header in [
        "x-tokenization-time",
        "x-queue-time",
        "x-inference-time",
        "x-total-tokens",
    ] {
        let value = response.headers().get(header).map(|v| v.to_str().unwrap());
        assert!(
            value.is_some_and(|v| v.parse::<f64>().is_ok()),
            "{header}: {value:?}"
        );
    }
    let response = client.get(url(&server, "/metrics")).send().await.unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let metrics = response.text().await.unwrap();
    // Prometheus' own text format, as its parser reads it: every family typed.
    let scrape =
        prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str| {
        let sample = scrape.samples.iter().find(|s| s.metric == name);
        sample.map(|s| s.value.clone())
    };
    use prometheus_parse::Value as Sampled;
    assert!(
        matches!(
            value("bge_rerank_requests_total"),
            Some(Sampled::Counter(_))
        ),
        "{metrics}"
    );
    assert!(
        matches!(
            value("bge_rerank_pairs_scored_total"),
            Some(Sampled::Counter(_))
        ),
        "{metrics}"
    );
    assert!(
        matches!(value("bge_rerank_queue_depth"), Some(Sampled::Gauge(_))),
        "{metrics}"
    );
    assert!(
        matches!(
            value("bge_rerank_request_duration_seconds"),
            Some(Sampled::Histogram(_))
        ),
        "{metrics}"
    );
    // This parser reports a histogram's _sum and _count samples untyped; nothing else may be.
    let untyped: Vec<&str> = scrape
        .samples
        .iter()
        .filter(|s| matches!(s.value, Sampled::Untyped(_)))
        .map(|s| s.metric.as_str())
        .filter(|m| !(m.ends_with("_sum") || m.ends_with("_count")))
        .collect();
    assert!(untyped.is_empty(), "untyped {untyped:?} in:\n{metrics}");
    for name in [
        "bge_rerank_requests_total",
        "bge_rerank_request_duration_seconds",
        "bge_rerank_queue_duration_seconds",
        "bge_rerank_batch_pairs",
        "bge_rerank_batch_tokens",
        "bge_rerank_queue_depth",
        "bge_rerank_pairs_truncated",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert!(metrics.contains("route=\"/rerank\""), "{metrics}");
    let spec: Value = client
        .get(url(&server, "/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["paths"]["/v1/rerank"]["post"].is_object());
    let missing = client.get(url(&server, "/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn several_models_per_request_knobs_and_layers() {
    let server = serve_with(
        &[
            &format!("xlmr={}", fixture("xlmr-reranker")),
            &format!("layerwise={}", fixture("minicpm-layerwise-reranker")),
            &format!("gemma={}", fixture("gemma-reranker")),
        ],
        Limits::default(),
        None,
    )
    .await;
    let pairs: Vec<[&str; 2]> = DOCS.iter().map(|d| [QUERY, *d]).collect();
    // Requests asking for different layers, batched together, each get their own.
    let (a, b) = tokio::join!(
        post(
            &server,
            "/score",
            json!({"model": "layerwise", "pairs": pairs, "cutoff_layers": [8]})
        ),
        post(
            &server,
            "/score",
            json!({"model": "layerwise", "pairs": pairs, "cutoff_layers": [10, 9]})
        ),
    );
    assert_eq!(a.0, 200, "{}", a.1);
    assert_eq!(b.0, 200, "{}", b.1);
    let reranker = Reranker::load(
        &fixture("minicpm-layerwise-reranker"),
        &LoadOptions::default(),
    )
    .unwrap();
    let plain: Vec<(&str, &str)> = DOCS.iter().map(|d| (QUERY, *d)).collect();
    let expect = |layers: Vec<usize>| {
        let options = ScoreOptions {
            cutoff_layers: Some(layers),
            ..Default::default()
        };
        reranker
            .compute_scores(&plain, &options, &|_| Ok(()))
            .unwrap()
    };
    for (i, want) in expect(vec![8]).iter().enumerate() {
        assert!((a.1["scores"][i].as_f64().unwrap() - want[0]).abs() < 1e-5);
    }
    for (i, want) in expect(vec![9, 10]).iter().enumerate() {
        let got: Vec<f64> = b.1["scores"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), 2);
        assert!((got[0] - want[0]).abs() < 1e-5 && (got[1] - want[1]).abs() < 1e-5);
    }
    // A prompt for the LLM reranker, refused for the cross-encoder; layers refused where there are none.
    let (status, body) = post(
        &server,
        "/rerank",
        json!({"model": "gemma", "query": QUERY, "texts": DOCS, "prompt": "Yes or No?"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &server,
        "/rerank",
        json!({"query": QUERY, "texts": DOCS, "prompt": "Yes or No?"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = post(
        &server,
        "/score",
        json!({"model": "gemma", "pairs": pairs, "cutoff_layers": [1]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("layerwise"));
    let (status, body) = post(
        &server,
        "/v1/rerank",
        json!({"model": "nope", "query": QUERY, "documents": DOCS}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("xlmr"));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_the_sequential_answers() {
    let server = serve().await;
    let docs: Vec<String> = (0..40)
        .map(|i| format!("{} {}", DOCS[i % 4], "bamboo forest ".repeat(i % 7)))
        .collect();
    // Reference, one request at a time.
    let mut expected = Vec::new();
    for size in 1..=8 {
        let (status, body) = post(
            &server,
            "/rerank",
            json!({"query": QUERY, "texts": &docs[..size * 5]}),
        )
        .await;
        assert_eq!(status, 200);
        expected.push(body);
    }
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for c in 0..64 {
        let (client, docs, expected, base) = (
            client.clone(),
            docs.clone(),
            expected.clone(),
            url(&server, "/rerank"),
        );
        tasks.push(tokio::spawn(async move {
            for r in 0..20 {
                let size = (c + r) % 8 + 1;
                let response = client
                    .post(&base)
                    .json(&json!({"query": QUERY, "texts": &docs[..size * 5]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let body: Value = response.json().await.unwrap();
                let want = &expected[size - 1];
                assert_eq!(body.as_array().unwrap().len(), size * 5);
                for (got, want) in body
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(want.as_array().unwrap())
                {
                    assert_eq!(got["index"], want["index"]);
                    assert!(
                        (got["score"].as_f64().unwrap() - want["score"].as_f64().unwrap()).abs()
                            < 1e-6
                    );
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gets_429_and_every_request_an_answer() {
    let limits = Limits {
        max_concurrent_requests: 2,
        ..Limits::default()
    };
    let server = serve_with(&[&fixture("xlmr-reranker")], limits, None).await;
    let long: Vec<String> = (0..200)
        .map(|i| format!("document {i} {}", "panda bamboo ".repeat(60)))
        .collect();
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let (client, long, target) = (client.clone(), long.clone(), url(&server, "/rerank"));
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(&target)
                .json(&json!({"query": QUERY, "texts": long}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            if status == 429 {
                assert_eq!(response.headers()["retry-after"], "1");
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["type"], "overloaded");
            }
            status
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "some requests are refused: {statuses:?}"
    );
    assert!(
        statuses.contains(&200),
        "some requests are served: {statuses:?}"
    );
    // And the server is fine afterwards.
    let (status, _) = post(&server, "/rerank", json!({"query": QUERY, "texts": DOCS})).await;
    assert_eq!(status, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let limits = Limits {
        max_documents: 100,
        max_body_bytes: 4 * 1024 * 1024,
        ..Limits::default()
    };
    let server = serve_with(&[&fixture("xlmr-reranker")], limits, None).await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "/rerank",
            b"{\"query\": \"q\", \"texts\": [".to_vec(),
            400,
            "bad_request",
        ),
        ("/rerank", b"not json at all".to_vec(), 400, "bad_request"),
        (
            "/rerank",
            b"{\"query\": \"q\", \"texts\": [\"\xff\xfe\"]}".to_vec(),
            400,
            "bad_request",
        ),
        (
            "/rerank",
            json!({"query": 3, "texts": ["a"]}).to_string().into_bytes(),
            422,
            "validation",
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": []}).to_string().into_bytes(),
            422,
            "validation",
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": ["a"], "colour": "red"})
                .to_string()
                .into_bytes(),
            422,
            "validation",
        ),
        (
            "/rerank",
            json!({"texts": ["a"]}).to_string().into_bytes(),
            422,
            "validation",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": ["a"], "top_n": -1})
                .to_string()
                .into_bytes(),
            422,
            "validation",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": []})
                .to_string()
                .into_bytes(),
            422,
            "validation",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": [{"title": "no text"}]})
                .to_string()
                .into_bytes(),
            422,
            "validation",
        ),
        (
            "/score",
            json!({"pairs": [["q"]]}).to_string().into_bytes(),
            422,
            "validation",
        ),
        (
            "/score",
            json!({"pairs": [["q", "p"]], "cutoff_layers": [1]})
                .to_string()
                .into_bytes(),
            422,
            "validation",
        ),
        (
            "/score",
            json!({"pairs": [["q", "p"]], "max_length": 0})
                .to_string()
                .into_bytes(),
            422,
            "validation",
        ),
        // Longer than the model's 512 positions.
        (
            "/score",
            json!({"pairs": [["q", "panda ".repeat(2000)]], "max_length": 5000})
                .to_string()
                .into_bytes(),
            422,
            "validation",
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": vec!["a"; 10_000]})
                .to_string()
                .into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "/rerank",
            vec![b' '; 50 * 1024 * 1024],
            413,
            "payload_too_large",
        ),
    ];
    for (path, body, want_status, want_type) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        let (status, json) = post_raw(&server, path, body).await;
        assert_eq!(status, want_status, "{path} {shown}: {json}");
        // Every error is JSON, the framework's own (a body over the limit) included.
        assert_eq!(json["type"], want_type, "{path} {shown}: {json}");
        assert_eq!(json["error_type"], want_type, "{path} {shown}: {json}");
        assert!(!json["error"].as_str().unwrap().is_empty());
    }
    // A single 1 MB document: truncated by default, refused with truncate=false.
    let huge = "panda ".repeat(170_000);
    let (status, body) = post(
        &server,
        "/rerank",
        json!({"query": QUERY, "texts": [huge.clone(), "hi"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &server,
        "/rerank",
        json!({"query": QUERY, "texts": [huge, "hi"], "truncate": false}),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("max_length"));
    let metrics = reqwest::get(url(&server, "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("bge_rerank_pairs_truncated_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // Still serving.
    let (status, _) = post(&server, "/rerank", json!({"query": QUERY, "texts": DOCS})).await;
    assert_eq!(status, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn api_key_guards_all_but_health_and_metrics() {
    let server = serve_with(
        &[&fixture("xlmr-reranker")],
        Limits::default(),
        Some("s3cret"),
    )
    .await;
    let client = reqwest::Client::new();
    let body = json!({"query": QUERY, "texts": DOCS});
    let none = client
        .post(url(&server, "/rerank"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let wrong = client
        .post(url(&server, "/rerank"))
        .bearer_auth("nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client
        .post(url(&server, "/rerank"))
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert_eq!(
        client
            .get(url(&server, "/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Scrapers and probes carry no key, as with text-embeddings-inference.
    assert_eq!(
        client
            .get(url(&server, "/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(url(&server, "/info"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight() {
    let server = serve().await;
    let long: Vec<String> = (0..300)
        .map(|i| format!("document {i} {}", "panda bamboo ".repeat(40)))
        .collect();
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, long, target) = (client.clone(), long.clone(), url(&server, "/rerank"));
        tasks.push(tokio::spawn(async move {
            client
                .post(&target)
                .json(&json!({"query": QUERY, "texts": long}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown().await.unwrap();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn load_test_client_reports_percentiles() {
    let server = serve().await;
    let report = bge_rerank_server::load_test::run(bge_rerank_server::load_test::LoadTest {
        url: url(&server, "/rerank"),
        body: json!({"query": QUERY, "texts": DOCS}).to_string(),
        concurrency: 4,
        requests: 40,
        api_key: None,
    })
    .await
    .unwrap();
    assert_eq!(report.requests, 40);
    assert_eq!(report.ok, 40);
    assert!(report.percentile(0.5) <= report.percentile(0.99));
    assert!(report.to_string().contains("p99"));
    server.shutdown().await.unwrap();
}

/// `--dtype int8` serves the engine's int8 scores and says so in /info.
#[tokio::test]
async fn int8_models_serve_their_int8_scores() {
    let int8 = LoadOptions {
        precision: bge_rerank_engine::Precision::Int8,
        ..Default::default()
    };
    let config = ServeConfig {
        models: vec![ModelSpec::parse(
            &format!("xlmr={}", fixture("xlmr-reranker")),
            int8.clone(),
        )],
        addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: None,
        limits: Limits::default(),
        api_key: None,
    };
    let server = start(config).await.expect("server starts");
    let reranker = Reranker::load(&fixture("xlmr-reranker"), &int8).unwrap();
    let pairs: Vec<(&str, &str)> = DOCS.iter().map(|d| (QUERY, *d)).collect();
    let want = reranker
        .compute_score(&pairs, &ScoreOptions::default())
        .unwrap();
    assert_ne!(
        want,
        engine_scores("xlmr-reranker", &DOCS, false),
        "int8 is not f32"
    );
    let pairs: Vec<[&str; 2]> = DOCS.iter().map(|d| [QUERY, *d]).collect();
    let (status, body) = post(&server, "/score", json!({"pairs": pairs})).await;
    assert_eq!(status, 200, "{body}");
    let got: Vec<f64> = (body["scores"].as_array().unwrap().iter())
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got, want);
    let info: Value = reqwest::get(url(&server, "/info"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["models"][0]["dtype"], "int8", "{info}");
}

/// A model that cannot load is named once (the engine's error already holds its path), plus the
/// name it was to be served under, if any.
#[tokio::test]
async fn a_missing_model_is_named_once() {
    let start_with = |spec: &str| {
        start(ServeConfig {
            models: vec![ModelSpec::parse(spec, LoadOptions::default())],
            addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: None,
            limits: Limits::default(),
            api_key: None,
        })
    };
    let error = start_with("/nope").await.err().unwrap().to_string();
    assert_eq!(error.matches("/nope").count(), 1, "{error}");
    let error = start_with("m=/nope").await.err().unwrap().to_string();
    assert!(
        error.starts_with("model `m`: ") && error.matches("/nope").count() == 1,
        "{error}"
    );
}

/// One rule for an empty query on every route (and in the CLI): it is scored, as FlagEmbedding does.
#[tokio::test]
async fn an_empty_query_is_scored_on_every_route() {
    let server = serve().await;
    let reranker = Reranker::load(&fixture("xlmr-reranker"), &LoadOptions::default()).unwrap();
    let want = reranker
        .compute_score(&[("  ", "pandas eat bamboo")], &ScoreOptions::default())
        .unwrap()[0];
    let (status, body) = post(
        &server,
        "/score",
        json!({"pairs": [["  ", "pandas eat bamboo"]]}),
    )
    .await;
    assert_eq!(
        (status, body["scores"][0].as_f64()),
        (200, Some(want)),
        "{body}"
    );
    let (status, body) = post(
        &server,
        "/rerank",
        json!({"query": "  ", "texts": ["pandas eat bamboo"], "raw_scores": true}),
    )
    .await;
    assert_eq!(
        (status, body[0]["score"].as_f64()),
        (200, Some(want)),
        "{body}"
    );
    let (status, body) = post(
        &server,
        "/v1/rerank",
        json!({"query": "", "documents": ["pandas eat bamboo"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Ranking routes refuse several cutoff layers before scoring, with the engine's one message.
#[tokio::test]
async fn ranking_needs_one_layer() {
    let server = serve_with(
        &[&format!(
            "layerwise={}",
            fixture("minicpm-layerwise-reranker")
        )],
        Limits::default(),
        None,
    )
    .await;
    for (route, body) in [
        (
            "/rerank",
            json!({"query": "q", "texts": ["a", "b"], "cutoff_layers": [9, 10]}),
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": ["a"], "cutoff_layers": [9, 10]}),
        ),
    ] {
        let (status, body) = post(&server, route, body).await;
        assert_eq!(status, 422, "{route}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains("ranking orders by one score"), "{message}");
    }
    let (status, body) = post(
        &server,
        "/rerank",
        json!({"query": "q", "texts": ["a", "b"], "cutoff_layers": [9]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Cohere's structured documents and per-document token limit: `rank_fields` ranks on those fields
/// as "field: value" lines, `max_tokens_per_doc` cuts each document before scoring, and the scores
/// are the engine's on the same inputs.
#[tokio::test]
async fn cohere_rank_fields_and_max_tokens_per_doc() {
    let server = serve().await;
    let reranker = Reranker::load(&fixture("xlmr-reranker"), &LoadOptions::default()).unwrap();
    let score = |passage: &str, passage_max_length: Option<usize>| -> f64 {
        let options = ScoreOptions {
            normalize: true,
            input: bge_rerank_engine::InputOptions {
                passage_max_length,
                ..Default::default()
            },
            ..Default::default()
        };
        reranker
            .compute_score(&[(QUERY, passage)], &options)
            .unwrap()[0]
    };
    let documents = json!([
        {"title": "Giant panda", "body": "The giant panda is a bear species endemic to China.", "id": 7},
        {"title": "Paris", "body": "Paris is the capital of France."},
    ]);
    let (status, body) = post(
        &server,
        "/v2/rerank",
        json!({"query": QUERY, "documents": documents, "rank_fields": ["title", "body"],
               "return_documents": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for result in body["results"].as_array().unwrap() {
        let i = result["index"].as_u64().unwrap() as usize;
        let doc = &documents[i];
        let text = format!(
            "title: {}\nbody: {}",
            doc["title"].as_str().unwrap(),
            doc["body"].as_str().unwrap()
        );
        assert_eq!(
            result["relevance_score"].as_f64().unwrap(),
            score(&text, None)
        );
        assert_eq!(result["document"], *doc, "the document as given");
    }
    // A field the documents lack is named.
    let (status, body) = post(
        &server,
        "/v2/rerank",
        json!({"query": QUERY, "documents": documents, "rank_fields": ["summary"]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("document 0 has no field `summary`"));

    let long = DOCS[1];
    let (status, body) = post(
        &server,
        "/v2/rerank",
        json!({"query": QUERY, "documents": [long], "max_tokens_per_doc": 3}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let cut = body["results"][0]["relevance_score"].as_f64().unwrap();
    assert_eq!(cut, score(long, Some(3)));
    assert_ne!(cut, score(long, None), "the document was cut");
    let (status, _) = post(
        &server,
        "/v2/rerank",
        json!({"query": QUERY, "documents": [long], "max_tokens_per_doc": 0}),
    )
    .await;
    assert_eq!(status, 422);
    server.shutdown().await.unwrap();
}

/// A failure inside a batch (injected by the test hook into the second batch) fails that batch's
/// request alone, with a JSON 500, and the server goes on serving.
#[tokio::test]
async fn a_failing_batch_fails_its_requests_alone() {
    let limits = Limits {
        fail_batch: Some(2),
        ..Limits::default()
    };
    let server = serve_with(&[&fixture("xlmr-reranker")], limits, None).await;
    let body = json!({"query": QUERY, "texts": DOCS});
    let (first, _) = post(&server, "/rerank", body.clone()).await;
    let (second, error) = post(&server, "/rerank", body.clone()).await;
    let (third, _) = post(&server, "/rerank", body).await;
    assert_eq!((first, second, third), (200, 500, 200), "{error}");
    assert_eq!(error["type"], "internal");
    assert!(
        error["error"].as_str().unwrap().contains("injected"),
        "{error}"
    );
    server.shutdown().await.unwrap();
}

/// text-embeddings-inference's /tokenize and /decode, and the browsable /docs.
#[tokio::test]
async fn tokenize_decode_and_docs() {
    let server = serve().await;
    let (status, body) = post(&server, "/tokenize", json!({"inputs": "what is panda?"})).await;
    assert_eq!(status, 200, "{body}");
    let tokens = body[0].as_array().unwrap();
    assert!(
        tokens.first().unwrap()["special"].as_bool().unwrap(),
        "<s> first: {body}"
    );
    let words: String = tokens
        .iter()
        .filter(|t| !t["special"].as_bool().unwrap())
        .map(|t| {
            let (start, stop) = (t["start"].as_u64().unwrap(), t["stop"].as_u64().unwrap());
            "what is panda?"[start as usize..stop as usize].to_string()
        })
        .collect();
    assert_eq!(words.replace(' ', ""), "whatispanda?");
    let ids: Vec<u64> = tokens.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    let (status, text) = post(&server, "/decode", json!({"ids": ids})).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, "what is panda?");
    let (status, texts) = post(&server, "/decode", json!({"ids": [ids, [ids[1]]]})).await;
    assert_eq!(status, 200, "{texts}");
    assert_eq!(texts[0], "what is panda?");
    let (status, body) = post(&server, "/decode", json!({"ids": [99999999]})).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = post(
        &server,
        "/tokenize",
        json!({"inputs": ["a", "b"], "add_special_tokens": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().unwrap().len(), 2);
    let docs = reqwest::get(url(&server, "/docs")).await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("/openapi.json"));
    server.shutdown().await.unwrap();
}

/// Per-model defaults (`--model-option`): a Cohere client cannot send `cutoff_layers`, so the served
/// model answers at its configured layer; a request that gives one still wins; a default the model
/// cannot honour stops the server from starting, naming it.
#[tokio::test]
async fn served_models_have_their_own_defaults() {
    let spec = |layers: Vec<usize>| {
        let mut spec = ModelSpec::parse(
            &format!("layerwise={}", fixture("minicpm-layerwise-reranker")),
            LoadOptions::default(),
        );
        spec.defaults.cutoff_layers = Some(layers);
        spec
    };
    let config = |layers| ServeConfig {
        models: vec![spec(layers)],
        addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: None,
        limits: Limits::default(),
        api_key: None,
    };
    let server = start(config(vec![9])).await.unwrap();
    let reranker = Reranker::load(
        &fixture("minicpm-layerwise-reranker"),
        &LoadOptions::default(),
    )
    .unwrap();
    let at_layer = |layer: usize| -> Vec<f64> {
        let options = ScoreOptions {
            normalize: true,
            cutoff_layers: Some(vec![layer]),
            ..Default::default()
        };
        let pairs: Vec<(&str, &str)> = DOCS.iter().map(|d| (QUERY, *d)).collect();
        reranker.compute_score(&pairs, &options).unwrap()
    };
    let (status, body) = post(
        &server,
        "/v2/rerank",
        json!({"model": "rerank-v3.5", "query": QUERY, "documents": DOCS}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let layer9 = at_layer(9);
    for result in body["results"].as_array().unwrap() {
        let i = result["index"].as_u64().unwrap() as usize;
        assert_eq!(result["relevance_score"].as_f64().unwrap(), layer9[i]);
    }
    let (status, body) = post(
        &server,
        "/rerank",
        json!({"query": QUERY, "texts": DOCS, "cutoff_layers": [10]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let layer10 = at_layer(10);
    let i = body[0]["index"].as_u64().unwrap() as usize;
    assert_eq!(body[0]["score"].as_f64().unwrap(), layer10[i]);
    server.shutdown().await.unwrap();
    let refused = start(config(vec![99])).await.err().unwrap();
    assert!(refused.contains("cutoff_layers"), "{refused}");
}

/// `/metrics` on a port of its own: served there without the API key, next to the guarded API.
#[tokio::test]
async fn metrics_on_their_own_port() {
    let server = start(ServeConfig {
        models: vec![ModelSpec::parse(
            &fixture("xlmr-reranker"),
            LoadOptions::default(),
        )],
        addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
        limits: Limits::default(),
        api_key: Some("s3cret".into()),
    })
    .await
    .unwrap();
    let metrics_addr = server.metrics_addr.expect("a metrics address");
    let response = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("bge_rerank_pairs_scored_total"));
    let other = reqwest::get(format!("http://{metrics_addr}/info"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "only /metrics there");
    server.shutdown().await.unwrap();
}

/// A small request that arrives while a large one is being scored is answered before the large one
/// is done: batches take from every waiting request in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_request_is_not_queued_behind_a_large_one() {
    let server = serve().await;
    let texts: Vec<String> = (0..300)
        .map(|i| format!("doc {i} {}", "panda bamboo forest ".repeat(60)))
        .collect();
    let large_url = url(&server, "/rerank");
    let large = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(large_url)
            .json(&json!({"query": QUERY, "texts": texts}))
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !large.is_finished(),
        "the large request is long enough to overlap"
    );
    let (status, body) = post(&server, "/rerank", json!({"query": QUERY, "texts": ["hi"]})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !large.is_finished(),
        "the small request waited for all of the large one"
    );
    assert_eq!(large.await.unwrap(), 200);
    server.shutdown().await.unwrap();
}
