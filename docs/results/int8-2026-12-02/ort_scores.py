"""Scores of ONNX Runtime's fp32 and dynamic-int8 models (as exported by shared/bench/peers/ort_int8.py into
WORK_DIR) on a workload, one pair at a time (no padding), as JSON Lines {"ort_fp32", "ort_int8"}.
  python ort_scores.py MODEL_DIR WORKLOAD.jsonl WORK_DIR > OUT.jsonl"""
import json, os, sys
import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer

model, workload, work = sys.argv[1:4]
tok = AutoTokenizer.from_pretrained(model)
sessions = {name: ort.InferenceSession(os.path.join(work, f), providers=["CPUExecutionProvider"])
            for name, f in [("ort_fp32", "model.onnx"), ("ort_int8", "model.int8.onnx")]}
for line in open(workload):
    r = json.loads(line)
    ids = tok(r["query"], r["passage"], truncation="only_second", max_length=512)["input_ids"]
    feed = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
    print(json.dumps({name: float(s.run(None, feed)[0][0][0]) for name, s in sessions.items()}))
