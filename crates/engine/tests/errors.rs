//! Bad model folders and options give errors that name the file, tensor or option -- never a panic.

mod common;

use bge_rerank_engine::{Error, InputOptions, LoadOptions, ModelDir, Reranker, ScoreOptions};
use common::{copy_fixture, fixture_model, fixtures};

fn load_err(path: &std::path::Path) -> String {
    match Reranker::load(path.to_str().unwrap(), &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(path, config.to_string()).unwrap();
}

/// Rewrites model.safetensors with `edit` applied to its tensors.
fn edit_weights(dir: &std::path::Path, edit: impl FnOnce(&mut Vec<(String, candle_core::Tensor)>)) {
    let path = dir.join("model.safetensors");
    let map = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    let mut tensors: Vec<(String, candle_core::Tensor)> = map.into_iter().collect();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors.into_iter().collect(), &path).unwrap();
}

#[test]
fn truncated_safetensors_names_the_file() {
    let dir = copy_fixture("xlmr-reranker");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let message = load_err(dir.path());
    assert!(message.contains("model.safetensors"), "{message}");
}

#[test]
fn garbage_safetensors_header_names_the_file() {
    let dir = copy_fixture("xlmr-reranker");
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    let message = load_err(dir.path());
    assert!(message.contains("model.safetensors"), "{message}");
}

#[test]
fn bad_config_json_names_the_file() {
    let dir = copy_fixture("xlmr-reranker");
    std::fs::write(dir.path().join("config.json"), "{ \"architectures\": [").unwrap();
    let message = load_err(dir.path());
    assert!(
        message.contains("config.json") && message.contains("invalid JSON"),
        "{message}"
    );
}

#[test]
fn config_missing_a_field_names_it() {
    let dir = copy_fixture("xlmr-reranker");
    edit_config(dir.path(), |c| {
        c.as_object_mut().unwrap().remove("hidden_size");
    });
    let message = load_err(dir.path());
    assert!(
        message.contains("config.json") && message.contains("hidden_size"),
        "{message}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy_fixture("xlmr-reranker");
    edit_weights(dir.path(), |t| {
        t.retain(|(name, _)| name != "roberta.encoder.layer.1.output.dense.bias")
    });
    let message = load_err(dir.path());
    assert!(
        message.contains("roberta.encoder.layer.1.output.dense.bias")
            && message.contains("missing"),
        "{message}"
    );
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let dir = copy_fixture("xlmr-reranker");
    edit_weights(dir.path(), |t| {
        for (name, tensor) in t.iter_mut() {
            if name == "classifier.dense.weight" {
                *tensor = tensor.narrow(0, 0, 16).unwrap();
            }
        }
    });
    let message = load_err(dir.path());
    assert!(
        message.contains("model.safetensors")
            && message.contains("classifier.dense.weight")
            && message.contains("[16, 32]")
            && message.contains("[32, 32]"),
        "{message}"
    );
}

#[test]
fn shard_missing_a_tensor_its_index_promises() {
    let dir = copy_fixture("xlmr-reranker-sharded");
    let index_path = dir.path().join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    index["weight_map"]["classifier.dense.bias"] = "model-00001-of-00004.safetensors".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    let message = load_err(dir.path());
    assert!(
        message.contains("model-00001-of-00004.safetensors")
            && message.contains("classifier.dense.bias"),
        "{message}"
    );
}

#[test]
fn missing_shard_file_is_named() {
    let dir = copy_fixture("xlmr-reranker-sharded");
    std::fs::remove_file(dir.path().join("model-00003-of-00004.safetensors")).unwrap();
    let message = load_err(dir.path());
    assert!(
        message.contains("model-00003-of-00004.safetensors"),
        "{message}"
    );
}

#[test]
fn no_weights_at_all() {
    let dir = copy_fixture("xlmr-reranker");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let message = load_err(dir.path());
    assert!(message.contains("no weights"), "{message}");
}

#[test]
fn missing_tokenizer_is_named() {
    let dir = copy_fixture("xlmr-reranker");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let message = load_err(dir.path());
    assert!(message.contains("tokenizer.json"), "{message}");
}

#[test]
fn unsupported_architecture_is_named_with_the_supported_list() {
    let dir = copy_fixture("xlmr-reranker");
    edit_config(dir.path(), |c| {
        c["architectures"] = serde_json::json!(["T5ForConditionalGeneration"])
    });
    let message = load_err(dir.path());
    assert!(
        message.contains("T5ForConditionalGeneration")
            && message.contains("XLMRobertaForSequenceClassification"),
        "{message}"
    );
}

#[test]
fn encoder_without_head_cannot_score() {
    let dir = copy_fixture("xlmr-reranker");
    edit_config(dir.path(), |c| {
        c["architectures"] = serde_json::json!(["XLMRobertaModel"])
    });
    let message = load_err(dir.path());
    assert!(
        message.contains("without a classification head"),
        "{message}"
    );
    // ... but its encoder loads.
    assert!(
        bge_rerank_engine::load_encoder(dir.path().to_str().unwrap(), Default::default()).is_ok()
    );
}

#[test]
fn multi_label_head_is_refused() {
    let dir = copy_fixture("xlmr-reranker");
    edit_config(dir.path(), |c| {
        c["id2label"] = serde_json::json!({"0": "A", "1": "B"});
    });
    let message = load_err(dir.path());
    assert!(message.contains("2 labels"), "{message}");
}

#[test]
fn model_not_found() {
    let missing = fixtures().join("no-such-model");
    let message = load_err(&missing);
    assert!(message.contains("no-such-model"), "{message}");
}

#[test]
fn hub_id_resolves_through_a_cache_folder_and_reports_absence() {
    let cache = tempfile::tempdir().unwrap();
    let err = ModelDir::from_hub_cache("BAAI/bge-reranker-v2-m3", cache.path()).unwrap_err();
    assert!(matches!(err, Error::ModelNotFound { .. }));
    assert!(err.to_string().contains("BAAI/bge-reranker-v2-m3"), "{err}");

    // Lay out a snapshot as huggingface_hub does and resolve it.
    let repo = cache.path().join("models--BAAI--bge-reranker-v2-m3");
    let snapshot = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    for entry in std::fs::read_dir(fixtures().join("xlmr-reranker")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), snapshot.join(entry.file_name())).unwrap();
    }
    let dir = ModelDir::from_hub_cache("BAAI/bge-reranker-v2-m3", cache.path()).unwrap();
    assert_eq!(dir.root(), snapshot);
}

