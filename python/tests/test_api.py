"""FlagEmbedding's calling conventions, the native API, errors, and equality with the CLI."""

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bge_rerank import (
    FlagAutoReranker,
    FlagLLMReranker,
    FlagReranker,
    LayerWiseFlagLLMReranker,
    Reranker,
)
from conftest import FIXTURES, cases, fixture, read_jsonl

PAIRS = [
    ["what is panda?", "hi"],
    ["what is panda?", "The giant panda (Ailuropoda melanoleuca) is a bear species endemic to China."],
    ["how tall is everest?", "Mount Everest is 8,849 metres high."],
]


@pytest.fixture(scope="module")
def xlmr():
    return FlagReranker(fixture("xlmr-reranker"))


@pytest.fixture(scope="module")
def layerwise():
    return LayerWiseFlagLLMReranker(fixture("minicpm-layerwise-reranker"))


def test_one_pair_gives_a_float_and_a_list_gives_a_list(xlmr):
    scores = xlmr.compute_score(PAIRS)
    assert isinstance(scores, list) and len(scores) == 3
    assert all(isinstance(s, float) for s in scores)
    one = xlmr.compute_score(PAIRS[1])
    assert isinstance(one, float) and one == scores[1]
    assert xlmr.compute_score(tuple(PAIRS[1])) == one
    assert xlmr.compute_score([tuple(p) for p in PAIRS]) == scores
    assert xlmr.compute_score([]) == []


def test_normalize_from_the_constructor_or_the_call(xlmr):
    raw = xlmr.compute_score(PAIRS)
    normalized = xlmr.compute_score(PAIRS, normalize=True)
    assert all(0 < s < 1 for s in normalized)
    assert normalized == pytest.approx([1 / (1 + math.exp(-r)) for r in raw], abs=1e-12)
    by_default = FlagReranker(fixture("xlmr-reranker"), normalize=True)
    assert by_default.compute_score(PAIRS) == normalized
    assert by_default.compute_score(PAIRS, normalize=False) == raw


def test_call_arguments_override_the_constructor(xlmr):
    short = FlagReranker(fixture("xlmr-reranker"), max_length=16)
    assert xlmr.compute_score(PAIRS, max_length=16) == short.compute_score(PAIRS)
    assert xlmr.compute_score(PAIRS, max_length=16) != xlmr.compute_score(PAIRS)
    # Batching never changes scores.
    assert xlmr.compute_score(PAIRS, batch_size=1) == xlmr.compute_score(PAIRS)


def test_encoder_instructions_prefix_the_texts(xlmr):
    instructed = FlagReranker(
        fixture("xlmr-reranker"),
        query_instruction_for_rerank="query:",
        query_instruction_format="{} {}",
        passage_instruction_for_rerank="passage:",
        passage_instruction_format="{}\\n{}",
    )
    by_hand = [[f"query: {q}", f"passage:\n{p}"] for q, p in PAIRS]
    assert instructed.compute_score(PAIRS) == xlmr.compute_score(by_hand)


def test_peft_path_merges_the_adapter():
    plain = FlagLLMReranker(fixture("gemma-reranker"))
    adapted = FlagLLMReranker(fixture("gemma-reranker"), peft_path=fixture("gemma-reranker-lora"))
    expected = read_jsonl(FIXTURES / "expected" / "gemma-reranker+lora__default.jsonl")
    pairs = [[c["query"], c["passage"]] for c in expected]
    got = adapted.compute_score(pairs)
    assert max(abs(g - c["score"]) for g, c in zip(got, expected)) < 5e-4
    assert got != plain.compute_score(pairs)
    with pytest.raises(ValueError, match="LoRA adapters apply to the LLM rerankers"):
        Reranker(fixture("xlmr-reranker"), adapter=fixture("gemma-reranker-lora"))


def test_prompt_per_call_equals_prompt_in_the_constructor():
    prompt = "Does passage B answer question A? Reply Yes or No."
    default = FlagLLMReranker(fixture("gemma-reranker"))
    prompted = FlagLLMReranker(fixture("gemma-reranker"), prompt=prompt)
    assert default.compute_score(PAIRS, prompt=prompt) == prompted.compute_score(PAIRS)
    assert default.compute_score(PAIRS) != prompted.compute_score(PAIRS)


def test_cutoff_layers_shape_results_as_flagembedding(layerwise):
    last = layerwise.compute_score(PAIRS)
    assert len(last) == 3 and all(isinstance(s, float) for s in last)
    assert layerwise.compute_score(PAIRS, cutoff_layers=[10]) == last
    per_layer = layerwise.compute_score(PAIRS, cutoff_layers=[9, 10])
    assert len(per_layer) == 2 and per_layer[1] == last  # one list per layer, ascending
    nine = layerwise.compute_score(PAIRS, cutoff_layers=[9])
    assert per_layer[0] == nine
    assert layerwise.compute_score(PAIRS[0], cutoff_layers=[9, 10]) == [nine[0], last[0]]
    in_constructor = LayerWiseFlagLLMReranker(fixture("minicpm-layerwise-reranker"), cutoff_layers=[9])
    assert in_constructor.compute_score(PAIRS) == nine
    assert in_constructor.compute_score(PAIRS, cutoff_layers=10) == last
    with pytest.raises(ValueError, match="layer"):
        layerwise.compute_score(PAIRS, cutoff_layers=[99])
    with pytest.raises(ValueError, match="layer"):
        LayerWiseFlagLLMReranker(fixture("minicpm-layerwise-reranker"), cutoff_layers=[99])


