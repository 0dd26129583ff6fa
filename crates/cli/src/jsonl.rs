//! JSON Lines in and out. Input is read and checked whole before any work starts, and output is
//! written only once everything succeeded (files via a temporary file and a rename), so a bad line
//! never leaves half an output behind.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{Map, Value};

/// `-` or a path.
pub fn read_input(source: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    if source == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
    } else {
        text = std::fs::read_to_string(source).with_context(|| format!("reading {source}"))?;
    }
    Ok(bge_rerank_engine::text::without_bom(&text).to_string())
}

/// One JSON object per non-blank line; errors name the source and line number.
pub fn parse_objects(source: &str, text: &str) -> anyhow::Result<Vec<(usize, Map<String, Value>)>> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(object)) => rows.push((line_no, object)),
            Ok(_) => bail!("{source}, line {line_no}: expected a JSON object"),
            Err(e) => bail!("{source}, line {line_no}: invalid JSON: {e}"),
        }
    }
    Ok(rows)
}

/// A string field of a parsed line.
pub fn string_field(
    source: &str,
    line_no: usize,
    object: &Map<String, Value>,
    field: &str,
) -> anyhow::Result<String> {
    match object.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => bail!(
            "{source}, line {line_no}: field `{field}` must be a string, not {}",
            kind(other)
        ),
        None => bail!("{source}, line {line_no}: missing field `{field}`"),
    }
}

/// Input lines kept whole (to be written back with a field added), and their (query, passage).
pub struct PairLines {
    pub objects: Vec<Map<String, Value>>,
    pub pairs: Vec<(String, String)>,
}

/// (query, passage) pairs from `{"query", "passage", ...}` lines.
pub fn read_pairs(source: &str) -> anyhow::Result<PairLines> {
    let text = read_input(source)?;
    let name = display_source(source);
    let rows = parse_objects(&name, &text)?;
    let mut pairs = Vec::with_capacity(rows.len());
    let mut objects = Vec::with_capacity(rows.len());
    for (line_no, object) in rows {
        let query = string_field(&name, line_no, &object, "query")?;
        let passage = string_field(&name, line_no, &object, "passage")?;
        pairs.push((query, passage));
        objects.push(object);
    }
    Ok(PairLines { objects, pairs })
}

pub fn display_source(source: &str) -> String {
    if source == "-" {
        "<stdin>".to_string()
    } else {
        source.to_string()
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Writes lines to `-` (stdout) or a file, the file replaced only when all is written.
pub fn write_lines(target: &str, lines: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut body = String::new();
    for line in lines {
        body.push_str(&line);
        body.push('\n');
    }
    if target == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(body.as_bytes())
            .context("writing standard output")?;
        return out.flush().context("writing standard output");
    }
    let path = Path::new(target);
    let tmp = temp_path(path);
    std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {target}"))
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}
