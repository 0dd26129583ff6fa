//! `bge-rerank metrics` and `bge-rerank eval` as users call them.

use std::path::PathBuf;
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn bge_rerank(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bge-rerank"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn metrics_reproduces_trec_eval() {
    let qrels = fixtures().join("trec_eval/qrels.test");
    let run = fixtures().join("trec_eval/results.test");
    let (ok, stdout, stderr) = bge_rerank(&[
        "metrics",
        "--qrels",
        qrels.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--metrics",
        "map,P@10,mrr,ndcg@10",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let four = |key: &str| format!("{:.4}", json[key].as_f64().unwrap());
    assert_eq!(four("map"), "0.1785");
    assert_eq!(four("P@10"), "0.3000");
    assert_eq!(four("mrr"), "0.4064");
    assert_eq!(four("ndcg@10"), "0.3016");

    let (ok, _, stderr) = bge_rerank(&[
        "metrics",
        "--qrels",
        qrels.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--metrics",
        "bleu@4",
    ]);
    assert!(!ok);
    assert!(stderr.contains("bleu"), "{stderr}");
}

#[test]
fn eval_prints_the_table_and_writes_the_report() {
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("r/report");
    let saved = out.path().join("reranked.trec");
    let data = fixtures().join("scifact-slice");
    let run = data.join("runs/bm25.top20.trec");
    let args = [
        "eval",
        "--model",
        fixtures().join("xlmr-reranker").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--top-k",
        "10",
        "--max-queries",
        "5",
        "--metrics",
        "ndcg@10,mrr@10",
        "--cache-dir",
        out.path().join("cache").to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--save-run",
        saved.to_str().unwrap(),
        "--quiet",
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, first, stderr) = bge_rerank(&args);
    assert!(ok, "{stderr}");
    assert!(
        first.contains("first stage") && first.contains("ndcg@10") && first.contains("5 queries"),
        "{first}"
    );
    for ext in ["json", "md", "svg"] {
        assert!(report.with_extension(ext).is_file(), "{ext}");
    }
    let lines = std::fs::read_to_string(&saved).unwrap();
    assert_eq!(lines.lines().count(), 50);
    // Determinism: the same table again (all from cache).
    let (ok, second, _) = bge_rerank(&args);
    assert!(ok);
    let table = |t: &str| t.lines().take(3).collect::<Vec<_>>().join("\n");
    assert_eq!(table(&first), table(&second));
    assert!(second.contains("0 scored, 50 from cache"), "{second}");

    // Bad inputs are named.
    let (ok, _, stderr) = bge_rerank(&[
        "eval",
        "--model",
        fixtures().join("xlmr-reranker").to_str().unwrap(),
        "--data",
        out.path().to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("corpus.jsonl"), "{stderr}");
}

/// A metric deeper than the reranked list is computed over that list: the user is warned and the
/// table says so, instead of passing `recall@20` over 5 documents off as recall@20.
#[test]
fn metrics_deeper_than_the_list_are_marked() {
    let out = tempfile::tempdir().unwrap();
    let data = fixtures().join("scifact-slice");
    let run = data.join("runs/bm25.top20.trec");
    let (ok, table, stderr) = bge_rerank(&[
        "eval",
        "--model",
        fixtures().join("xlmr-reranker").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--top-k",
        "5",
        "--max-queries",
        "3",
        "--metrics",
        "ndcg@5,recall@20",
        "--cache-dir",
        out.path().join("cache").to_str().unwrap(),
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("warning: recall@20 cuts at 20 but only the top 5"),
        "{stderr}"
    );
    assert!(table.contains("recall@20 (of top 5)"), "{table}");
    assert!(!stderr.contains("ndcg@5 cuts"), "{stderr}");
}

/// `--first-stage-only` over several data sets: an average row, `--report` and `--save-run` written
/// as for a reranker, and model options (which would have no effect) refused.
#[test]
fn first_stage_only_averages_and_writes_what_it_is_asked() {
    let out = tempfile::tempdir().unwrap();
    let slice = fixtures().join("scifact-slice");
    // The same data under a second name: two data sets.
    let twin = out.path().join("twin");
    for sub in ["", "qrels", "runs"] {
        std::fs::create_dir_all(twin.join(sub)).unwrap();
        for entry in std::fs::read_dir(slice.join(sub)).unwrap() {
            let entry = entry.unwrap();
            if entry.path().is_file() {
                std::fs::copy(entry.path(), twin.join(sub).join(entry.file_name())).unwrap();
            }
        }
    }
    let run = slice.join("runs/bm25.top20.trec");
    let report = out.path().join("fs/report");
    let saved = out.path().join("first.trec");
    let mut args = vec![
        "eval".to_string(),
        "--first-stage-only".into(),
        "--metrics".into(),
        "ndcg@10,recall@10".into(),
        "--top-k".into(),
        "10".into(),
        "--report".into(),
        report.to_string_lossy().into_owned(),
        "--save-run".into(),
        saved.to_string_lossy().into_owned(),
    ];
    for data in [&slice, &twin] {
        args.extend([
            "--data".to_string(),
            data.to_string_lossy().into_owned(),
            "--run".into(),
            run.to_string_lossy().into_owned(),
        ]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, table, stderr) = bge_rerank(&argv);
    assert!(ok, "{stderr}");
    let row = |name: &str| -> Vec<String> {
        (table.lines())
            .filter(|l| l.starts_with(name) && l.contains("ndcg@10"))
            .map(|l| l.split_whitespace().last().unwrap().to_string())
            .collect()
    };
    assert_eq!(row("average"), row("scifact-slice"), "{table}");
    assert!(!row("average").is_empty(), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.with_extension("json")).unwrap())
            .unwrap();
    assert!(json["average"]["ndcg@10"].is_number(), "{json}");
    assert!(
        json["data_sets"]["twin"]["metrics"]["recall@10"].is_number(),
        "{json}"
    );
    assert!(report.with_extension("md").is_file());
    for name in ["first.scifact-slice.trec", "first.twin.trec"] {
        let run = std::fs::read_to_string(out.path().join(name)).unwrap();
        assert!(run.lines().count() >= 10, "{name}");
    }

    let model = fixtures().join("xlmr-reranker");
    let mut with_model = argv.clone();
    with_model.extend(["--model", model.to_str().unwrap()]);
    let (ok, _, stderr) = bge_rerank(&with_model);
    assert!(!ok && stderr.contains("have no effect"), "{stderr}");
}
