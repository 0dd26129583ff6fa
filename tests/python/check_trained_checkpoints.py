"""Cross-check that FlagEmbedding and transformers load bge-rerank's training output unchanged.

Run from the repository root after building (needs FlagEmbedding 1.4.2, transformers, torch):

    B=./target/release/bge-rerank; D=/tmp/ck; mkdir -p $D
    printf '%s\n' '{"query": "what is panda?", "pos": ["The giant panda is a bear species endemic to China."], "neg": ["hi", "Paris is the capital of France.", "pandas eat bamboo"]}' \
                  '{"query": "capital of France", "pos": ["Paris is the capital of France."], "neg": ["hi", "The giant panda is a bear.", "Berlin is in Germany"]}' > $D/train.jsonl
    $B train -m tests/fixtures/xlmr-reranker --data $D/train.jsonl -o $D/xlmr --max-steps 3 --batch-size 2 --group-size 4 --max-length 64 --lr 1e-3
    $B train -m tests/fixtures/gemma-reranker --data $D/train.jsonl -o $D/gemma --max-steps 3 --batch-size 2 --group-size 4 --max-length 64 --lr 1e-2 --lora-rank 4 --lora-alpha 8 --merge
    python tests/python/check_trained_checkpoints.py $D    # prints both sides' scores; they must agree

Then compare with `bge-rerank score --max-length 64` on the same pairs (`--adapter $D/gemma` for the
adapter).
"""
import sys
import warnings

import torch
from FlagEmbedding import FlagLLMReranker, FlagReranker
from transformers import AutoModelForSequenceClassification, AutoTokenizer

warnings.filterwarnings("ignore")
root = sys.argv[1]
pairs = [
    ["what is panda?", "The giant panda is a bear species endemic to China."],
    ["what is panda?", "hi"],
    ["capital of France", "Paris is the capital of France."],
]
full = FlagReranker(f"{root}/xlmr", use_fp16=False, devices=["cpu"])
print("FlagReranker, full checkpoint:", full.compute_score(pairs, max_length=64))
model = AutoModelForSequenceClassification.from_pretrained(f"{root}/xlmr")
tokenizer = AutoTokenizer.from_pretrained(f"{root}/xlmr")
batch = tokenizer([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt")
with torch.no_grad():
    print("transformers, full checkpoint:", model(**batch).logits.view(-1).tolist())
lora = FlagLLMReranker("tests/fixtures/gemma-reranker", peft_path=f"{root}/gemma", use_fp16=False, devices=["cpu"])
print("FlagLLMReranker, peft_path adapter:", lora.compute_score(pairs, max_length=64))
merged = FlagLLMReranker(f"{root}/gemma/merged", use_fp16=False, devices=["cpu"])
print("FlagLLMReranker, merged model:", merged.compute_score(pairs, max_length=64))
