//! The `bge-rerank` binary as users call it, on the vendored fixture models.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn model() -> String {
    fixtures()
        .join("xlmr-reranker")
        .to_string_lossy()
        .into_owned()
}

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bge-rerank"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn expected(setting: &str) -> Vec<Value> {
    std::fs::read_to_string(fixtures().join("expected").join(setting))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn cases() -> String {
    std::fs::read_to_string(fixtures().join("cases.jsonl")).unwrap()
}

#[test]
fn score_matches_flagembedding_and_keeps_every_field_in_order() {
    let out = run(&["score", "--model", &model(), "--quiet"], &cases());
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = lines(&out);
    let want = expected("xlmr-reranker__default.jsonl");
    assert_eq!(rows.len(), want.len());
    for (row, want) in rows.iter().zip(&want) {
        assert_eq!(row["id"], want["id"]);
        let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "query", "passage", "score"]);
        let diff = (row["score"].as_f64().unwrap() - want["score"].as_f64().unwrap()).abs();
        assert!(diff < 1e-4, "{}: {diff}", row["id"]);
    }
}

#[test]
fn score_normalize_and_length_options_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    std::fs::write(&input, cases()).unwrap();
    let out = run(
        &[
            "score",
            "--model",
            &model(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--normalize",
            "--max-length",
            "40",
            "--query-max-length",
            "8",
            "--batch-size",
            "5",
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (row, want) in rows
        .iter()
        .zip(expected("xlmr-reranker__query_max_length_8.jsonl"))
    {
        let diff = (row["score"].as_f64().unwrap() - want["normalized"].as_f64().unwrap()).abs();
        assert!(diff < 1e-4, "{}: {diff}", row["id"]);
    }
}

#[test]
fn tokenize_prints_the_exact_input_ids() {
    // A folder with the config and tokenizer files only: tokenizing needs no weights.
    let folder = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join("xlmr-reranker")).unwrap() {
        let entry = entry.unwrap();
        if !entry
            .file_name()
            .to_string_lossy()
            .ends_with(".safetensors")
        {
            std::fs::copy(entry.path(), folder.path().join(entry.file_name())).unwrap();
        }
    }
    let out = run(
        &[
            "tokenize",
            "--model",
            folder.path().to_str().unwrap(),
            "--max-length",
            "16",
        ],
        &cases(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for (row, want) in lines(&out)
        .iter()
        .zip(expected("xlmr-reranker__max_length_16.jsonl"))
    {
        assert_eq!(row["input_ids"], want["input_ids"], "{}", row["id"]);
    }
}

#[test]
fn malformed_line_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    let input = "{\"query\": \"a\", \"passage\": \"b\"}\n\n{\"query\": \"a\", \"passage\": 3}\n";
    let out = run(
        &[
            "score",
            "--model",
            &model(),
            "--output",
            output.to_str().unwrap(),
        ],
        input,
    );
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("line 3") && message.contains("passage"),
        "{message}"
    );
    assert!(!output.exists(), "no output file is written on error");

    let out = run(
        &["score", "--model", &model()],
        "{\"query\": \"a\", \"passage\": \"b\"}\n{oops\n",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "nothing half-written to stdout");
}

#[test]
fn rerank_ranks_plain_lines_and_jsonl_alike() {
    let docs = [
        "hi",
        "The giant panda is a bear species endemic to China.",
        "pandas eat bamboo",
    ];
    let plain = docs.join("\n");
    let jsonl: String = docs
        .iter()
        .map(|d| format!("{}\n", serde_json::json!({ "text": d })))
        .collect();
    let query = "what is panda?";
    let from_plain = run(
        &["rerank", "--model", &model(), "--query", query, "--json"],
        &plain,
    );
    let from_jsonl = run(
        &["rerank", "--model", &model(), "--query", query, "--json"],
        &jsonl,
    );
    assert!(from_plain.status.success(), "{}", stderr(&from_plain));
    let ranked: Value = serde_json::from_slice(&from_plain.stdout).unwrap();
    let ranked_jsonl: Value = serde_json::from_slice(&from_jsonl.stdout).unwrap();
    assert_eq!(ranked, ranked_jsonl);
    let ranked = ranked.as_array().unwrap();
    assert_eq!(ranked.len(), 3);
    let scores: Vec<f64> = ranked
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "sorted best first: {scores:?}"
    );

    // The same numbers `score` gives for those pairs.
    let pairs: String = docs
        .iter()
        .map(|d| format!("{}\n", serde_json::json!({"query": query, "passage": d})))
        .collect();
    let scored = lines(&run(&["score", "--model", &model()], &pairs));
    for r in ranked {
        let index = r["index"].as_u64().unwrap() as usize;
        assert_eq!(r["score"], scored[index]["score"]);
        assert_eq!(r["text"], docs[index]);
    }

    let top = run(
        &[
            "rerank",
            "--model",
            &model(),
            "--query",
            query,
            "--top-n",
            "1",
        ],
        &plain,
    );
    let text = String::from_utf8(top.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "header and one row: {text}");
}

