#!/bin/bash
# One sitting: compute_score from Python (bge_rerank, the wheel `pip install ./python` builds) beside
# the CLI's `bench` on the same model and workload, and FlagEmbedding itself; each twice, interleaved.
# Model: shared/bench/make_model.py bge-reranker-base /work/models/base-f32; workload rerank-100.
B=/work/main/target/release/bge-rerank
P=/work/venv/bin/python
W=/work/shared/bench/workloads/rerank-100.jsonl
M=/work/models/base-f32
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/work/sitting-python}
mkdir -p $OUT && cd $OUT
date > start.txt; grep -m1 "model name" /proc/cpuinfo >> start.txt; nproc >> start.txt
grep -o -w 'amx[a-z_0-9]*\|avx512_bf16\|avx512_vnni' /proc/cpuinfo | sort -u >> start.txt
for round in 1 2; do
  for d in f32 bf16 int8; do
    $B bench -m $M --workload $W --dtype $d --repeat 3 > cli-$d-$round.txt 2>&1
    $P $HERE/bench_python.py $M $W --dtype $d --repeat 3 > python-$d-$round.json 2>&1
  done
  (cd /work/shared/bench/peers && timeout 900 $P flag.py $M $W --batch-size 32 --bf16 --repeat 3 > $OUT/flag-bf16-$round.json 2>/dev/null)
  (cd /work/shared/bench/peers && timeout 900 $P flag.py $M $W --batch-size 32 --repeat 3 > $OUT/flag-f32-$round.json 2>/dev/null)
done
date > end.txt
