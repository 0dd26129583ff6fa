"""The engine's own Python API: load once, then ``score`` pairs or ``rerank`` documents for a query."""

from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence, Union

from . import _native

Pair = Sequence[str]


def split_pairs(pairs: Iterable[Pair]) -> tuple[list[str], list[str]]:
    """Queries and passages of ``pairs`` (lists or tuples of two strings), checked: a malformed pair
    is a ValueError naming its position."""
    queries: list[str] = []
    passages: list[str] = []
    for index, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(
                f"pair {index}: expected [query, passage] (a list or tuple of two strings), "
                f"got {pair!r:.80}"
            )
        query, passage = pair
        if not isinstance(query, str) or not isinstance(passage, str):
            raise ValueError(
                f"pair {index}: query and passage must be strings, got "
                f"{type(query).__name__} and {type(passage).__name__}"
            )
        queries.append(query)
        passages.append(passage)
    return queries, passages


class Reranker:
    """A BGE reranker (any family: XLM-RoBERTa/BERT cross-encoders, Gemma, layerwise MiniCPM).

    Args:
        model: a Hugging Face model folder (config.json, tokenizer.json, safetensors) or a Hub id
            resolved through the Hugging Face cache (``cache_dir``, else ``HF_HUB_CACHE``/``HF_HOME``).
        dtype: ``"auto"`` (f32, as FlagEmbedding computes by default), ``"f32"``, ``"bf16"`` (the fast
            reduced precision: AMX tiles where the CPU has them), ``"f16"`` or ``"int8"``.
        max_length, query_max_length: FlagEmbedding's token limits (the query's defaults to 3/4 of
            ``max_length``).
        batch_size, max_batch_tokens: a batch closes at this many pairs or real tokens; they change
            speed and memory, never scores.
        prompt: the LLM rerankers' instruction (FlagEmbedding's default when None).
        adapter: a peft LoRA folder merged into an LLM reranker at load (``peft_path``).
        cutoff_layers: a layerwise reranker's answering layers (default: its last).
        kernel: force a matrix kernel (``"candle"``, ``"avx512"``, ``"amx"``); default: the best this
            CPU has.
    """

    def __init__(
        self,
        model: Union[str, os.PathLike],
        dtype: str = "auto",
        max_length: int = 512,
        query_max_length: Optional[int] = None,
        batch_size: int = 128,
        max_batch_tokens: int = 2048,
        prompt: Optional[str] = None,
        adapter: Optional[Union[str, os.PathLike]] = None,
        cutoff_layers: Optional[Sequence[int]] = None,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
        kernel: Optional[str] = None,
    ):
        self.engine = _native.Engine(
            os.fspath(model),
            dtype=dtype,
            adapter=None if adapter is None else os.fspath(adapter),
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            kernel=kernel,
        )
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.prompt = prompt
        self.cutoff_layers = None if cutoff_layers is None else list(cutoff_layers)
        # Checked now, so that a bad layer fails at construction rather than at the first call.
        self.engine.resolve_layers(self.cutoff_layers)

    def __repr__(self) -> str:
        return f"Reranker({self.engine!r})"

    def score_lists(
        self,
        pairs: Iterable[Pair],
        normalize: bool = False,
        **overrides,
    ) -> list[list[float]]:
        """For each pair, its scores: one per answering layer (one, except for a layerwise model
        asked for several, ascending). ``overrides``: max_length, query_max_length, batch_size,
        max_batch_tokens, prompt, cutoff_layers for this call only."""
        queries, passages = split_pairs(pairs)
        settings = {
            "max_length": self.max_length,
            "query_max_length": self.query_max_length,
            "batch_size": self.batch_size,
            "max_batch_tokens": self.max_batch_tokens,
            "prompt": self.prompt,
            "cutoff_layers": self.cutoff_layers,
        }
        unknown = set(overrides) - set(settings)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
        settings.update({k: v for k, v in overrides.items() if v is not None})
        if settings["cutoff_layers"] is not None:
            settings["cutoff_layers"] = list(settings["cutoff_layers"])
        return self.engine.score(queries, passages, normalize=bool(normalize), **settings)

    def score(self, pairs: Iterable[Pair], normalize: bool = False) -> list[float]:
        """One score per (query, passage) pair, in order; ``normalize`` applies the sigmoid."""
        return [self.single_score(scores) for scores in self.score_lists(pairs, normalize)]

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: Optional[int] = None,
        normalize: bool = False,
    ) -> list[tuple[int, float]]:
        """``(index, score)`` of the documents, best first (ties in input order), the first
        ``top_n`` when given."""
        if isinstance(documents, str):
            raise ValueError("documents must be a list of strings, not one string")
        if top_n is not None and top_n < 0:
            raise ValueError(f"top_n must be at least 0, got {top_n}")
        scores = self.score([(query, document) for document in documents], normalize)
        order = _native.rank(scores)
        return [(index, scores[index]) for index in order[:top_n]]

    def single_score(self, scores: list[float]) -> float:
        """The one score of a pair's score list (a ValueError for several layers)."""
        if len(scores) != 1:
            raise ValueError(
                f"{len(scores)} cutoff layers give {len(scores)} scores per pair: ask for one "
                "layer, or use score_lists"
            )
        return scores[0]
