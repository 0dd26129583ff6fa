"""det.jsonl: the first 8 queries of ../trainer-gap-2026-12-02's train240.jsonl, each with its first
positive and first 7 negatives, so a group of 8 holds the same passages whatever a sampler draws.
  python make_det.py GAP_DIR/train240.jsonl > det.jsonl"""
import json, sys
for line in list(open(sys.argv[1]))[:8]:
    r = json.loads(line)
    print(json.dumps({"query": r["query"], "pos": r["pos"][:1], "neg": r["neg"][:7]}))
