//! Shared helpers for the engine's integration tests: the fixtures copied from FlagEmbedding's runs.
#![allow(dead_code)]

use std::path::PathBuf;

use bge_rerank_engine::ops::cpu::{CpuFeatures, MatmulKernel};
use bge_rerank_engine::{
    BatchLimits, InputOptions, LoadOptions, Precision, Reranker, ScoreOptions,
};
use serde_json::Value;

/// PyTorch's own bf16-vs-f32 gap on each family's fixture (largest |score difference| FlagEmbedding
/// 1.4.2 recorded between its bf16 and f32 runs): the scale reduced-precision tolerances are set on.
pub const TORCH_BF16_GAP_XLMR: f64 = 3.07e-2;
pub const TORCH_BF16_GAP_GEMMA: f64 = 7.23e-2;
pub const TORCH_BF16_GAP_LAYERWISE: f64 = 6.48e-2;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn fixture_model(name: &str) -> String {
    fixtures().join(name).to_string_lossy().into_owned()
}

pub fn read_jsonl(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// (setting file name, its entry in settings.json) for the settings of one model-name prefix.
pub fn settings(prefix: &str) -> Vec<(String, Value)> {
    let path = fixtures().join("expected/settings.json");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out: Vec<(String, Value)> = all["settings"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Copies a fixture model folder into a temp dir, so a test can break it.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

/// FlagEmbedding's keyword arguments as our options.
pub fn options_from_kwargs(kwargs: &Value) -> ScoreOptions {
    let get = |key: &str| kwargs.get(key).and_then(Value::as_u64).map(|v| v as usize);
    ScoreOptions {
        input: InputOptions {
            max_length: get("max_length").unwrap_or(512),
            query_max_length: get("query_max_length"),
            prompt: kwargs
                .get("prompt")
                .and_then(Value::as_str)
                .map(str::to_string),
            passage_max_length: None,
        },
        batch: BatchLimits {
            batch_size: get("batch_size").unwrap_or(128),
            ..Default::default()
        },
        normalize: false,
        cutoff_layers: kwargs.get("cutoff_layers").map(|layers| {
            layers
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_u64().unwrap() as usize)
                .collect()
        }),
    }
}

fn as_scores(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().map(|v| v.as_f64().unwrap()).collect(),
        other => vec![other.as_f64().unwrap()],
    }
}

/// Every matrix kernel this CPU can run (a message names those it cannot).
pub fn kernels() -> Vec<MatmulKernel> {
    let cpu = CpuFeatures::detect();
    MatmulKernel::ALL
        .into_iter()
        .filter(|kernel| {
            let ok = kernel.supported(cpu);
            if !ok {
                eprintln!("skipping the {kernel} kernel: this CPU lacks it (it has: {cpu})");
            }
            ok
        })
        .collect()
}

/// Checks one expected file on every kernel this CPU has: input ids exactly, raw and normalized
/// scores within `tolerance`.
pub fn check_setting(
    file: &str,
    model: &str,
    kwargs: &Value,
    precision: Precision,
    tolerance: f64,
) {
    for kernel in kernels() {
        check_setting_on(file, model, kwargs, precision, tolerance, kernel);
    }
}

fn check_setting_on(
    file: &str,
    model: &str,
    kwargs: &Value,
    precision: Precision,
    tolerance: f64,
    kernel: MatmulKernel,
) {
    let adapter = kwargs
        .get("peft_path")
        .and_then(Value::as_str)
        .map(|p| fixtures().join(p));
    let options = LoadOptions {
        precision,
        adapter,
        kernel: Some(kernel),
        ..Default::default()
    };
    let reranker = Reranker::load(&fixture_model(model), &options).unwrap();
    let file_name = file;
    let file = &format!("{file_name} [{kernel}]");
    let expected = read_jsonl(&fixtures().join("expected").join(file_name));
    assert_eq!(expected.len(), 42, "{file}: one row per case");
    let pairs: Vec<(String, String)> = expected
        .iter()
        .map(|row| {
            (
                row["query"].as_str().unwrap().to_string(),
                row["passage"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut options = options_from_kwargs(kwargs);

    let inputs = reranker.build_inputs(&pairs, &options.input).unwrap();
    for (row, input) in expected.iter().zip(&inputs) {
        let ids: Vec<u32> = row["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(input.ids, ids, "{file} {}: input_ids", row["id"]);
    }

    let raw = reranker
        .compute_scores(&pairs, &options, &|_| Ok(()))
        .unwrap();
    options.normalize = true;
    let normalized = reranker
        .compute_scores(&pairs, &options, &|_| Ok(()))
        .unwrap();
    let mut worst: f64 = 0.0;
    for ((row, score), norm) in expected.iter().zip(&raw).zip(&normalized) {
        for (got, key) in [(score, "score"), (norm, "normalized")] {
            let want = as_scores(&row[key]);
            assert_eq!(
                got.len(),
                want.len(),
                "{file} {}: number of layers",
                row["id"]
            );
            for (g, w) in got.iter().zip(&want) {
                worst = worst.max((g - w).abs());
                assert!(
                    (g - w).abs() <= tolerance,
                    "{file} {}: {key} {g} vs FlagEmbedding {w}",
                    row["id"]
                );
            }
        }
    }
    eprintln!("{file}: max |diff| {worst:.2e} (tolerance {tolerance:.0e})");
}
