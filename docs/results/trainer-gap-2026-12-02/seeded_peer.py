"""Runs shared/bench/peers/scifact_pytorch.py unchanged but with another seed: the script seeds with
random.seed(0) and torch.manual_seed(0); here both take SEED from the environment instead. With
NO_DROPOUT=1 dropout is switched off (torch.nn.functional.dropout returns its input), to compare with
`bge-rerank train --no-dropout`.
  SEED=3 [NO_DROPOUT=1] python seeded_peer.py PEER_SCRIPT ARGS..."""
import os
import random
import runpy
import sys

import torch

seed = int(os.environ["SEED"])
_random_seed, _torch_seed = random.seed, torch.manual_seed
random.seed = lambda *_args, **_kw: _random_seed(seed)
torch.manual_seed = lambda *_args, **_kw: _torch_seed(seed)
if os.environ.get("NO_DROPOUT") == "1":
    torch.nn.functional.dropout = lambda input, *_args, **_kw: input
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
