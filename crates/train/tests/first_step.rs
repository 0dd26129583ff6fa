//! The first training step reproduces FlagEmbedding 1.4.2's loss and gradients (fixtures in
//! tests/fixtures/training, made by FlagEmbedding itself): full fine-tuning of the XLM-R reranker and
//! LoRA on the Gemma reranker.

use std::collections::HashMap;
use std::path::PathBuf;

use bge_rerank_engine::trainable::{LoraSettings, TrainSetup, TrainableModel};
use bge_rerank_engine::InputOptions;
use bge_rerank_train::loss::batch_loss;
use candle_core::{Device, Tensor};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn check_first_step(fixture: &str, model: &TrainableModel, grad_name: &dyn Fn(&str) -> String) {
    let dir = fixtures().join("training");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(fixture)).unwrap()).unwrap();
    let group_size = expected["group_size"].as_u64().unwrap() as usize;
    let mut pairs = Vec::new();
    for group in expected["groups"].as_array().unwrap() {
        let query = group["query"].as_str().unwrap();
        pairs.push((query, group["pos"].as_str().unwrap()));
        for neg in group["neg"].as_array().unwrap() {
            pairs.push((query, neg.as_str().unwrap()));
        }
    }
    let options = InputOptions {
        max_length: expected["max_length"].as_u64().unwrap() as usize,
        ..Default::default()
    };
    let inputs = model.build_inputs(&pairs, &options).unwrap();
    let ids: Vec<Vec<u32>> = inputs.iter().map(|i| i.ids.clone()).collect();
    let expected_ids: Vec<Vec<u32>> =
        serde_json::from_value(expected["input_ids"].clone()).unwrap();
    assert_eq!(
        ids, expected_ids,
        "training inputs differ from FlagEmbedding's"
    );

    let refs: Vec<_> = inputs.iter().collect();
    let logits = model.logits(&refs).unwrap();
    let got: Vec<f32> = logits[0].to_vec1().unwrap();
    let want: Vec<f32> = expected["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| {
            g.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "logits {got:?} vs {want:?}");
    }
    let loss = batch_loss(&logits, group_size, None).unwrap();
    let loss_value: f32 = loss.to_scalar().unwrap();
    let want_loss = expected["loss"].as_f64().unwrap() as f32;
    assert!(
        (loss_value - want_loss).abs() < 1e-5,
        "loss {loss_value} vs FlagEmbedding's {want_loss}"
    );

    let grads = loss.backward().unwrap();
    let reference = candle_core::safetensors::load(
        dir.join(expected["grads_file"].as_str().unwrap()),
        &Device::Cpu,
    )
    .unwrap();
    let ours: HashMap<String, Tensor> = model
        .params()
        .iter()
        .filter_map(|(name, var)| {
            grads
                .get(var.as_tensor())
                .map(|g| (grad_name(name), g.clone()))
        })
        .collect();
    assert_eq!(reference.len(), ours.len(), "gradients for {:?}", {
        let mut names: Vec<_> = ours.keys().collect();
        names.sort();
        names
    });
    for (name, want) in &reference {
        let got = ours
            .get(name)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let diff = (got - want)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap();
        let norm = want.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
        let (diff, norm): (f32, f32) = (diff.to_scalar().unwrap(), norm.to_scalar().unwrap());
        // The output bias's gradient is zero in exact arithmetic (each group's softmax minus its
        // one-hot target sums to zero): FlagEmbedding's 7e-9 is rounding noise, compared absolutely.
        if norm < 1e-6 {
            assert!(
                diff < 1e-6,
                "{name}: gradient {diff} away from FlagEmbedding's ~0"
            );
            continue;
        }
        let relative = diff / norm;
        assert!(
            relative < 1e-3,
            "{name}: relative gradient error {relative} (norm {norm})"
        );
    }
}

#[test]
fn xlmr_full_fine_tuning_first_step_matches_flagembedding() {
    let model = TrainableModel::load(
        fixtures().join("xlmr-reranker").to_str().unwrap(),
        TrainSetup {
            seed: 0,
            dropout: false,
            ..Default::default()
        },
    )
    .unwrap();
    check_first_step("xlmr-reranker.json", &model, &|name| name.to_string());
}

#[test]
fn gemma_lora_first_step_matches_flagembedding() {
    let model = TrainableModel::load(
        fixtures().join("gemma-reranker").to_str().unwrap(),
        TrainSetup {
            lora: LoraSettings {
                start: Some(fixtures().join("training/gemma-lora-start")),
                ..Default::default()
            },
            seed: 0,
            dropout: false,
        },
    )
    .unwrap();
    // peft names the trained adapter "default" inside the model.
    check_first_step("gemma-reranker-lora.json", &model, &|name| {
        name.replace(".lora_A.weight", ".lora_A.default.weight")
            .replace(".lora_B.weight", ".lora_B.default.weight")
    });
}
