//! On the real data in shared/data, when `BGE_RERANK_DATA` points at it (skipped otherwise): the
//! shipped SciFact BM25 runs score what the data's README says they score.

use std::path::PathBuf;

use bge_rerank_eval::{evaluate, parse_metrics, read_run, DataSet};

#[test]
fn shipped_scifact_bm25_runs() {
    let Some(root) = std::env::var_os("BGE_RERANK_DATA").map(PathBuf::from) else {
        eprintln!("BGE_RERANK_DATA is unset: skipping the real-data test");
        return;
    };
    let data = DataSet::open(&root.join("scifact"), "test").unwrap();
    let qrels = data.qrels().unwrap();
    let metrics = parse_metrics("ndcg@10,recall@100").unwrap();
    for (run, ndcg) in [
        ("bm25_k1-1.5_b-0.75.test.top100.trec", "0.6863"),
        ("bm25_k1-0.9_b-0.4.test.top100.trec", "0.6762"),
    ] {
        let run = read_run(&root.join("scifact/runs").join(run)).unwrap();
        let e = evaluate(&qrels, &run, &metrics);
        assert_eq!(e.num_queries(), 300);
        assert_eq!(format!("{:.4}", e.mean[0]), ndcg);
        assert_eq!(format!("{:.3}", e.mean[1]), "0.913");
    }
}
