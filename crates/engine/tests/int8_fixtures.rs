//! `--dtype int8` on every family's f32 settings, against FlagEmbedding 1.4.2's f32 scores: same
//! inputs exactly, scores within what quantization costs (see the tolerance below), on every kernel
//! (VNNI and the portable loop give the same integers, so the same scores).

mod common;

use bge_rerank_engine::Precision;
use common::{
    check_setting, settings, TORCH_BF16_GAP_GEMMA, TORCH_BF16_GAP_LAYERWISE, TORCH_BF16_GAP_XLMR,
};

/// int8 keeps 7-8 significant bits per weight and activation, as bf16 does, but rounds every input
/// of every product (bf16 products are exact): its error is a few times bf16's. Measured on these
/// fixtures (largest |diff| against FlagEmbedding f32, raw scores): xlmr 5.8e-2 (1.9x PyTorch's bf16
/// gap), gemma 1.94e-1 (2.7x), layerwise 1.08e-1 (1.7x). Three times PyTorch's gap bounds them all;
/// a mistake in the integer arithmetic fails it (tried: activation zero points off by one fail
/// all three families).
const TIMES_TORCH_BF16_GAP: f64 = 3.0;

/// The fixtures' f32 settings of one model-name prefix, scored in int8.
fn check_family_in_int8(prefix: &str, tolerance: f64) {
    let f32_settings: Vec<_> = settings(prefix)
        .into_iter()
        .filter(|(_, s)| s["compute_dtype"] == "float32")
        .collect();
    assert!(!f32_settings.is_empty(), "{prefix}: f32 settings present");
    for (file, setting) in f32_settings {
        check_setting(
            &file,
            setting["model"].as_str().unwrap(),
            &setting["kwargs"],
            Precision::Int8,
            tolerance,
        );
    }
}

#[test]
fn xlmr_in_int8_stays_near_flagembedding_f32() {
    check_family_in_int8("xlmr-reranker", TIMES_TORCH_BF16_GAP * TORCH_BF16_GAP_XLMR);
}

#[test]
fn gemma_in_int8_stays_near_flagembedding_f32() {
    check_family_in_int8(
        "gemma-reranker",
        TIMES_TORCH_BF16_GAP * TORCH_BF16_GAP_GEMMA,
    );
}

#[test]
fn layerwise_in_int8_stays_near_flagembedding_f32() {
    check_family_in_int8(
        "minicpm-layerwise-reranker",
        TIMES_TORCH_BF16_GAP * TORCH_BF16_GAP_LAYERWISE,
    );
}

/// `bge-rerank quantize` (`int8_folder::save`) on every family: the saved folder loads as int8 with
/// the default precision and gives the very scores of `--dtype int8` on the original folder; it is
/// smaller; any other precision, and quantizing it again, are refused with a message saying why.
#[test]
fn saved_int8_folders_score_as_int8_does_on_the_original() {
    use bge_rerank_engine::{int8_folder, LoadOptions, Reranker, ScoreOptions};
    let pairs: Vec<(String, String)> = common::read_jsonl(&common::fixtures().join("cases.jsonl"))
        .iter()
        .map(|case| {
            let text = |key: &str| case[key].as_str().unwrap_or_default().to_string();
            (text("query"), text("passage"))
        })
        .collect();
    assert!(pairs.len() > 10);
    let options = |precision| LoadOptions {
        precision,
        ..Default::default()
    };
    for model in [
        "xlmr-reranker",
        "xlmr-reranker-sharded",
        "bert-reranker",
        "gemma-reranker",
        "minicpm-layerwise-reranker",
    ] {
        let original = common::fixture_model(model);
        let out = tempfile::tempdir().unwrap();
        let saved = int8_folder::save(&original, out.path(), true).unwrap();
        assert!(saved.quantized > 0, "{model}: nothing quantized");
        assert!(saved.bytes_after < saved.bytes_before, "{model}: {saved:?}");
        let saved_path = out.path().to_str().unwrap();
        let at_load = Reranker::load(&original, &options(Precision::Int8)).unwrap();
        let reloaded = Reranker::load(saved_path, &options(Precision::Auto)).unwrap();
        let score = |r: &Reranker| r.compute_scores(&pairs, &ScoreOptions::default(), &|_| Ok(()));
        assert_eq!(
            score(&reloaded).unwrap(),
            score(&at_load).unwrap(),
            "{model}: saved int8 scores differ from int8 at load"
        );
        let refused = Reranker::load(saved_path, &options(Precision::F32))
            .err()
            .unwrap();
        assert!(
            refused.to_string().contains("int8 only"),
            "{model}: {refused}"
        );
        let again = int8_folder::save(saved_path, tempfile::tempdir().unwrap().path(), true);
        assert!(again
            .unwrap_err()
            .to_string()
            .contains("already holds int8"));
    }
}
