#!/bin/bash
# One sitting: bge-rerank and the peers on the same machine, back to back.
B=/work/main/target/release/bge-rerank
P=/work/venv/bin/python
W=/work/shared/bench/workloads
PEERS=/work/shared/bench/peers
cd /work/sitting
date > start.txt; grep -m1 "model name" /proc/cpuinfo >> start.txt; nproc >> start.txt
$B bench --kernels --repeat 3 > kernels.txt 2>&1
for d in f32 bf16; do /usr/bin/time -f "wall %e s, peak RSS %M KB" $B bench -m /work/models/base-f32 --workload $W/rerank-100.jsonl --dtype $d --repeat 3 > ours-$d-1.txt 2>&1; done
BGE_RERANK_KERNEL=candle $B bench -m /work/models/base-f32 --workload $W/rerank-100.jsonl --dtype f32 --repeat 2 > ours-candle-f32.txt 2>&1
cd $PEERS
timeout 900 $P flag.py /work/models/base-f32 $W/rerank-100.jsonl --batch-size 32 --repeat 3 > /work/sitting/flag-f32.json 2>/dev/null
timeout 900 $P ort_int8.py /work/models/base-f32 $W/rerank-100.jsonl /work/ort-work --fp32 > /work/sitting/ort-fp32.json 2>/work/sitting/ort-fp32.err
timeout 900 $P ort_int8.py /work/models/base-f32 $W/rerank-100.jsonl /work/ort-work > /work/sitting/ort-int8.json 2>/work/sitting/ort-int8.err
timeout 1200 $P flag.py /work/models/base-f32 $W/rerank-100.jsonl --batch-size 32 --bf16 --repeat 1 > /work/sitting/flag-bf16.json 2>/dev/null
cd /work/sitting
for d in f32 bf16; do $B bench -m /work/models/base-f32 --workload $W/rerank-100.jsonl --dtype $d --repeat 3 > ours-$d-2.txt 2>&1; done
/usr/bin/time -f "wall %e s, peak RSS %M KB" $B bench -m /work/models/gemma-bf16 --workload /work/short-16.jsonl --dtype bf16 --repeat 1 > ours-gemma-bf16.txt 2>&1
cd $PEERS
/usr/bin/time -f "wall %e s, peak RSS %M KB" timeout 1500 $P flag_llm.py /work/models/gemma-bf16 /work/short-16.jsonl --bf16 > /work/sitting/flag-llm-bf16.json 2>/work/sitting/flag-llm-bf16.err
cd /work/sitting
for d in f32 bf16; do /usr/bin/time -f "wall %e s, peak RSS %M KB" $B bench -m /work/models/m3-f32 --workload $W/long-3600.jsonl --max-length 8192 --dtype $d --repeat 1 > ours-long-$d.txt 2>&1; done
cd $PEERS
timeout 900 $P flag.py /work/models/m3-f32 $W/long-3600.jsonl --max-length 8192 --batch-size 1 --repeat 1 > /work/sitting/flag-long-f32.json 2>/dev/null
timeout 900 $P flag.py /work/models/m3-f32 $W/long-3600.jsonl --max-length 8192 --batch-size 1 --bf16 --repeat 1 > /work/sitting/flag-long-bf16.json 2>/dev/null
date > /work/sitting/end.txt
