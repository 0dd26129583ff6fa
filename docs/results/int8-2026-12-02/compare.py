"""Spearman correlation and largest difference of each score file's "score" (or the named field) against
the first file's: python compare.py REFERENCE.jsonl[:FIELD] OTHER.jsonl[:FIELD] ..."""
import json, sys
from scipy.stats import spearmanr

def load(spec):
    path, _, field = spec.partition(":")
    return [json.loads(l)[field or "score"] for l in open(path)]

ref = load(sys.argv[1])
for spec in sys.argv[2:]:
    other = load(spec)
    worst = max(abs(a - b) for a, b in zip(ref, other))
    print(f"{spec:<50} spearman {spearmanr(ref, other).correlation:.4f}  max |diff| {worst:.5f}  "
          f"(reference range {min(ref):.4f}..{max(ref):.4f})")