#[test]
fn input_longer_than_the_position_table_is_an_error() {
    let reranker =
        Reranker::load(&fixture_model("xlmr-reranker"), &LoadOptions::default()).unwrap();
    let long = "word ".repeat(2000);
    let options = ScoreOptions {
        input: InputOptions {
            max_length: 1000,
            query_max_length: None,
            prompt: None,
            passage_max_length: None,
        },
        ..Default::default()
    };
    let err = reranker
        .compute_score(&[("q", long.as_str())], &options)
        .unwrap_err();
    assert!(err.to_string().contains("positions"), "{err}");
}

#[test]
fn zero_max_length_is_an_error() {
    let reranker =
        Reranker::load(&fixture_model("xlmr-reranker"), &LoadOptions::default()).unwrap();
    let options = ScoreOptions {
        input: InputOptions {
            max_length: 0,
            query_max_length: None,
            prompt: None,
            passage_max_length: None,
        },
        ..Default::default()
    };
    let err = reranker.compute_score(&[("q", "p")], &options).unwrap_err();
    assert!(err.to_string().contains("max_length"), "{err}");
}

fn load_with_adapter(model: &str, adapter: &std::path::Path) -> String {
    let options = LoadOptions {
        adapter: Some(adapter.to_path_buf()),
        ..Default::default()
    };
    match Reranker::load(&fixture_model(model), &options) {
        Ok(_) => panic!("loaded with adapter {}", adapter.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_adapter_config(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("adapter_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(path, config.to_string()).unwrap();
}

#[test]
fn unsupported_adapters_are_named() {
    for (edit, expect) in [
        (serde_json::json!({"peft_type": "IA3"}), "IA3"),
        (serde_json::json!({"use_dora": true}), "DoRA"),
        (
            serde_json::json!({"target_modules": ".*proj"}),
            "target_modules",
        ),
        (serde_json::json!({"bias": "all"}), "bias"),
        (
            serde_json::json!({"target_modules": ["q_proj"]}),
            "not in target_modules",
        ),
    ] {
        let dir = copy_fixture("gemma-reranker-lora");
        edit_adapter_config(dir.path(), |c| {
            for (k, v) in edit.as_object().unwrap() {
                c[k] = v.clone();
            }
        });
        let message = load_with_adapter("gemma-reranker", dir.path());
        assert!(message.contains(expect), "{edit}: {message}");
        assert!(
            message.contains("adapter_config.json") || message.contains("adapter_model"),
            "{message}"
        );
    }
}

#[test]
fn adapter_for_another_model_is_refused() {
    // The gemma adapter targets modules the layerwise model has, but with other shapes.
    let adapter = fixtures().join("gemma-reranker-lora");
    let message = load_with_adapter("minicpm-layerwise-reranker", &adapter);
    assert!(message.contains("shape"), "{message}");
    // Encoders take no adapters.
    let message = load_with_adapter("xlmr-reranker", &adapter);
    assert!(message.contains("LLM rerankers"), "{message}");
    // A folder without an adapter.
    let message = load_with_adapter("gemma-reranker", &fixtures().join("xlmr-reranker"));
    assert!(message.contains("adapter_config.json"), "{message}");
}

#[test]
fn prompt_on_a_cross_encoder_is_an_error() {
    let reranker =
        Reranker::load(&fixture_model("xlmr-reranker"), &LoadOptions::default()).unwrap();
    let options = ScoreOptions {
        input: InputOptions {
            prompt: Some("Is B relevant to A?".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = reranker.compute_score(&[("q", "p")], &options).unwrap_err();
    assert!(err.to_string().contains("prompt"), "{err}");
}
