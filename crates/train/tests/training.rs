//! Training end to end on the tiny fixtures: the loss goes down, checkpoints reload and score exactly
//! as the model that wrote them, an interrupted run resumes to the same weights, and the LLM families
//! train LoRA adapters that `--adapter` loads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use bge_rerank_engine::trainable::{LoraSettings, TrainSetup, TrainableModel};
use bge_rerank_engine::{InputOptions, LoadOptions, Reranker, ScoreOptions};
use bge_rerank_train::loss::batch_loss;
use bge_rerank_train::optimizer::AdamW;
use bge_rerank_train::{train, StepLog, TrainObserver, TrainOptions};
use candle_nn::ParamsAdamW;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Two queries with exactly three negatives each: every group holds the same passages, so with a
/// batch of both queries every step's loss is measured on the same pairs.
fn tiny_data(dir: &Path, teacher: bool) -> PathBuf {
    let mut lines = vec![
        serde_json::json!({"query": "what is panda?",
            "pos": ["The giant panda (Ailuropoda melanoleuca) is a bear species endemic to China."],
            "neg": ["hi", "北京是中华人民共和国的首都。", "El oso panda gigante es una especie de China."]}),
        serde_json::json!({"query": "什么是大熊猫？",
            "pos": ["大熊猫是中国特有的熊科动物。"],
            "neg": ["passage", "Гигантская панда — вид медведей.", "Der Große Panda ist eine Bärenart."]}),
    ];
    if teacher {
        for line in &mut lines {
            line["pos_scores"] = serde_json::json!([3.0]);
            line["neg_scores"] = serde_json::json!([-1.0, 0.5, 1.0]);
        }
    }
    let path = dir.join("train.jsonl");
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
    path
}

fn options(model: &str, data: PathBuf, output: &Path) -> TrainOptions {
    TrainOptions {
        model: model.to_string(),
        data,
        output: output.to_path_buf(),
        max_steps: Some(8),
        group_size: 4,
        batch_size: 2,
        grad_accum: 1,
        lr: Some(2e-3),
        warmup_ratio: 0.0,
        input: InputOptions {
            max_length: 64,
            ..Default::default()
        },
        ..Default::default()
    }
}

struct Quiet;
impl TrainObserver for Quiet {}

