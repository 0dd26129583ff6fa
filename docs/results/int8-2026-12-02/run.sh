#!/bin/bash
# One sitting for int8: bge-rerank f32/bf16/int8 beside ONNX Runtime fp32/int8 and FlagEmbedding, back
# to back on the same machine; then the LLM shapes in bf16 and int8.
B=/work/main/target/release/bge-rerank
P=/work/venv/bin/python
W=/work/shared/bench/workloads
PEERS=/work/shared/bench/peers
OUT=/work/sitting2
TIME="/usr/bin/time -f wall_%e_s_peak_RSS_%M_KB"
cd $OUT
date > start.txt; grep -m1 "model name" /proc/cpuinfo >> start.txt; nproc >> start.txt
$B bench --kernels --repeat 3 > kernels.txt 2>&1
for d in f32 bf16 int8; do $TIME $B bench -m /work/models/base-f32 --workload $W/rerank-100.jsonl --dtype $d --repeat 3 > ours-$d-1.txt 2>&1; done
cd $PEERS
timeout 900 $P ort_int8.py /work/models/base-f32 $W/rerank-100.jsonl /work/ort-work --fp32 > $OUT/ort-fp32.json 2>$OUT/ort-fp32.err
timeout 900 $P ort_int8.py /work/models/base-f32 $W/rerank-100.jsonl /work/ort-work > $OUT/ort-int8.json 2>$OUT/ort-int8.err
timeout 900 $P flag.py /work/models/base-f32 $W/rerank-100.jsonl --batch-size 32 --repeat 3 > $OUT/flag-f32.json 2>/dev/null
cd $OUT
for d in int8 f32; do $B bench -m /work/models/base-f32 --workload $W/rerank-100.jsonl --dtype $d --repeat 3 > ours-$d-2.txt 2>&1; done
cd $PEERS
timeout 900 $P ort_int8.py /work/models/base-f32 $W/rerank-100.jsonl /work/ort-work > $OUT/ort-int8-2.json 2>>$OUT/ort-int8.err
cd $OUT
for d in bf16 int8; do $TIME $B bench -m /work/models/gemma-bf16 --workload /work/short-16.jsonl --dtype $d --repeat 1 > ours-gemma-$d.txt 2>&1; done
if [ -d /work/models/minicpm-bf16 ]; then
  for d in bf16 int8; do $TIME $B bench -m /work/models/minicpm-bf16 --workload /work/short-16.jsonl --dtype $d --repeat 1 > ours-minicpm-$d.txt 2>&1; done
fi
date > end.txt
