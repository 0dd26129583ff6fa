#!/bin/bash
# One sitting on an AMX host: bge-rerank f32/bf16/int8 (AMX kernels) beside PyTorch (FlagEmbedding)
# fp32/bf16 and ONNX Runtime fp32/int8, back to back on the same machine; then Gemma and long inputs.
B=/work/main/target/release/bge-rerank
P=/work/venv/bin/python
W=/work/shared/bench/workloads
PEERS=/work/shared/bench/peers
OUT=/work/sitting4
TIME="/usr/bin/time -f wall_%e_s_peak_RSS_%M_KB"
cd $OUT
date > start.txt; grep -m1 "model name" /proc/cpuinfo >> start.txt; nproc >> start.txt
grep -o -w 'amx[a-z_0-9]*\|avx512_bf16\|avx512_vnni' /proc/cpuinfo | sort -u >> start.txt
$B bench --kernels --repeat 3 > kernels.txt 2>&1
for d in f32 bf16 int8; do $TIME $B bench -m /work/models/base-f32 --workload $W/rerank-100.jsonl --dtype $d --repeat 3 > ours-$d-1.txt 2>&1; done
BGE_RERANK_KERNEL=avx512 $B bench -m /work/models/base-f32 --workload $W/rerank-100.jsonl --dtype bf16 --repeat 3 > ours-avx512-bf16.txt 2>&1
BGE_RERANK_KERNEL=avx512 $B bench -m /work/models/base-f32 --workload $W/rerank-100.jsonl --dtype int8 --repeat 3 > ours-avx512-int8.txt 2>&1
cd $PEERS
timeout 900 $P flag.py /work/models/base-f32 $W/rerank-100.jsonl --batch-size 32 --bf16 --repeat 3 > $OUT/flag-bf16.json 2>$OUT/flag-bf16.err
timeout 900 $P ort_int8.py /work/models/base-f32 $W/rerank-100.jsonl /work/ort-work > $OUT/ort-int8.json 2>$OUT/ort-int8.err
timeout 900 $P ort_int8.py /work/models/base-f32 $W/rerank-100.jsonl /work/ort-work --fp32 > $OUT/ort-fp32.json 2>$OUT/ort-fp32.err
timeout 900 $P flag.py /work/models/base-f32 $W/rerank-100.jsonl --batch-size 32 --repeat 3 > $OUT/flag-f32.json 2>/dev/null
cd $OUT
for d in bf16 int8 f32; do $B bench -m /work/models/base-f32 --workload $W/rerank-100.jsonl --dtype $d --repeat 3 > ours-$d-2.txt 2>&1; done
$B quantize -m /work/models/base-f32 -o /work/models/base-int8 --overwrite 2> quantize.txt
$TIME $B bench -m /work/models/base-int8 --workload $W/rerank-100.jsonl --repeat 3 > ours-saved-int8.txt 2>&1
for d in bf16 int8; do $TIME $B bench -m /work/models/minicpm-bf16 --workload /work/short-16.jsonl --dtype $d --repeat 1 > ours-minicpm-$d.txt 2>&1; done
for d in bf16 int8; do $TIME $B bench -m /work/models/gemma-bf16 --workload /work/short-16.jsonl --dtype $d --repeat 1 > ours-gemma-$d.txt 2>&1; done
cd $PEERS
$TIME timeout 1500 $P flag_llm.py /work/models/gemma-bf16 /work/short-16.jsonl --bf16 > $OUT/flag-llm-bf16.json 2>$OUT/flag-llm-bf16.err
cd $OUT
for d in f32 bf16; do $TIME $B bench -m /work/models/m3-f32 --workload $W/long-3600.jsonl --max-length 8192 --dtype $d --repeat 1 > ours-long-$d.txt 2>&1; done
cd $PEERS
timeout 900 $P flag.py /work/models/m3-f32 $W/long-3600.jsonl --max-length 8192 --batch-size 1 --repeat 1 > $OUT/flag-long-f32.json 2>/dev/null
timeout 900 $P flag.py /work/models/m3-f32 $W/long-3600.jsonl --max-length 8192 --batch-size 1 --bf16 --repeat 1 > $OUT/flag-long-bf16.json 2>/dev/null
date > $OUT/end.txt
