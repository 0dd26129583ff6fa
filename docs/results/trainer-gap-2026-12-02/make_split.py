"""The data of run.sh, in GAP_DIR (default /work/gap): 100 held-out SciFact *train* queries (seeded
choice) as an evaluation folder (`eval/scifact`: corpus, queries, qrels/train.tsv of those queries),
the other 709 training queries (`train-rest.jsonl`, in the file's order, for full runs), and 240 of
them (`train240.jsonl`, also linked as `torchdata/scifact/train_bm25neg15.jsonl` beside test's files, the layout scifact_pytorch.py reads).
  python make_split.py SHARED_DATA_DIR [GAP_DIR]"""
import csv
import json
import os
import random
import sys

S = os.path.join(sys.argv[1], "scifact")
G = sys.argv[2] if len(sys.argv) > 2 else "/work/gap"
queries = {json.loads(l)["_id"]: json.loads(l)["text"] for l in open(f"{S}/queries.jsonl")}
train = [json.loads(l) for l in open(f"{S}/train_bm25neg15.jsonl")]
rows = list(csv.reader(open(f"{S}/qrels/train.tsv"), delimiter="\t"))
header, rows = rows[0], rows[1:]
text_to_id = {queries[r[0]]: r[0] for r in rows if r[0] in queries}
rng = random.Random(2026)
ids = sorted({text_to_id[t["query"]] for t in train if t["query"] in text_to_id})
heldout = set(rng.sample(ids, 100))
rest = [t for t in train if text_to_id.get(t["query"]) not in heldout]
os.makedirs(G, exist_ok=True)
with open(f"{G}/train-rest.jsonl", "w") as f:  # in the training file's order
    f.writelines(json.dumps(t) + "\n" for t in rest)
rng.shuffle(rest)
os.makedirs(f"{G}/eval/scifact/qrels", exist_ok=True)
os.makedirs(f"{G}/torchdata/scifact/qrels", exist_ok=True)
for name in ["corpus.jsonl", "queries.jsonl"]:
    if not os.path.exists(f"{G}/eval/scifact/{name}"):
        os.symlink(f"{S}/{name}", f"{G}/eval/scifact/{name}")
with open(f"{G}/eval/scifact/qrels/train.tsv", "w") as f:
    f.write("\t".join(header) + "\n")
    f.writelines("\t".join(r) + "\n" for r in rows if r[0] in heldout)
with open(f"{G}/train240.jsonl", "w") as f:
    f.writelines(json.dumps(t) + "\n" for t in rest[:240])
for name in ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "runs"]:
    if not os.path.exists(f"{G}/torchdata/scifact/{name}"):
        os.symlink(f"{S}/{name}", f"{G}/torchdata/scifact/{name}")
if not os.path.exists(f"{G}/torchdata/scifact/train_bm25neg15.jsonl"):
    os.symlink(f"{G}/train240.jsonl", f"{G}/torchdata/scifact/train_bm25neg15.jsonl")
print(f"held out {len(heldout)} train queries, training on 240 others")