#[test]
fn rerank_with_nothing_to_rank_is_an_error() {
    let out = run(&["rerank", "--model", &model(), "--query", "q"], "\n\n");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no documents"));
}

#[test]
fn bad_model_and_options_are_clear_errors() {
    let out = run(&["score", "--model", "/nonexistent/model-dir"], "");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/model-dir"),
        "{}",
        stderr(&out)
    );

    let out = run(&["score", "--model", "BAAI/bge-reranker-v2-m3"], "");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not in the Hugging Face cache"),
        "{}",
        stderr(&out)
    );

    let out = run(&["score", "--model", &model(), "--dtype", "int3"], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("int3"), "{}", stderr(&out));
}

#[test]
fn verbose_says_which_precision_was_chosen() {
    let bf16 = fixtures().join("xlmr-reranker-bf16");
    let out = run(
        &["score", "--model", bf16.to_str().unwrap(), "--verbose"],
        "{\"query\": \"a\", \"passage\": \"b\"}\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(said.contains("stored as bf16, computed as f32"), "{said}");
    assert!(said.contains("kernel "), "names the matrix kernel: {said}");
}

/// A file saved with a UTF-8 byte order mark (Windows editors, Python's utf-8-sig) reads as without.
#[test]
fn a_byte_order_mark_is_skipped() {
    let line = "{\"query\": \"what is panda?\", \"passage\": \"pandas eat bamboo\"}\n";
    let plain = run(&["score", "--model", &model()], line);
    let marked = run(&["score", "--model", &model()], &format!("\u{feff}{line}"));
    assert!(marked.status.success(), "{}", stderr(&marked));
    assert_eq!(marked.stdout, plain.stdout);
}

#[test]
fn int8_scores_from_the_cli() {
    let line = "{\"query\": \"what is panda?\", \"passage\": \"pandas eat bamboo\"}\n";
    let score = |dtype: &str| -> (f64, String) {
        let out = run(
            &["score", "--model", &model(), "--dtype", dtype, "--verbose"],
            line,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let row: Value = serde_json::from_slice(&out.stdout).unwrap();
        (row["score"].as_f64().unwrap(), stderr(&out))
    };
    let (f32_score, _) = score("f32");
    let (int8_score, said) = score("int8");
    assert!(said.contains("computed as int8"), "{said}");
    assert_ne!(int8_score, f32_score, "int8 computes differently");
    assert!(
        (int8_score - f32_score).abs() < 0.1,
        "{int8_score} vs {f32_score}"
    );
}

/// `quantize` writes a folder that `score` loads as int8 by default, with the scores of `--dtype
/// int8` on the original; a second run into the same folder needs --overwrite.
#[test]
fn quantize_saves_a_folder_that_scores_as_int8() {
    let out = tempfile::tempdir().unwrap();
    let saved = out.path().join("int8");
    let saved = saved.to_str().unwrap();
    let quantize = |extra: &[&str]| {
        let model = model();
        let mut args = vec!["quantize", "--model", &model, "--output", saved];
        args.extend_from_slice(extra);
        run(&args, "")
    };
    let first = quantize(&[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("tensors int8"),
        "{}",
        stderr(&first)
    );
    let again = quantize(&[]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--overwrite"), "{}", stderr(&again));
    assert!(quantize(&["--overwrite"]).status.success());
    let scores = |model: &str, dtype: &str| {
        let out = run(&["score", "--model", model, "--dtype", dtype], &cases());
        assert!(out.status.success(), "{}", stderr(&out));
        lines(&out)
    };
    assert_eq!(scores(saved, "auto"), scores(&model(), "int8"));
    let refused = run(&["score", "--model", saved, "--dtype", "f32"], &cases());
    assert!(
        stderr(&refused).contains("int8 only"),
        "{}",
        stderr(&refused)
    );
}

/// A load test whose requests fail reports the failures first and exits non-zero.
#[test]
fn bench_url_failures_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("request.json");
    std::fs::write(&request, "{\"query\": \"q\", \"texts\": [\"a\"]}").unwrap();
    // Nothing listens on port 1: every request gets no response.
    let out = run(
        &[
            "bench",
            "--url",
            "http://127.0.0.1:1/rerank",
            "--request",
            request.to_str().unwrap(),
            "--requests",
            "3",
        ],
        "",
    );
    assert!(!out.status.success(), "failed requests must fail the run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("target") && text.contains("FAILED       3 of 3 requests failed"),
        "{text}"
    );
    assert!(stderr(&out).contains("no response: 3"), "{}", stderr(&out));
}

#[test]
fn bench_reports_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let workload = dir.path().join("w.jsonl");
    std::fs::write(&workload, cases()).unwrap();
    let out = run(
        &[
            "bench",
            "--model",
            &model(),
            "--workload",
            workload.to_str().unwrap(),
            "--repeat",
            "1",
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("pairs/s") && text.contains("tokens/s"),
        "{text}"
    );
}

fn fixture(name: &str) -> String {
    fixtures().join(name).to_string_lossy().into_owned()
}

fn assert_scores_match(rows: &[Value], setting: &str, key: &str) {
    let want = expected(setting);
    assert_eq!(rows.len(), want.len());
    for (row, want) in rows.iter().zip(&want) {
        let got: Vec<f64> = match &row["score"] {
            Value::Array(items) => items.iter().map(|v| v.as_f64().unwrap()).collect(),
            v => vec![v.as_f64().unwrap()],
        };
        let exp: Vec<f64> = match &want[key] {
            Value::Array(items) => items.iter().map(|v| v.as_f64().unwrap()).collect(),
            v => vec![v.as_f64().unwrap()],
        };
        assert_eq!(got.len(), exp.len(), "{setting} {}", row["id"]);
        for (g, e) in got.iter().zip(&exp) {
            assert!((g - e).abs() < 5e-4, "{setting} {}: {g} vs {e}", row["id"]);
        }
    }
}

#[test]
fn gemma_with_prompt_and_adapter_from_the_cli() {
    let prompt = "Does passage B answer question A? Reply Yes or No.";
    let out = run(
        &[
            "score",
            "--model",
            &fixture("gemma-reranker"),
            "--prompt",
            prompt,
        ],
        &cases(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_scores_match(&lines(&out), "gemma-reranker__custom_prompt.jsonl", "score");

    let out = run(
        &[
            "score",
            "--model",
            &fixture("gemma-reranker"),
            "--adapter",
            &fixture("gemma-reranker-lora"),
            "--normalize",
        ],
        &cases(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_scores_match(
        &lines(&out),
        "gemma-reranker+lora__default.jsonl",
        "normalized",
    );

    let out = run(
        &[
            "tokenize",
            "--model",
            &fixture("gemma-reranker"),
            "--max-length",
            "48",
        ],
        &cases(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for (row, want) in lines(&out)
        .iter()
        .zip(expected("gemma-reranker__max_length_48.jsonl"))
    {
        assert_eq!(row["input_ids"], want["input_ids"], "{}", row["id"]);
    }
}

#[test]
fn layerwise_cutoff_layers_from_the_cli() {
    let model = fixture("minicpm-layerwise-reranker");
    // Unsorted and repeated: answered once per layer, ascending.
    let out = run(
        &["score", "--model", &model, "--cutoff-layers", "10,9,10"],
        &cases(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_scores_match(
        &lines(&out),
        "minicpm-layerwise-reranker__cutoff_9_10.jsonl",
        "score",
    );

    let out = run(
        &[
            "score",
            "--model",
            &model,
            "--cutoff-layers",
            "8",
            "--normalize",
        ],
        &cases(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_scores_match(
        &lines(&out),
        "minicpm-layerwise-reranker__cutoff_8.jsonl",
        "normalized",
    );

    let out = run(
        &["score", "--model", &model, "--cutoff-layers", "7"],
        &cases(),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("8 to 10"), "{}", stderr(&out));

    let out = run(
        &[
            "rerank",
            "--model",
            &model,
            "--query",
            "q",
            "--cutoff-layers",
            "9,10",
        ],
        "a\nb\n",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ranking orders by one score"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn llm_options_on_a_cross_encoder_are_errors() {
    let pair = "{\"query\": \"a\", \"passage\": \"b\"}\n";
    for args in [
        vec!["score", "--model", &model(), "--cutoff-layers", "2"],
        vec!["tokenize", "--model", &model(), "--cutoff-layers", "2"],
        vec!["score", "--model", &model(), "--prompt", "Yes or No?"],
    ] {
        let out = run(&args, pair);
        assert!(!out.status.success(), "{args:?}");
        let message = stderr(&out);
        assert!(
            message.contains("layerwise") || message.contains("prompt"),
            "{message}"
        );
    }
    let out = run(
        &[
            "score",
            "--model",
            &model(),
            "--adapter",
            &fixture("gemma-reranker-lora"),
        ],
        pair,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("LLM rerankers"), "{}", stderr(&out));
}