fn losses(output: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(output.join("train_log.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<StepLog>(l).unwrap().loss)
        .collect()
}

#[test]
fn encoder_training_lowers_the_loss_and_writes_a_loadable_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut opts = options(
        &fixture("xlmr-reranker"),
        tiny_data(dir.path(), false),
        &out,
    );
    opts.dropout = false;
    opts.save_steps = Some(4);
    let summary = train(&opts, &Quiet, &AtomicBool::new(false)).unwrap();
    assert_eq!(summary.steps, 8);
    let losses = losses(&out);
    assert_eq!(losses.len(), 8);
    assert!(
        losses[7] < losses[0] * 0.8,
        "the loss should fall on a fixed batch: {losses:?}"
    );
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "training_curves.svg",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    for step in ["checkpoint-4", "checkpoint-8"] {
        assert!(out.join(step).join("optimizer.safetensors").is_file());
        assert!(out.join(step).join("trainer_state.json").is_file());
    }
    // The trained model separates the positive from the negatives it was trained on.
    let reranker = Reranker::load(out.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let scores = reranker
        .compute_score(
            &[
                (
                    "what is panda?",
                    "The giant panda (Ailuropoda melanoleuca) is a bear species endemic to China.",
                ),
                ("what is panda?", "hi"),
            ],
            &ScoreOptions::default(),
        )
        .unwrap();
    assert!(scores[0] > scores[1], "{scores:?}");
}

/// Stops the run after `at` steps, as Ctrl-C does.
struct StopAt<'a> {
    at: usize,
    stop: &'a AtomicBool,
}

impl TrainObserver for StopAt<'_> {
    fn step(&self, log: &StepLog) {
        if log.step == self.at {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

#[test]
fn an_interrupted_run_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path(), false);
    let straight = dir.path().join("straight");
    let mut opts = options(&fixture("xlmr-reranker"), data.clone(), &straight);
    opts.max_steps = Some(5);
    opts.batch_size = 1;
    train(&opts, &Quiet, &AtomicBool::new(false)).unwrap();

    // Stopped after step 3, resumed from the checkpoint of step 2 (as after a crash): step 3 is
    // redone, and logged once.
    let resumed = dir.path().join("resumed");
    opts.output = resumed.clone();
    opts.save_steps = Some(2);
    let stop = AtomicBool::new(false);
    let first = train(&opts, &StopAt { at: 3, stop: &stop }, &stop).unwrap();
    assert!(first.interrupted);
    assert_eq!(first.steps, 3);
    opts.resume = Some(resumed.join("checkpoint-2"));
    let second = train(&opts, &Quiet, &AtomicBool::new(false)).unwrap();
    assert_eq!(second.steps, 5);

    let a = candle_core::safetensors::load(
        straight.join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let b = candle_core::safetensors::load(
        resumed.join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(a.len(), b.len());
    for (name, x) in &a {
        let diff: f32 = (x - &b[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-6, "{name} differs by {diff} after resuming");
    }
    assert_eq!(losses(&straight), losses(&resumed));
}

/// One optimizer step on a trainable model, then its logits on `pairs`.
fn step_and_score(model: &mut TrainableModel, pairs: &[(&str, &str)]) -> Vec<f32> {
    let options = InputOptions {
        max_length: 64,
        ..Default::default()
    };
    let inputs = model.build_inputs(pairs, &options).unwrap();
    let refs: Vec<_> = inputs.iter().collect();
    let loss = batch_loss(&model.logits(&refs).unwrap(), pairs.len(), None).unwrap();
    let grads = loss.backward().unwrap();
    let grads: Vec<_> = model
        .params()
        .iter()
        .map(|(_, v)| grads.get(v.as_tensor()).cloned())
        .collect();
    let mut optimizer = AdamW::new(ParamsAdamW {
        lr: 1e-2,
        ..Default::default()
    });
    optimizer.update(model.params(), &grads).unwrap();
    model.rebuild(1).unwrap();
    let logits = model.logits(&refs).unwrap();
    logits.last().unwrap().to_vec1().unwrap()
}

const PAIRS: [(&str, &str); 3] = [
    (
        "what is panda?",
        "The giant panda is a bear species endemic to China.",
    ),
    ("what is panda?", "hi"),
    ("什么是大熊猫？", "大熊猫是中国特有的熊科动物。"),
];

fn assert_close(a: &[f32], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((f64::from(*x) - y).abs() < 1e-4, "{what}: {a:?} vs {b:?}");
    }
}

#[test]
fn checkpoints_reload_and_score_as_the_trained_model() {
    let dir = tempfile::tempdir().unwrap();
    let setup = |lora| TrainSetup {
        lora,
        seed: 3,
        dropout: false,
    };
    let score = ScoreOptions {
        input: InputOptions {
            max_length: 64,
            ..Default::default()
        },
        ..Default::default()
    };

    let mut encoder =
        TrainableModel::load(&fixture("xlmr-reranker"), setup(LoraSettings::default())).unwrap();
    let trained = step_and_score(&mut encoder, &PAIRS);
    let saved = dir.path().join("encoder");
    encoder.save(&saved).unwrap();
    let reloaded = Reranker::load(saved.to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert_close(
        &trained,
        &reloaded.compute_score(&PAIRS, &score).unwrap(),
        "encoder",
    );

    let lora = LoraSettings {
        rank: 4,
        alpha: 8.0,
        ..Default::default()
    };
    let mut gemma = TrainableModel::load(&fixture("gemma-reranker"), setup(lora)).unwrap();
    let trained = step_and_score(&mut gemma, &PAIRS);
    let adapter = dir.path().join("adapter");
    gemma.save(&adapter).unwrap();
    assert!(adapter.join("adapter_config.json").is_file());
    let with_adapter = Reranker::load(
        &fixture("gemma-reranker"),
        &LoadOptions {
            adapter: Some(adapter),
            ..Default::default()
        },
    )
    .unwrap();
    assert_close(
        &trained,
        &with_adapter.compute_score(&PAIRS, &score).unwrap(),
        "gemma adapter",
    );
    let merged = dir.path().join("merged");
    gemma.save_merged(&merged).unwrap();
    let merged = Reranker::load(merged.to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert_close(
        &trained,
        &merged.compute_score(&PAIRS, &score).unwrap(),
        "gemma merged",
    );
}

#[test]
fn layerwise_lora_trains_every_head_and_its_adapter_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut opts = options(
        &fixture("minicpm-layerwise-reranker"),
        tiny_data(dir.path(), true),
        &out,
    );
    opts.max_steps = Some(4);
    opts.distill = true;
    opts.lora.rank = 4;
    opts.lora.alpha = 8.0;
    let summary = train(&opts, &Quiet, &AtomicBool::new(false)).unwrap();
    assert_eq!(summary.steps, 4);
    let losses = losses(&out);
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[3] < losses[0], "{losses:?}");
    let reranker = Reranker::load(
        &fixture("minicpm-layerwise-reranker"),
        &LoadOptions {
            adapter: Some(out.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let scores = reranker
        .compute_score(&PAIRS, &ScoreOptions::default())
        .unwrap();
    assert!(scores.iter().all(|s| s.is_finite()));
}

#[test]
fn distillation_needs_teacher_scores() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(
        &fixture("xlmr-reranker"),
        tiny_data(dir.path(), false),
        &dir.path().join("o"),
    );
    opts.distill = true;
    let error = train(&opts, &Quiet, &AtomicBool::new(false))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("pos_scores"), "{error}");
}

/// A plain `BertModel` folder made from the BERT reranker fixture: no head, no `bert.` prefix.
fn bare_bert(dir: &Path) -> PathBuf {
    let source = PathBuf::from(fixture("bert-reranker"));
    let bare = dir.join("bare-bert");
    std::fs::create_dir_all(&bare).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        if name != "model.safetensors" && name != "config.json" {
            std::fs::copy(&path, bare.join(name)).unwrap();
        }
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("config.json")).unwrap())
            .unwrap();
    config["architectures"] = serde_json::json!(["BertModel"]);
    let config = config.as_object_mut().unwrap();
    config.remove("id2label");
    config.remove("label2id");
    std::fs::write(
        bare.join("config.json"),
        serde_json::to_string(config).unwrap(),
    )
    .unwrap();
    let tensors =
        candle_core::safetensors::load(source.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let stripped: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .filter_map(|(name, t)| name.strip_prefix("bert.").map(|n| (n.to_string(), t)))
        .filter(|(name, _)| !name.starts_with("pooler."))
        .collect();
    candle_core::safetensors::save(&stripped, bare.join("model.safetensors")).unwrap();
    bare.to_string_lossy().into_owned().into()
}

#[test]
fn a_plain_encoder_gets_a_seeded_head_and_becomes_a_reranker() {
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_bert(dir.path());
    let setup = |seed| TrainSetup {
        seed,
        dropout: false,
        ..Default::default()
    };
    let load = |seed| TrainableModel::load(bare.to_str().unwrap(), setup(seed)).unwrap();
    let head = |model: &TrainableModel| -> Vec<f32> {
        let (_, var) = model
            .params()
            .iter()
            .find(|(n, _)| n == "classifier.weight")
            .unwrap();
        var.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    };
    assert_eq!(
        head(&load(5)),
        head(&load(5)),
        "the same seed gives the same head"
    );
    assert_ne!(head(&load(5)), head(&load(6)));
    let mut model = load(5);
    assert!(model
        .params()
        .iter()
        .any(|(n, _)| n == "bert.pooler.dense.weight"));
    let trained = step_and_score(&mut model, &PAIRS);
    let saved = dir.path().join("reranker");
    model.save(&saved).unwrap();
    let config = std::fs::read_to_string(saved.join("config.json")).unwrap();
    assert!(config.contains("BertForSequenceClassification"), "{config}");
    let reranker = Reranker::load(saved.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let score = ScoreOptions {
        input: InputOptions {
            max_length: 64,
            ..Default::default()
        },
        ..Default::default()
    };
    assert_close(
        &trained,
        &reranker.compute_score(&PAIRS, &score).unwrap(),
        "bert",
    );
}

/// A second run into the same folder is refused (its log and checkpoints would mix with the first
/// run's), unless `overwrite` clears the folder first; the folder the model comes from is never
/// cleared.
#[test]
fn a_used_output_folder_is_refused_or_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path(), false);
    let out = dir.path().join("run");
    let mut opts = options(&fixture("xlmr-reranker"), data, &out);
    opts.max_steps = Some(2);
    opts.save_steps = Some(1);
    train(&opts, &Quiet, &AtomicBool::new(false)).unwrap();
    assert!(out.join("checkpoint-1").is_dir());

    opts.max_steps = Some(1);
    let err = train(&opts, &Quiet, &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not empty") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(losses(&out).len(), 2, "the first run's log is untouched");

    opts.overwrite = true;
    train(&opts, &Quiet, &AtomicBool::new(false)).unwrap();
    assert_eq!(losses(&out).len(), 1, "one run's steps only");
    assert!(
        !out.join("checkpoint-2").exists(),
        "the old checkpoints are gone"
    );

    // The run's record and curves: what it trained from, no "mean of 1 steps", no "-0.00" tick.
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert!(
        record["fingerprint"]
            .as_str()
            .is_some_and(|f| f.len() == 16),
        "{record}"
    );
    assert!(record["version"]
        .as_str()
        .unwrap()
        .starts_with("bge-rerank "));
    let svg = std::fs::read_to_string(out.join("training_curves.svg")).unwrap();
    assert!(!svg.contains("mean of 1 steps") && !svg.contains(">-0.00<"));
    assert!(!svg.contains(">0.5<"), "no half steps on a 1-step axis");

    // Training the folder's own model again with --overwrite would delete it.
    opts.model = out.to_string_lossy().into_owned();
    let err = train(&opts, &Quiet, &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("would delete --model"), "{err}");
    assert!(out.join("model.safetensors").is_file());
}

/// LoRA options on a cross-encoder (trained in full) are an error, as a prompt is: one rule for
/// options that do not apply.
#[test]
fn lora_options_on_an_encoder_are_refused() {
    for lora in [
        LoraSettings {
            rank: 8,
            explicit: true,
            ..Default::default()
        },
        LoraSettings {
            start: Some(PathBuf::from(fixture("training/gemma-lora-start"))),
            ..Default::default()
        },
    ] {
        let setup = TrainSetup {
            lora,
            seed: 0,
            dropout: false,
        };
        let error = TrainableModel::load(&fixture("xlmr-reranker"), setup)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("apply to the LLM rerankers"), "{error}");
    }
}
