"""Time bge_rerank's FlagReranker.compute_score from Python, as peers/flag.py times FlagEmbedding's.
  python bench_python.py MODEL_DIR WORKLOAD.jsonl [--dtype f32|bf16|int8] [--repeat 3]
Prints one JSON line (the median and the best of the repeats, load excluded)."""
import argparse
import json
import time

from bge_rerank import FlagReranker

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("workload")
ap.add_argument("--dtype", default="f32")
ap.add_argument("--repeat", type=int, default=3)
a = ap.parse_args()
pairs = [[r["query"], r["passage"]] for r in map(json.loads, open(a.workload))]
reranker = FlagReranker(a.model, dtype=a.dtype)
reranker.compute_score(pairs[:8])
times = []
for _ in range(a.repeat):
    t = time.perf_counter()
    reranker.compute_score(pairs)
    times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({
    "system": "bge_rerank (Python) " + repr(reranker), "dtype": reranker.reranker.engine.dtype,
    "pairs": len(pairs), "seconds_median": times[len(times) // 2], "seconds_best": times[0],
    "pairs_per_s": len(pairs) / times[len(times) // 2], "pairs_per_s_best": len(pairs) / times[0],
    "seconds_all": times,
}))
