"""Batch scoring on a Ray cluster, for when one machine is not enough.

:class:`RerankBatch` is a callable class for ``ray.data.Dataset.map_batches``: each Ray actor loads
the model once and scores the batches it is given, adding a score column::

    import ray
    from bge_rerank.ray import RerankBatch

    pairs = ray.data.read_json("pairs.jsonl")          # rows {"query": ..., "passage": ..., ...}
    scored = pairs.map_batches(
        RerankBatch,
        fn_constructor_kwargs={"model": "BAAI/bge-reranker-v2-m3", "dtype": "bf16"},
        concurrency=4,          # actors (model copies)
        num_cpus=8,             # cores per actor: the engine's threads
        batch_size=256,
    )
    scored.write_json("scored/")

As a script (starts a local Ray instance, or joins a cluster with ``--address auto``)::

    python -m bge_rerank.ray --model BAAI/bge-reranker-v2-m3 --input pairs.jsonl --output scored/ \\
        --workers 4 --cpus-per-worker 8

Leave each node a CPU beyond the actors' for Ray Data's read and write tasks.

The output folder holds JSON Lines files: every input row with its ``score`` added (rows keep their
other fields, such as an id, to be joined back).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Optional

from .reranker import Reranker


def _assigned_cpus() -> Optional[int]:
    """The CPUs Ray gave this actor, when running inside Ray."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # not inside a Ray worker
        return None
    return max(1, int(cpus)) if cpus else None


class RerankBatch:
    """Scores one batch of rows (a dict of columns, or a pandas DataFrame) per call.

    Args:
        model: a model folder or Hugging Face id, as :class:`bge_rerank.Reranker` takes it (the
            folder must be reachable from every node: shared storage, or the same path everywhere).
        query_column, passage_column: the columns holding the pair.
        score_column: the column the scores go to.
        normalize: sigmoid scores in [0, 1].
        threads: the engine's threads; default: the CPUs Ray assigned to this actor (``num_cpus``),
            so that actors sharing a node do not oversubscribe it.
        reranker_options: the rest of :class:`bge_rerank.Reranker`'s arguments (dtype, max_length,
            batch_size, ...).
    """

    def __init__(
        self,
        model: str,
        query_column: str = "query",
        passage_column: str = "passage",
        score_column: str = "score",
        normalize: bool = False,
        threads: Optional[int] = None,
        **reranker_options: Any,
    ):
        threads = threads or _assigned_cpus()
        if threads and "RAYON_NUM_THREADS" not in os.environ:
            # Read once, when the engine first computes in this process.
            os.environ["RAYON_NUM_THREADS"] = str(threads)
        self.reranker = Reranker(model, **reranker_options)
        self.query_column = query_column
        self.passage_column = passage_column
        self.score_column = score_column
        self.normalize = normalize

    def __call__(self, batch: Any) -> Any:
        for column in (self.query_column, self.passage_column):
            if column not in batch:
                raise ValueError(
                    f"the batch has no column {column!r} (it has: {', '.join(map(str, batch.keys()))})"
                )
        queries = [str(q) for q in batch[self.query_column]]
        passages = [str(p) for p in batch[self.passage_column]]
        scores = self.reranker.score(list(zip(queries, passages)), normalize=self.normalize)
        if hasattr(batch, "assign"):  # pandas
            return batch.assign(**{self.score_column: scores})
        import numpy

        scored = dict(batch)
        scored[self.score_column] = numpy.asarray(scores, dtype=numpy.float64)
        return scored


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bge_rerank.ray",
        description="Score a JSON Lines file of {query, passage} rows on a Ray cluster.",
    )
    parser.add_argument("--model", required=True, help="model folder or Hugging Face id")
    parser.add_argument("--input", required=True, help="JSON Lines file (or folder) of rows")
    parser.add_argument("--output", required=True, help="folder for the scored JSON Lines files")
    parser.add_argument("--address", default=None, help="Ray cluster address ('auto' to join one)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance")
    parser.add_argument("--workers", type=int, default=1, help="actors, each with its own model")
    parser.add_argument(
        "--cpus-per-worker", type=float, default=1.0, help="CPUs each actor reserves (its threads)"
    )
    parser.add_argument("--batch-rows", type=int, default=256, help="rows per map_batches call")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--normalize", action="store_true")
    parser.add_argument("--query-column", default="query")
    parser.add_argument("--passage-column", default="passage")
    args = parser.parse_args(argv)

    import ray

    ray.init(address=args.address, num_cpus=args.num_cpus, include_dashboard=False)
    cpus = ray.cluster_resources().get("CPU", 0)
    if args.workers * args.cpus_per_worker > cpus - 1:
        # Ray Data reads and writes in tasks of their own: with no CPU left for them it waits forever.
        print(
            f"warning: {args.workers} workers x {args.cpus_per_worker:g} CPUs leave less than one of "
            f"the cluster's {cpus:g} CPUs for reading and writing; unless the cluster grows, the job "
            "will wait for it",
            file=sys.stderr,
        )
    started = time.perf_counter()
    rows = ray.data.read_json(args.input, lines=True)
    scored = rows.map_batches(
        RerankBatch,
        fn_constructor_kwargs={
            "model": args.model,
            "query_column": args.query_column,
            "passage_column": args.passage_column,
            "normalize": args.normalize,
            "dtype": args.dtype,
            "max_length": args.max_length,
        },
        concurrency=args.workers,
        num_cpus=args.cpus_per_worker,
        batch_size=args.batch_rows,
    )
    # pandas writes 10 digits by default; 15 keep the f32 logits (and sigmoids to 1e-15) exact.
    scored.write_json(args.output, double_precision=15)
    count = ray.data.read_json(args.output, lines=True).count()
    elapsed = time.perf_counter() - started
    print(f"scored {count} rows in {elapsed:.1f} s ({count / elapsed:.1f} rows/s) -> {args.output}")


if __name__ == "__main__":
    main()
