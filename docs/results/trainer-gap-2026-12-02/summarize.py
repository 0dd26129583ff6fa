"""Table of run.sh's results: per seed, each trainer's loss at steps 10/20/30, training time and
pairs/s, and nDCG@10 on the held-out train queries (bge-rerank eval). Usage: summarize.py GAP_DIR [TAG] (TAG "-nd": the runs without dropout)"""
import ast
import json
import statistics
import sys
from pathlib import Path

gap = Path(sys.argv[1])
tag = sys.argv[2] if len(sys.argv) > 2 else ""
rows, scores = [], {"ours": [], "torch": []}
for seed in sorted({int(p.name.rsplit("-s", 1)[1]) for p in gap.glob(f"ours{tag}-s*") if p.is_dir()}):
    for who in ("ours", "torch"):
        report = gap / f"eval-{who}{tag}-s{seed}.json"
        if not report.exists():
            continue
        if who == "ours":
            log = [json.loads(l) for l in (gap / f"ours{tag}-s{seed}" / "train_log.jsonl").open()]
            losses = {d["step"]: d["loss"] for d in log}
            speed = log[-1]["pairs_per_s"]
        else:
            notes = [ast.literal_eval(l) for l in (gap / f"torch{tag}-s{seed}.log").open() if l.startswith("{'step'")]
            losses = {d["step"]: d["loss"] for d in notes}
            speed = notes[-1]["pairs_per_s"]
        text = (gap / f"eval-{who}{tag}-s{seed}.txt").read_text()
        line = next(l for l in text.splitlines() if "ndcg@10" in l)
        reranked = float(line.split()[3])
        scores[who].append(reranked)
        rows.append(f"| {seed} | {who} | {losses.get(10, float('nan')):.3f} / {losses.get(20, float('nan')):.3f} / "
                    f"{losses.get(30, float('nan')):.3f} | {speed:.1f} | {reranked:.4f} |")
print("| seed | trainer | loss at step 10 / 20 / 30 | pairs/s | nDCG@10 (held-out, BM25 0.7413) |")
print("|---|---|---|---|---|")
print("\n".join(rows))
for who, values in scores.items():
    if values:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"\n{who}: mean nDCG@10 {statistics.mean(values):.4f} (sd {spread:.4f}, {len(values)} seeds)")
