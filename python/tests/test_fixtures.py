"""Every fixture setting FlagEmbedding 1.4.2 recorded, called as FlagEmbedding was called: the class
and keyword arguments from settings.json, scores within the engine's tolerances."""

import pytest

import bge_rerank
from conftest import FIXTURES, TORCH_BF16_GAP, read_jsonl, settings

SETTINGS = sorted(
    (name, setting)
    for name, setting in settings().items()
    if (FIXTURES / "expected" / name).exists()
)


def tolerance(setting: dict) -> float:
    family = setting["model"].split("-")[0]
    if setting["compute_dtype"] == "bfloat16":
        return 2 * TORCH_BF16_GAP[family]
    return 1e-4 if family in ("xlmr", "bert") else 5e-4


def test_every_family_is_covered():
    classes = {setting["class"] for _, setting in SETTINGS}
    assert classes == {"FlagReranker", "FlagLLMReranker", "LayerWiseFlagLLMReranker"}
    assert len(SETTINGS) >= 20


@pytest.mark.parametrize("name,setting", SETTINGS, ids=[name for name, _ in SETTINGS])
def test_setting_matches_flagembedding(name, setting):
    kwargs = dict(setting["kwargs"])
    if "peft_path" in kwargs:
        kwargs["peft_path"] = str(FIXTURES / kwargs["peft_path"])
    if setting["compute_dtype"] == "bfloat16" and setting["class"] == "FlagReranker":
        kwargs["use_bf16"] = True  # FlagEmbedding ran this model in bf16 on a GPU
    cls = getattr(bge_rerank, setting["class"])
    reranker = cls(str(FIXTURES / setting["model"]), **kwargs)
    expected = read_jsonl(FIXTURES / "expected" / name)
    pairs = [[case["query"], case["passage"]] for case in expected]
    limit = tolerance(setting)
    for normalize, key in ((False, "score"), (True, "normalized")):
        got = reranker.compute_score(pairs, normalize=normalize)
        layers = setting.get("layers") or []
        if len(layers) > 1:  # one list per layer -> one list per pair, as the file holds them
            got = [list(per_pair) for per_pair in zip(*got)]
        assert len(got) == len(expected)
        for case, score in zip(expected, got):
            want = case[key]
            if isinstance(want, list):
                assert len(score) == len(want), case["id"]
                diffs = [abs(a - b) for a, b in zip(score, want)]
            else:
                diffs = [abs(score - want)]
            assert max(diffs) <= limit, f"{name} {case['id']} {key}: {score} vs {want}"
