"""bge-rerank: the BAAI BGE rerankers computed by a Rust engine on the CPU, with FlagEmbedding's API.

Switching from FlagEmbedding is one import::

    from bge_rerank import FlagReranker        # instead of: from FlagEmbedding import FlagReranker
    reranker = FlagReranker("BAAI/bge-reranker-v2-m3", use_fp16=True)
    reranker.compute_score(["query", "passage"])                          # -> float
    reranker.compute_score([["q", "p1"], ["q", "p2"]], normalize=True)   # -> list of floats

The numbers are the engine's (equal to ``bge-rerank score``, and to FlagEmbedding's within float
rounding). :class:`Reranker` is the engine's own smaller API; :mod:`bge_rerank.ray` scores on a Ray
cluster.
"""

from ._native import __version__
from .flag import FlagAutoReranker, FlagLLMReranker, FlagReranker, LayerWiseFlagLLMReranker
from .reranker import Reranker

__all__ = [
    "FlagAutoReranker",
    "FlagLLMReranker",
    "FlagReranker",
    "LayerWiseFlagLLMReranker",
    "Reranker",
    "__version__",
]
