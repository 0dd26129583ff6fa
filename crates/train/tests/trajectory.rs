//! Six optimizer steps on the BERT fixture land where PyTorch lands with the Hugging Face Trainer's
//! rules (tests/fixtures/make_trajectory.py): the same loss, gradient norm and learning rate at every
//! step, and the same weights after the last. This covers what the first-step fixtures cannot: the
//! optimizer's moments and bias correction, weight decay and its exemptions, the warm-up/decay
//! schedule, clipping, the model rebuilt over updated variables, and four single-group passes
//! accumulated into what PyTorch computes in one padded pass.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use bge_rerank_engine::InputOptions;
use bge_rerank_train::{train, StepLog, TrainObserver, TrainOptions};
use candle_core::{Device, Tensor};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

struct Quiet;
impl TrainObserver for Quiet {}

/// |a - b| / |b - start|: how far apart two trained tensors are, against how far training moved them.
fn relative_gap(ours: &Tensor, theirs: &Tensor, start: &Tensor) -> f64 {
    let norm = |t: Tensor| -> f64 {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    let gap = norm((ours - theirs).unwrap()).sqrt();
    let moved = norm((theirs - start).unwrap()).sqrt();
    gap / moved.max(1e-12)
}

#[test]
fn six_steps_follow_pytorchs_losses_and_weights() {
    let dir = fixtures().join("training");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bert-trajectory.json")).unwrap())
            .unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("train.jsonl");
    let lines: Vec<String> = expected["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.to_string())
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let steps = expected["steps"].as_array().unwrap();
    let groups = lines.len();
    let options = TrainOptions {
        model: fixtures()
            .join("bert-reranker")
            .to_string_lossy()
            .into_owned(),
        data,
        output: work.path().join("out"),
        // One group per pass, all groups accumulated into each step: every step sees them all.
        epochs: steps.len(),
        group_size: expected["group_size"].as_u64().unwrap() as usize,
        batch_size: 1,
        grad_accum: groups,
        lr: expected["lr"].as_f64(),
        warmup_ratio: expected["warmup_ratio"].as_f64().unwrap(),
        input: InputOptions {
            max_length: expected["max_length"].as_u64().unwrap() as usize,
            ..Default::default()
        },
        dropout: false,
        ..Default::default()
    };
    let summary = train(&options, &Quiet, &AtomicBool::new(false)).unwrap();
    assert_eq!(summary.steps, steps.len());

    let log = std::fs::read_to_string(options.output.join("train_log.jsonl")).unwrap();
    let ours: Vec<StepLog> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (got, want) in ours.iter().zip(steps) {
        let close = |a: f64, b: &Value, tol: f64| (a - b.as_f64().unwrap()).abs() <= tol;
        assert!(
            close(got.loss, &want["loss"], 2e-5)
                && close(got.grad_norm, &want["grad_norm"], 1e-4 * got.grad_norm)
                && close(got.lr, &want["lr"], 1e-12),
            "step {}: ours loss {} grad norm {} lr {} vs PyTorch {want}",
            got.step,
            got.loss,
            got.grad_norm,
            got.lr
        );
    }

    let cpu = &Device::Cpu;
    let theirs =
        candle_core::safetensors::load(dir.join("bert-trajectory.weights.safetensors"), cpu)
            .unwrap();
    let trained =
        candle_core::safetensors::load(options.output.join("model.safetensors"), cpu).unwrap();
    let start =
        candle_core::safetensors::load(fixtures().join("bert-reranker/model.safetensors"), cpu)
            .unwrap();
    let word_ids = theirs["used_word_ids"]
        .to_dtype(candle_core::DType::U32)
        .unwrap();
    let word = "bert.embeddings.word_embeddings.weight";
    let rows = |t: &Tensor| t.index_select(&word_ids, 0).unwrap();
    let mut compared = 0;
    for (name, want) in &theirs {
        // Tensors whose true gradient is zero: a key bias adds the same amount to every score of a
        // query (softmax ignores it), the classifier bias the same logit to every member of a group
        // (the group's cross-entropy ignores it). Their gradients are rounding noise, which Adam
        // scales up to steps of the learning rate's size in both trainers, differently.
        let zero_gradient = name.ends_with("key.bias") || name == "classifier.bias";
        if name == "used_word_ids" || zero_gradient {
            continue;
        }
        let (got, begin) = if name == "used_word_rows" {
            (rows(&trained[word]), rows(&start[word]))
        } else {
            (trained[name].clone(), start[name].clone())
        };
        let gap = relative_gap(&got, want, &begin);
        assert!(
            gap < 1e-4,
            "{name}: ours is {gap:.2e} of the way PyTorch moved it away"
        );
        compared += 1;
    }
    assert!(compared > 30, "only {compared} tensors compared");
}
