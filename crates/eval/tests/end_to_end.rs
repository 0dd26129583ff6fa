//! An evaluation of a fixture model on a slice of SciFact, from a run file and from the built-in BM25:
//! reports written, the cache reused, the same report twice.

use std::path::PathBuf;

use bge_rerank_engine::{LoadOptions, Reranker, ScoreOptions};
use bge_rerank_eval::{evaluate_dataset, parse_metrics, report, DataSet, EvalOptions};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn options(cache: &std::path::Path) -> EvalOptions {
    EvalOptions {
        split: "test".into(),
        top_k: 10,
        metrics: parse_metrics("ndcg@10,map,recall@10,mrr@10").unwrap(),
        max_queries: None,
        cache_dir: cache.to_path_buf(),
        score: ScoreOptions::default(),
        chunk_pairs: 32,
    }
}

#[test]
fn rerank_a_scifact_slice() {
    let reranker = Reranker::load(
        fixtures().join("xlmr-reranker").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let data = DataSet::open(&fixtures().join("scifact-slice"), "test").unwrap();
    let run = fixtures().join("scifact-slice/runs/bm25.top20.trec");
    let cache = tempfile::tempdir().unwrap();
    let opts = options(cache.path());
    let scored = std::cell::Cell::new(0);
    let first = evaluate_dataset(&reranker, "xlmr", &data, Some(&run), &opts, &|_| {}, &|n| {
        scored.set(scored.get() + n)
    })
    .unwrap();
    assert_eq!(first.reranked.num_queries(), 12);
    assert_eq!(first.pairs.total, 120);
    assert_eq!(first.pairs.scored, 120);
    assert_eq!(scored.get(), 120);
    // The first stage's figures are the run's own, cut to the top 10.
    let ndcg = first.first_stage.mean_of("ndcg@10").unwrap();
    assert!(ndcg > 0.3 && ndcg <= 1.0, "{ndcg}");
    // Every reranked list holds the same documents as the first stage's top 10.
    for (qid, docs) in &first.reranked_run {
        assert_eq!(docs.len(), 10, "{qid}");
    }

    // Again: nothing rescored, identical report.
    let second = evaluate_dataset(
        &reranker,
        "xlmr",
        &data,
        Some(&run),
        &opts,
        &|_| {},
        &|_| {},
    )
    .unwrap();
    assert_eq!(second.pairs.scored, 0);
    assert_eq!(second.pairs.from_cache, 120);
    assert_eq!(first.reranked.mean, second.reranked.mean);
    assert_eq!(first.reranked_run, second.reranked_run);
    let strip_times = |t: String| {
        t.lines()
            .filter(|l| !l.contains(" in "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip_times(report::markdown(std::slice::from_ref(&first))),
        strip_times(report::markdown(&[second]))
    );

    // A larger k reuses what is cached and scores only the rest.
    let mut wider = options(cache.path());
    wider.top_k = 15;
    let third = evaluate_dataset(
        &reranker,
        "xlmr",
        &data,
        Some(&run),
        &wider,
        &|_| {},
        &|_| {},
    )
    .unwrap();
    assert_eq!((third.pairs.from_cache, third.pairs.scored), (120, 60));

    let out = tempfile::tempdir().unwrap();
    let context = report::ReportContext {
        model: "xlmr".into(),
        adapter: None,
        fingerprint: reranker.fingerprint().into(),
        dtype: reranker.precision().explanation.clone(),
        options: serde_json::json!({"top_k": 10}),
        version: "bge-rerank test".into(),
    };
    let written = report::write_report(&out.path().join("report"), &[first], &context).unwrap();
    assert_eq!(written.len(), 3);
    let svg = std::fs::read_to_string(out.path().join("report.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("polyline"),
        "{}",
        &svg[..svg.len().min(200)]
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    assert!(json["data_sets"]["scifact-slice"]["metrics"]["ndcg@10"]["reranked"].is_number());
    // The report says what it measured: model, fingerprint, options, version.
    assert_eq!(json["context"]["fingerprint"], reranker.fingerprint());
    assert_eq!(json["context"]["version"], "bge-rerank test");
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.starts_with("Model `xlmr` (fingerprint "), "{md}");
    assert!(!svg.contains(">-0.00<"), "no negative zero tick");
    assert!(std::fs::read_to_string(out.path().join("report.md"))
        .unwrap()
        .contains("| scifact-slice | ndcg@10 |"));
}

#[test]
fn builtin_bm25_first_stage() {
    let reranker = Reranker::load(
        fixtures().join("xlmr-reranker").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let data = DataSet::open(&fixtures().join("scifact-slice"), "test").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let result = evaluate_dataset(
        &reranker,
        "xlmr",
        &data,
        None,
        &options(cache.path()),
        &|_| {},
        &|_| {},
    )
    .unwrap();
    assert_eq!(result.reranked.num_queries(), 12);
    assert!(result.first_stage_name.contains("BM25"));
    // Over this small corpus BM25 finds most judged documents.
    let recall = result.first_stage.mean_of("recall@10").unwrap();
    assert!(recall > 0.5, "BM25 recall@10 {recall}");
    // The index is reused.
    assert!(cache.path().join("bm25").read_dir().unwrap().count() == 1);
    let again = evaluate_dataset(
        &reranker,
        "xlmr",
        &data,
        None,
        &options(cache.path()),
        &|_| {},
        &|_| {},
    )
    .unwrap();
    assert_eq!(again.first_stage.mean, result.first_stage.mean);
}

#[test]
fn run_naming_unknown_documents_and_queries_is_reported() {
    let reranker = Reranker::load(
        fixtures().join("xlmr-reranker").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let data = DataSet::open(&fixtures().join("scifact-slice"), "test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut run =
        std::fs::read_to_string(fixtures().join("scifact-slice/runs/bm25.top20.trec")).unwrap();
    let first_query = run.split_whitespace().next().unwrap().to_string();
    run.push_str(&format!(
        "{first_query} Q0 aaa-missing 98 100.0 x\n{first_query} Q0 zzz-missing 99 99.0 x\n\
         no-such-query Q0 d 1 1.0 x\n"
    ));
    let path = dir.path().join("run.trec");
    std::fs::write(&path, run).unwrap();
    let result = evaluate_dataset(
        &reranker,
        "xlmr",
        &data,
        Some(&path),
        &options(dir.path()),
        &|_| {},
        &|_| {},
    )
    .unwrap();
    assert_eq!(
        result.missing_docs,
        (
            2,
            vec!["aaa-missing".to_string(), "zzz-missing".to_string()]
        )
    );
    // Unreadable documents go to the bottom of the reranked list, in first-stage order.
    let reranked = bge_rerank_eval::metrics::trec_order(&result.reranked_run[&first_query]);
    let tail: Vec<&str> = reranked[8..].iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(tail, ["aaa-missing", "zzz-missing"]);
    assert_eq!(
        result.missing_queries,
        (1, vec!["no-such-query".to_string()])
    );
    assert!(report::table(&[result]).contains("not in the corpus"));
}

/// Retraining into the same folder makes a new model: the cache must not answer for the old one.
#[test]
fn new_weights_in_the_same_folder_are_scored_afresh() {
    let folder = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join("xlmr-reranker")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), folder.path().join(entry.file_name())).unwrap();
    }
    let model = folder.path().to_str().unwrap();
    let data = DataSet::open(&fixtures().join("scifact-slice"), "test").unwrap();
    let run = fixtures().join("scifact-slice/runs/bm25.top20.trec");
    let cache = tempfile::tempdir().unwrap();
    let opts = options(cache.path());
    let evaluate = || {
        let reranker = Reranker::load(model, &LoadOptions::default()).unwrap();
        evaluate_dataset(&reranker, model, &data, Some(&run), &opts, &|_| {}, &|_| {}).unwrap()
    };
    let first = evaluate();
    assert_eq!(first.pairs.scored, 120);
    // "Training" writes other weights (the same model rounded to bf16) over the old file.
    std::fs::copy(
        fixtures().join("xlmr-reranker-bf16/model.safetensors"),
        folder.path().join("model.safetensors"),
    )
    .unwrap();
    let second = evaluate();
    assert_eq!(
        (second.pairs.scored, second.pairs.from_cache),
        (120, 0),
        "new weights are scored, not read from the old model's cache"
    );
    assert_ne!(first.reranked_run, second.reranked_run);
}