def test_auto_reranker_picks_the_class_from_config_json(tmp_path):
    for name, cls in [
        ("xlmr-reranker", FlagReranker),
        ("bert-reranker", FlagReranker),
        ("gemma-reranker", FlagLLMReranker),
        ("minicpm-layerwise-reranker", LayerWiseFlagLLMReranker),
    ]:
        # Under a folder name FlagEmbedding's name table does not know.
        copy = tmp_path / f"checkpoint-{name}"
        shutil.copytree(FIXTURES / name, copy)
        reranker = FlagAutoReranker.from_finetuned(str(copy))
        assert type(reranker) is cls, name
        assert reranker.compute_score(PAIRS) == cls(fixture(name)).compute_score(PAIRS)
    chosen = FlagAutoReranker.from_finetuned(fixture("gemma-reranker"), model_class="decoder-only-base")
    assert type(chosen) is FlagLLMReranker
    with pytest.raises(ValueError, match="model_class"):
        FlagAutoReranker.from_finetuned(fixture("gemma-reranker"), model_class="decoder-only-lightweight")


def test_use_fp16_and_use_bf16_compute_in_bf16():
    for kwargs in ({"use_fp16": True}, {"use_bf16": True}):
        assert FlagReranker(fixture("xlmr-reranker"), **kwargs).reranker.engine.dtype == "bf16"
    assert FlagReranker(fixture("xlmr-reranker")).reranker.engine.dtype == "f32"
    assert FlagReranker(fixture("xlmr-reranker"), use_fp16=True, dtype="int8").reranker.engine.dtype == "int8"


def test_native_reranker_ranks_best_first():
    reranker = Reranker(fixture("xlmr-reranker"))
    documents = [p for _, p in PAIRS] + [PAIRS[0][1]]  # a tie: the first "hi" stays ahead
    scores = reranker.score([("what is panda?", d) for d in documents])
    ranked = reranker.rerank("what is panda?", documents)
    assert [i for i, _ in ranked] == sorted(range(4), key=lambda i: (-scores[i], i))
    assert [s for _, s in ranked] == sorted(scores, reverse=True)
    assert reranker.rerank("what is panda?", documents, top_n=2) == ranked[:2]
    assert reranker.rerank("what is panda?", []) == []
    normalized = reranker.rerank("what is panda?", documents, normalize=True)
    assert all(0 < s < 1 for _, s in normalized)


def test_errors_have_the_right_types_and_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        FlagReranker(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError):
        FlagReranker("no-such-org/no-such-model", cache_dir=str(tmp_path))
    broken = tmp_path / "broken"
    shutil.copytree(FIXTURES / "xlmr-reranker", broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        FlagReranker(str(broken))
    with pytest.raises(ValueError, match="dtype"):
        Reranker(fixture("xlmr-reranker"), dtype="fp8")
    with pytest.raises(ValueError, match="CPU"):
        FlagReranker(fixture("xlmr-reranker"), devices=["cuda:0"])
    with pytest.raises(ValueError, match="CPU"):
        FlagReranker(fixture("xlmr-reranker"), devices=0)
    FlagReranker(fixture("xlmr-reranker"), devices="cpu", trust_remote_code=True)  # harmless
    with pytest.raises(TypeError, match="colour"):
        FlagReranker(fixture("xlmr-reranker"), colour="blue")
    with pytest.raises(ValueError, match="instructions"):
        FlagLLMReranker(fixture("gemma-reranker"), query_instruction_for_rerank="Q: ")
    reranker = FlagReranker(fixture("xlmr-reranker"))
    with pytest.raises(ValueError, match="pair 1"):
        reranker.compute_score([["q", "p"], ["only one"]])
    with pytest.raises(ValueError, match="pair 0"):
        reranker.compute_score([["q", None]])
    with pytest.raises(ValueError, match="max_length"):
        reranker.compute_score(PAIRS, max_length=0)
    with pytest.raises(ValueError, match="prompt"):
        Reranker(fixture("xlmr-reranker"), prompt="Yes or no?").score(PAIRS)
    with pytest.raises(ValueError, match="several|cutoff"):
        Reranker(fixture("minicpm-layerwise-reranker"), cutoff_layers=[9, 10]).score(PAIRS)


def cli_binary():
    named = os.environ.get("BGE_RERANK_BIN")
    if named:
        return named
    root = Path(__file__).resolve().parents[2] / "target"
    for profile in ("release", "debug"):
        if (root / profile / "bge-rerank").is_file():
            return str(root / profile / "bge-rerank")
    pytest.skip("no bge-rerank binary (build it, or set BGE_RERANK_BIN)")


@pytest.mark.parametrize(
    "model,options,kwargs",
    [
        ("xlmr-reranker", [], {}),
        ("gemma-reranker", ["--dtype", "bf16"], {"use_bf16": True}),
        ("minicpm-layerwise-reranker", ["--cutoff-layers", "9,10", "--max-length", "48"], {"cutoff_layers": [9, 10], "max_length": 48}),
    ],
)
def test_scores_equal_the_cli_exactly(model, options, kwargs):
    """The same engine: bit-identical numbers to ``bge-rerank score``."""
    lines = "".join(json.dumps({"query": c["query"], "passage": c["passage"]}) + "\n" for c in cases())
    out = subprocess.run(
        [cli_binary(), "score", "--model", fixture(model), "--normalize", "--quiet", *options],
        input=lines, capture_output=True, text=True, check=True,
    ).stdout
    from_cli = [json.loads(line)["score"] for line in out.splitlines()]
    cls = {"xlmr-reranker": FlagReranker, "gemma-reranker": FlagLLMReranker}.get(model, LayerWiseFlagLLMReranker)
    got = cls(fixture(model), **kwargs).compute_score([[c["query"], c["passage"]] for c in cases()], normalize=True)
    if "cutoff_layers" in kwargs:
        got = [list(per_pair) for per_pair in zip(*got)]
    assert got == from_cli
