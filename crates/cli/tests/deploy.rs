//! `deploy/` cannot be run here (no images can be pulled), so what can rot is checked against the
//! binary: every flag and BGE_RERANK_* variable the Dockerfile and the manifests use exists in
//! `bge-rerank serve --help`, the ports agree, the probe paths answer 200 on a running server, and the
//! grace period outlasts the request timeout.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn serve_help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_bge-rerank"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The values of `key:` lines (YAML) in `text`, unquoted.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix(key))
        .filter_map(|rest| rest.strip_prefix(':'))
        .map(|v| v.trim().trim_matches('"'))
        .collect()
}

/// The BGE_RERANK_* names in `text`.
fn variables(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("BGE_RERANK_"))
        .map(str::to_string)
        .collect()
}

/// The value a manifest gives an environment variable (`- name: X` then `value: V`).
fn env_value<'a>(manifest: &'a str, name: &str) -> Option<&'a str> {
    let lines: Vec<&str> = manifest.lines().map(str::trim).collect();
    let at = lines.iter().position(|l| *l == format!("- name: {name}"))?;
    lines[at + 1]
        .strip_prefix("value:")
        .map(|v| v.trim().trim_matches('"'))
}

#[test]
fn deployment_files_agree_with_the_binary() {
    let help = serve_help();
    let dockerfile = read("deploy/Dockerfile");
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let service = read("deploy/kubernetes/service.yaml");
    let hpa = read("deploy/kubernetes/hpa.yaml");
    for text in [&dockerfile, &deployment] {
        let names = variables(text);
        assert!(!names.is_empty());
        for name in names {
            assert!(
                help.contains(&format!("env: {name}")),
                "{name} is not a serve variable"
            );
        }
    }
    // Flags passed as container arguments.
    let args_line = deployment
        .lines()
        .find(|l| l.trim().starts_with("args:"))
        .unwrap();
    for flag in args_line.split('"').filter(|w| w.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")),
            "{flag} is not a serve flag"
        );
    }
    assert!(dockerfile.contains(r#"ENTRYPOINT ["bge-rerank", "serve"]"#));
    assert!(
        dockerfile.contains("BGE_RERANK_HOST=0.0.0.0"),
        "listens on every interface"
    );
    assert!(dockerfile.contains("USER 10001"), "runs as a non-root user");

    // One port everywhere.
    let port = "8080";
    assert!(dockerfile.contains(&format!("EXPOSE {port}")));
    assert!(dockerfile.contains(&format!("BGE_RERANK_PORT={port}")));
    assert_eq!(env_value(&deployment, "BGE_RERANK_PORT"), Some(port));
    assert_eq!(values(&deployment, "containerPort"), [port]);
    assert_eq!(values(&service, "targetPort"), [port]);
    assert_eq!(values(&hpa, "kind")[1], "Deployment");
    assert!(values(&hpa, "name").contains(&"bge-rerank"));

    // SIGTERM drains: the grace period must outlast the longest request.
    let timeout: f64 = env_value(&deployment, "BGE_RERANK_REQUEST_TIMEOUT")
        .unwrap()
        .parse()
        .unwrap();
    let grace: f64 = values(&deployment, "terminationGracePeriodSeconds")[0]
        .parse()
        .unwrap();
    assert!(
        grace > timeout,
        "grace {grace} s <= request timeout {timeout} s"
    );

    // The probes' paths answer on a running server (configured as the container is).
    let paths = values(&deployment, "path");
    assert!(paths.len() >= 2, "readiness and liveness probes");
    let model = root().join("tests/fixtures/xlmr-reranker");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bge-rerank"))
        .arg("serve")
        .env("BGE_RERANK_MODEL", &model)
        .env("BGE_RERANK_PORT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "server exited");
        if let Some(rest) = line.trim().strip_prefix("bge-rerank listening on ") {
            break rest.to_string();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let statuses: Vec<u16> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut statuses = Vec::new();
        for path in &paths {
            let response = reqwest::get(format!("{addr}{path}")).await.unwrap();
            statuses.push(response.status().as_u16());
        }
        statuses
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        statuses.iter().all(|&s| s == 200),
        "{paths:?}: {statuses:?}"
    );
}
