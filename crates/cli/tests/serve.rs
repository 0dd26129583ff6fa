//! `bge-rerank serve` as a process: it says where it listens, serves, and on SIGTERM finishes the
//! requests it accepted and exits 0.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// The address a starting server says it listens on (read from its stderr, which is then drained
/// by a thread: the server logs every request there, and must never block on a full pipe).
fn listening_address(child: &mut std::process::Child) -> String {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited before listening"
        );
        if let Some(rest) = line.trim().strip_prefix("bge-rerank listening on ") {
            break rest.to_string();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    addr
}

#[test]
fn serve_answers_then_drains_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bge-rerank"))
        .args(["serve", "--model", &fixture("xlmr-reranker")])
        // A host name, not only an IP address.
        .args(["--host", "localhost", "--port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut child);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let statuses = runtime.block_on(async {
        let client = reqwest::Client::new();
        let texts: Vec<String> = (0..300)
            .map(|i| format!("doc {i} {}", "panda ".repeat(80)))
            .collect();
        let body = serde_json::json!({"query": "what is panda?", "texts": texts});
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let request = client.post(format!("{addr}/rerank")).json(&body).send();
            tasks.push(tokio::spawn(request));
        }
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(
                task.await
                    .unwrap()
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0),
            );
        }
        statuses
    });
    let status = child.wait().unwrap();
    assert_eq!(
        statuses,
        vec![200, 200, 200],
        "every accepted request is answered"
    );
    assert!(status.success(), "exit status {status:?}");
}

/// Containers configure the server with environment variables: every flag has one.
#[test]
fn serve_is_configured_by_environment_variables() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bge-rerank"))
        .arg("serve")
        .env("BGE_RERANK_MODEL", fixture("xlmr-reranker"))
        .env("BGE_RERANK_SERVED_MODEL_NAME", "rerank-english")
        .env("BGE_RERANK_PORT", "0")
        .env("BGE_RERANK_MAX_DOCUMENTS", "7")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut child);
    let info: serde_json::Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let response = reqwest::get(format!("{addr}/info")).await.unwrap();
        response.json().await.unwrap()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(info["models"][0]["name"], "rerank-english", "{info}");
    assert_eq!(info["limits"]["max_documents"], 7, "{info}");
    let help = Command::new(env!("CARGO_BIN_EXE_bge-rerank"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in help.lines().filter_map(|l| l.trim().strip_prefix("--")) {
        let flag = flag.split([' ', ',']).next().unwrap_or_default();
        if flag == "help" || flag.is_empty() {
            continue;
        }
        let var = format!("BGE_RERANK_{}", flag.replace('-', "_").to_uppercase());
        assert!(help.contains(&var), "--{flag} has no {var}");
    }
}

/// `--model-option` names a served model and a known key; anything else is refused before loading.
#[test]
fn model_options_are_checked() {
    let refused = |option: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_bge-rerank"))
            .args([
                "serve",
                "--model",
                &format!("m={}", fixture("xlmr-reranker")),
            ])
            .args(["--port", "0", "--model-option", option])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{option} accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(refused("nope:max_length=3").contains("no served model is named `nope` (served: m)"));
    assert!(refused("m:colour=blue").contains("unknown key `colour`"));
    assert!(refused("m:max_length=0").contains("positive whole number"));
    assert!(refused("m:dtype=f64").contains("--model-option m:dtype=f64"));
    assert!(refused("max_length").contains("NAME:KEY=VALUE"));
}
