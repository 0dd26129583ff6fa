//! Every gemma and layerwise MiniCPM setting FlagEmbedding 1.4.2 recorded: exact input ids, scores
//! within 5e-4 (f32) or twice PyTorch's own bf16-vs-f32 gap (bf16).

mod common;

use bge_rerank_engine::{LoadOptions, Precision, Reranker, ScoreOptions};
use common::{
    check_setting, fixture_model, settings, TORCH_BF16_GAP_GEMMA, TORCH_BF16_GAP_LAYERWISE,
};

fn check_family(prefix: &str, expected_settings: usize, bf16_tolerance: f64) {
    let settings = settings(prefix);
    assert_eq!(
        settings.len(),
        expected_settings,
        "{prefix}: settings present"
    );
    for (file, setting) in settings {
        let bf16 = setting["compute_dtype"] == "bfloat16";
        let (precision, tolerance) = if bf16 {
            (Precision::Bf16, bf16_tolerance)
        } else {
            (Precision::Auto, 5e-4)
        };
        check_setting(
            &file,
            setting["model"].as_str().unwrap(),
            &setting["kwargs"],
            precision,
            tolerance,
        );
    }
}

#[test]
fn every_gemma_setting_matches_flagembedding() {
    check_family("gemma-reranker", 8, 2.0 * TORCH_BF16_GAP_GEMMA);
}

#[test]
fn every_layerwise_setting_matches_flagembedding() {
    check_family(
        "minicpm-layerwise-reranker",
        9,
        2.0 * TORCH_BF16_GAP_LAYERWISE,
    );
}

#[test]
fn layers_are_sorted_deduplicated_and_checked() {
    let reranker = Reranker::load(
        &fixture_model("minicpm-layerwise-reranker"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(reranker.resolve_layers(None).unwrap(), vec![10]);
    assert_eq!(
        reranker.resolve_layers(Some(&[10, 8])).unwrap(),
        vec![8, 10]
    );
    assert_eq!(reranker.resolve_layers(Some(&[9, 9])).unwrap(), vec![9]);
    for bad in [&[7usize, 9][..], &[11], &[0]] {
        let err = reranker.resolve_layers(Some(bad)).unwrap_err().to_string();
        assert!(err.contains("8 to 10"), "{err}");
    }
    // Unsorted requests answer in ascending order, each layer with its own head.
    let pairs = [("what is panda?", "hi")];
    let scores = |layers: Vec<usize>| {
        let options = ScoreOptions {
            cutoff_layers: Some(layers),
            ..Default::default()
        };
        reranker
            .compute_scores(&pairs, &options, &|_| Ok(()))
            .unwrap()[0]
            .clone()
    };
    let ascending = scores(vec![8, 10]);
    assert_eq!(scores(vec![10, 8]), ascending);
    assert_eq!(ascending[0], scores(vec![8])[0]);
    assert_eq!(ascending[1], scores(vec![10])[0]);
}

#[test]
fn cutoff_layers_on_other_families_is_an_error() {
    let reranker =
        Reranker::load(&fixture_model("gemma-reranker"), &LoadOptions::default()).unwrap();
    let err = reranker.resolve_layers(Some(&[1])).unwrap_err().to_string();
    assert!(err.contains("layerwise"), "{err}");
}
