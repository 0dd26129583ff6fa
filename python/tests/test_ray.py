"""Batch scoring on a local Ray cluster (2 CPUs, 2 actors): the scores equal the single-process ones."""

import json
import os
import subprocess
import sys

import pytest

from bge_rerank import Reranker
from bge_rerank.ray import RerankBatch
from conftest import cases, fixture

# CI installs Ray and sets this, so that a missing Ray fails there instead of skipping.
if os.environ.get("BGE_RERANK_REQUIRE_RAY") != "1":
    pytest.importorskip("ray")


def rows(copies: int) -> list:
    return [
        {"id": f"{case['id']}-{copy}", "query": case["query"] + " " * copy, "passage": case["passage"]}
        for copy in range(copies)
        for case in cases()
    ]


def test_the_batch_class_adds_scores_to_columns_and_frames():
    numpy = pytest.importorskip("numpy")
    batch = {name: numpy.array([r[name] for r in rows(1)]) for name in ("id", "query", "passage")}
    scorer = RerankBatch(fixture("xlmr-reranker"), normalize=True)
    scored = scorer(batch)
    expected = Reranker(fixture("xlmr-reranker")).score(
        list(zip(batch["query"], batch["passage"])), normalize=True
    )
    assert scored["score"].tolist() == expected
    assert scored["id"].tolist() == batch["id"].tolist()
    pandas = pytest.importorskip("pandas")
    frame = scorer(pandas.DataFrame(batch))
    assert frame["score"].tolist() == expected
    with pytest.raises(ValueError, match="passage"):
        RerankBatch(fixture("xlmr-reranker"), passage_column="text")(batch)


def test_the_script_scores_a_jsonl_file_on_a_local_cluster(tmp_path):
    numpy = pytest.importorskip("numpy")
    pairs = rows(8)  # 336 rows
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    output = tmp_path / "scored"
    run = subprocess.run(
        [
            sys.executable, "-m", "bge_rerank.ray",
            "--model", fixture("gemma-reranker"), "--input", str(source), "--output", str(output),
            "--num-cpus", "2", "--workers", "2", "--cpus-per-worker", "0.5", "--batch-rows", "64",
        ],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"scored {len(pairs)} rows" in run.stdout
    scored = {}
    for part in sorted(output.glob("*.json*")):
        for line in part.read_text().splitlines():
            row = json.loads(line)
            scored[row["id"]] = row
    assert len(scored) == len(pairs)
    single = Reranker(fixture("gemma-reranker")).score([(r["query"], r["passage"]) for r in pairs])
    for row, score in zip(pairs, single):
        assert scored[row["id"]]["query"] == row["query"]
        # JSON holds 15 digits: the f32 logit the engine computed is recovered exactly.
        written = scored[row["id"]]["score"]
        assert numpy.float32(written) == numpy.float32(score), (row["id"], written, score)
        assert abs(written - score) <= 1e-14 * max(1.0, abs(score))
