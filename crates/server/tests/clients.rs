//! Third-party clients against the server, where they are installed: `BGE_RERANK_PYTHON` names a
//! Python with the `cohere` package (e.g. `pip install cohere`); without it the test says so and
//! passes. The client's results must be the engine's scores for the same inputs.

use bge_rerank_engine::{InputOptions, LoadOptions, Reranker, ScoreOptions};
use bge_rerank_server::{start, Limits, ModelSpec, ServeConfig};
use serde_json::Value;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cohere_python_client_gets_the_engines_scores() {
    let Some(python) = std::env::var_os("BGE_RERANK_PYTHON") else {
        eprintln!("skipping: set BGE_RERANK_PYTHON to a Python with the cohere package");
        return;
    };
    let model = root().join("tests/fixtures/xlmr-reranker");
    let model = model.to_str().unwrap();
    let server = start(ServeConfig {
        models: vec![ModelSpec::parse(model, LoadOptions::default())],
        addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: None,
        limits: Limits::default(),
        api_key: None,
    })
    .await
    .unwrap();
    let script = root().join("tests/clients/cohere_client.py");
    let base = format!("http://{}", server.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(&base)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    server.shutdown().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();

    let reranker = Reranker::load(model, &LoadOptions::default()).unwrap();
    let score = |passage: &str, passage_max_length: Option<usize>| -> f64 {
        let options = ScoreOptions {
            normalize: true,
            input: InputOptions {
                passage_max_length,
                ..Default::default()
            },
            ..Default::default()
        };
        reranker
            .compute_score(&[("what is panda?", passage)], &options)
            .unwrap()[0]
    };
    let docs = [
        "hi",
        "The giant panda is a bear species endemic to China.",
        "Paris is the capital of France.",
    ];
    let check = |key: &str, texts: &[String], cut: Option<usize>| {
        let results = got[key].as_array().unwrap();
        assert!(!results.is_empty(), "{key}: {got}");
        for result in results {
            let index = result[0].as_u64().unwrap() as usize;
            let expected = score(&texts[index], cut);
            assert!(
                (result[1].as_f64().unwrap() - expected).abs() < 1e-12,
                "{key}: {got}"
            );
        }
    };
    let plain: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
    check("plain", &plain, None);
    assert_eq!(got["plain"].as_array().unwrap().len(), 2, "top_n");
    check("cut", &plain, Some(3));
    let fields = vec![
        format!("title: Giant panda\nbody: {}", docs[1]),
        format!("title: Paris\nbody: {}", docs[2]),
    ];
    check("fields", &fields, None);
    assert!(got["fields_document"]["title"].is_string(), "{got}");
}
