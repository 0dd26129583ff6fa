//! Every reader names the file and line of what it cannot read.

use std::path::Path;

use bge_rerank_eval::{read_qrels, read_run, DataSet};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn message<T: std::fmt::Debug>(result: Result<T, bge_rerank_eval::EvalError>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn qrels_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "q.txt", "1 0 a 1\n1 0 b\n1 0 c x 9\n");
    let m = message(read_qrels(&path));
    assert!(
        m.contains("q.txt") && m.contains("line 2") && m.contains("TREC"),
        "{m}"
    );
    let path = write(dir.path(), "q2.txt", "1 0 a 1\n1 0 b high\n");
    let m = message(read_qrels(&path));
    assert!(m.contains("line 2") && m.contains("high"), "{m}");
    // BEIR tsv with its header reads fine; FlagEmbedding jsonl too.
    let path = write(
        dir.path(),
        "test.tsv",
        "query-id\tcorpus-id\tscore\n1\ta\t1\n",
    );
    assert_eq!(read_qrels(&path).unwrap()["1"]["a"], 1);
    let path = write(
        dir.path(),
        "test_qrels.jsonl",
        "{\"qid\": \"1\", \"docid\": \"a\", \"relevance\": 2}\n{\"qid\": \"1\"}\n",
    );
    let m = message(read_qrels(&path));
    assert!(m.contains("line 2") && m.contains("docid"), "{m}");
}

#[test]
fn run_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "r.trec", "1 Q0 a 1 2.5 t\n1 Q0 b 2 t\n");
    let m = message(read_run(&path));
    assert!(m.contains("r.trec") && m.contains("line 2"), "{m}");
    let path = write(dir.path(), "r2.trec", "1 Q0 a 1 high t\n");
    let m = message(read_run(&path));
    assert!(m.contains("line 1") && m.contains("high"), "{m}");
    assert!(message(read_run(&dir.path().join("absent.trec"))).contains("absent.trec"));
}

#[test]
fn data_set_layouts_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let m = message(DataSet::open(root, "test"));
    assert!(m.contains("corpus.jsonl"), "{m}");
    write(root, "corpus.jsonl", "{\"_id\": \"d1\", \"title\": \"T\", \"text\": \"body \"}\n{\"_id\": \"d2\", \"text\": 5}\n");
    let m = message(DataSet::open(root, "test"));
    assert!(m.contains("test"), "{m}");
    write(
        root,
        "qrels/test.tsv",
        "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
    );
    write(
        root,
        "queries.jsonl",
        "{\"_id\": \"q1\", \"text\": \"what\"}\nnot json\n",
    );
    let data = DataSet::open(root, "test").unwrap();
    let m = message(data.queries());
    assert!(m.contains("queries.jsonl") && m.contains("line 2"), "{m}");
    let mut seen = Vec::new();
    let m = message(data.stream_corpus(|_| true, |id, text| seen.push((id, text))));
    assert!(
        m.contains("corpus.jsonl") && m.contains("line 2") && m.contains("text"),
        "{m}"
    );
    // title + " " + text, stripped.
    assert_eq!(seen, vec![("d1".to_string(), "T body".to_string())]);

    // FlagEmbedding's layout.
    let fe = tempfile::tempdir().unwrap();
    write(
        fe.path(),
        "corpus.jsonl",
        "{\"id\": \"d1\", \"title\": \"\", \"text\": \"body\"}\n",
    );
    write(
        fe.path(),
        "dev_queries.jsonl",
        "{\"id\": \"q1\", \"text\": \"what\"}\n",
    );
    write(
        fe.path(),
        "dev_qrels.jsonl",
        "{\"qid\": \"q1\", \"docid\": \"d1\", \"relevance\": 1}\n",
    );
    let data = DataSet::open(fe.path(), "dev").unwrap();
    assert_eq!(data.queries().unwrap()["q1"], "what");
    assert_eq!(data.qrels().unwrap()["q1"]["d1"], 1);
}

/// Files saved with a UTF-8 byte order mark read as without: the mark is not part of the first
/// query id or JSON line.
#[test]
fn a_byte_order_mark_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bom.trec", "\u{feff}1 Q0 a 1 2.5 t\n");
    assert!(read_run(&path).unwrap().contains_key("1"));
    let path = write(
        dir.path(),
        "bom_qrels.jsonl",
        "\u{feff}{\"qid\": \"1\", \"docid\": \"a\", \"relevance\": 2}\n",
    );
    assert_eq!(read_qrels(&path).unwrap()["1"]["a"], 2);
}
