//! The metrics against NIST trec_eval's own test files: every supported measure, per query and on
//! average, to the 4 decimals trec_eval prints.

use std::collections::HashMap;
use std::path::PathBuf;

use bge_rerank_eval::{evaluate, parse_metrics, read_qrels, read_run};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/trec_eval")
}

/// trec_eval's measure name for ours.
fn trec_name(metric: &str) -> String {
    let (base, k) = metric
        .split_once('@')
        .map_or((metric, None), |(b, k)| (b, Some(k)));
    match (base, k) {
        ("ndcg", Some(k)) => format!("ndcg_cut_{k}"),
        ("map", Some(k)) => format!("map_cut_{k}"),
        ("map", None) => "map".into(),
        ("recall", Some(k)) => format!("recall_{k}"),
        ("p", Some(k)) => format!("P_{k}"),
        ("mrr", None) => "recip_rank".into(),
        _ => unreachable!(),
    }
}

#[test]
fn reproduces_trec_eval_per_query_and_on_average() {
    let qrels = read_qrels(&fixtures().join("qrels.test")).unwrap();
    let run = read_run(&fixtures().join("results.test")).unwrap();
    let mut names = vec!["map".to_string(), "mrr".to_string()];
    for k in [5, 10, 15, 20, 30, 100, 200, 500, 1000] {
        for base in ["ndcg", "map", "recall", "p"] {
            names.push(format!("{base}@{k}"));
        }
    }
    let metrics = parse_metrics(&names.join(",")).unwrap();
    let ours = evaluate(&qrels, &run, &metrics);

    // `out.test.aq`: trec_eval -a -q: "measure \t query \t value".
    let mut reference: HashMap<(String, String), f64> = HashMap::new();
    for line in std::fs::read_to_string(fixtures().join("out.test.aq"))
        .unwrap()
        .lines()
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [measure, query, value] = fields.as_slice() {
            if let Ok(v) = value.parse() {
                reference.insert((measure.to_string(), query.to_string()), v);
            }
        }
    }
    assert_eq!(ours.num_queries(), 3);
    let mut compared = 0;
    for (i, metric) in metrics.iter().enumerate() {
        let measure = trec_name(&metric.name);
        for (query, values) in &ours.per_query {
            let want = reference[&(measure.clone(), query.clone())];
            assert!(
                (values[i] - want).abs() <= 5e-5,
                "{measure} {query}: {} vs trec_eval {want}",
                values[i]
            );
            compared += 1;
        }
        let want = reference[&(measure.clone(), "all".to_string())];
        assert!(
            (ours.mean[i] - want).abs() <= 5e-5,
            "{measure}: {} vs trec_eval {want}",
            ours.mean[i]
        );
    }
    assert_eq!(compared, 38 * 3);
    // The headline figures.
    assert_eq!(format!("{:.4}", ours.mean_of("map").unwrap()), "0.1785");
    assert_eq!(format!("{:.4}", ours.mean_of("p@10").unwrap()), "0.3000");
    assert_eq!(format!("{:.4}", ours.mean_of("mrr").unwrap()), "0.4064");
    assert_eq!(format!("{:.4}", ours.mean_of("ndcg@10").unwrap()), "0.3016");
}

#[test]
fn ties_are_broken_as_trec_eval_breaks_them() {
    // Two documents with equal scores: trec_eval ranks the larger id first.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("q"), "1 0 a 1\n1 0 b 0\n").unwrap();
    std::fs::write(dir.path().join("r"), "1 Q0 a 1 5.0 t\n1 Q0 b 2 5.0 t\n").unwrap();
    let qrels = read_qrels(&dir.path().join("q")).unwrap();
    let run = read_run(&dir.path().join("r")).unwrap();
    let e = evaluate(&qrels, &run, &parse_metrics("mrr,p@1").unwrap());
    assert_eq!(e.mean, vec![0.5, 0.0]);
}
