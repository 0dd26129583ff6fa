"""PyTorch twin of `bge-rerank train` on det.jsonl (every step the same 8 groups of 8, one padded pass),
all-MiniLM-L6-v2 with the classification head bge-rerank started from (HEAD = a model.safetensors).
  python torch_twin.py MODE MODEL N HEAD
MODE steps: N optimizer steps without dropout (AdamW lr 1e-4, decay 0.01 except biases and LayerNorm,
            warm-up 1 step then linear decay, clipping 1.0), one JSON line per step;
     draws: N forward/backward passes with dropout at the fixed starting weights: mean and spread of
            the loss and the gradient norm;
     speed: as steps but with dropout, timed (pairs per second over the steps after the first, whose
            allocations and thread start-up are not the steady state)."""
import json, statistics as st, sys, time

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertForSequenceClassification, get_linear_schedule_with_warmup

mode, M, n, head = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(2); torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(M)
off = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0} if mode == "steps" else {}
model = BertForSequenceClassification.from_pretrained(M, num_labels=1, **off)
w = load_file(head)
with torch.no_grad():
    model.classifier.weight.copy_(w["classifier.weight"]); model.classifier.bias.copy_(w["classifier.bias"])

def encode(q, p, max_len=128):  # FlagEmbedding's inputs, as shared/bench/peers/scifact_pytorch.py
    qi = tok(q, add_special_tokens=False, truncation=True, max_length=max_len * 3 // 4)["input_ids"]
    pi = tok(p, add_special_tokens=False, truncation=True, max_length=max_len)["input_ids"]
    return tok.prepare_for_model(qi, pi, truncation="only_second", max_length=max_len)

rows = [json.loads(l) for l in open("det.jsonl")]
batch = tok.pad([encode(r["query"], p) for r in rows for p in r["pos"] + r["neg"]], padding=True, return_tensors="pt")
no_decay = lambda name: name.endswith("bias") or "LayerNorm" in name
named = list(model.named_parameters())
opt = torch.optim.AdamW([{"params": [p for k, p in named if not no_decay(k)], "weight_decay": 0.01},
                         {"params": [p for k, p in named if no_decay(k)], "weight_decay": 0.0}], lr=1e-4)
sch = get_linear_schedule_with_warmup(opt, 1, n)
model.train(); losses, norms = [], []
for s in range(n):
    if s == 1:
        t0 = time.time()
    logits = model(**batch).logits.view(-1, 8)
    loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(rows), dtype=torch.long))
    loss.backward(); norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9 if mode == "draws" else 1.0)
    losses.append(loss.item()); norms.append(norm.item())
    if mode == "steps":
        print(json.dumps({"step": s + 1, "loss": loss.item(), "grad_norm": norm.item(), "lr": sch.get_last_lr()[0]}), flush=True)
    if mode != "draws":
        opt.step(); sch.step()
    opt.zero_grad()
if mode == "draws":
    print("torch loss mean %.4f sd %.4f  grad_norm mean %.4f sd %.4f" % (st.mean(losses), st.stdev(losses), st.mean(norms), st.stdev(norms)))
if mode == "speed":
    took = time.time() - t0
    print("torch: steps 2-%d, %d pairs in %.1f s: %.2f pairs/s" % (n, 64 * (n - 1), took, 64 * (n - 1) / took))
