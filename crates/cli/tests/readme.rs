//! The README's examples work on a fresh clone: the repository paths they use exist, none points at
//! folders a clone does not have (`../shared`), and the README says how to get `bge-rerank` on the PATH.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The lines of the README's fenced code blocks.
fn code_lines(readme: &str) -> Vec<&str> {
    let mut inside = false;
    let mut lines = Vec::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
        } else if inside {
            lines.push(line);
        }
    }
    lines
}

#[test]
fn readme_examples_use_paths_a_clone_has() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains("cargo install --path crates/cli") && root().join("crates/cli").is_dir(),
        "the README says how to put bge-rerank on the PATH"
    );
    let code = code_lines(&readme);
    assert!(code.len() > 20, "code blocks found");
    for line in &code {
        assert!(
            !line.contains("../shared"),
            "a clone has no ../shared: {line}"
        );
        for word in line.split_whitespace() {
            let word = word.trim_matches(|c: char| "\"'(),;`".contains(c));
            if word.starts_with("tests/fixtures/") {
                assert!(root().join(word).exists(), "{word} (in: {line})");
            }
        }
    }
}
