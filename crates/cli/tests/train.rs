//! `bge-rerank train` as users call it: a run with evaluation at each checkpoint, and bad data.

use std::path::PathBuf;
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn bge_rerank(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bge-rerank"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn train_writes_checkpoints_log_curves_and_evaluates_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    std::fs::write(
        &data,
        concat!(
            r#"{"query": "what is panda?", "pos": ["The giant panda is a bear species endemic to China."], "neg": ["hi", "Paris is the capital of France."]}"#,
            "\n",
            r#"{"query": "capital of France", "pos": ["Paris is the capital of France."]}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let model = fixtures().join("xlmr-reranker");
    let slice = fixtures().join("scifact-slice");
    let (ok, stderr) = bge_rerank(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--group-size",
        "3",
        "--max-length",
        "64",
        "--save-steps",
        "1",
        "--eval-data",
        slice.to_str().unwrap(),
        "--eval-top-k",
        "5",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("1 of 2 queries have no negatives"),
        "{stderr}"
    );
    assert!(stderr.contains("nDCG@10"), "{stderr}");
    for file in [
        "config.json",
        "model.safetensors",
        "train_log.jsonl",
        "training_curves.svg",
    ] {
        assert!(out.join(file).is_file(), "{file} missing: {stderr}");
    }
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("checkpoint-2/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], 2);
    assert_eq!(state["evals"].as_array().unwrap().len(), 2);
    let svg = std::fs::read_to_string(out.join("training_curves.svg")).unwrap();
    assert!(svg.contains("nDCG@10 at each checkpoint"));
}

#[test]
fn bad_training_data_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    std::fs::write(
        &data,
        "{\"query\": \"q\", \"pos\": [\"p\"], \"neg\": [\"n\"]}\n{\"query\": \"q\", \"pos\": []}\n",
    )
    .unwrap();
    let model = fixtures().join("xlmr-reranker");
    let (ok, stderr) = bge_rerank(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--output",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("train.jsonl, line 2: `pos` is empty"),
        "{stderr}"
    );
}
