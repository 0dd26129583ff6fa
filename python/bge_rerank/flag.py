"""FlagEmbedding's reranker classes (1.4.2's names, arguments and return shapes), computed by the engine.

What differs, deliberately:

- Everything runs on the CPU. ``devices`` may be None or "cpu" (or a list of "cpu"); a GPU device is
  a ValueError. ``use_fp16``/``use_bf16`` select the engine's reduced precision, bf16 (see below);
  FlagEmbedding itself ignores ``use_fp16`` on a CPU and computes in fp32.
- One pair in gives one float out, as the model card shows (FlagEmbedding 1.4.2 returns a list of one).
- Cutoff layers are answered in ascending order, each once (as ``bge-rerank score``).
- The LLM rerankers' instructions are FlagEmbedding's defaults ("A: " before the query, "B: " before
  the passage); other instructions are a ValueError. The encoder rerankers take any.
- ``dtype`` and ``max_batch_tokens`` are extra keywords: an explicit precision (auto, f32, bf16, f16,
  int8) and the batch's token budget.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

from . import _native
from .reranker import Reranker

# Keyword arguments FlagEmbedding accepts that change nothing here: accepted and ignored.
_IGNORED = {"use_dataloader", "num_workers", "device", "show_progress_bar"}


def _check_devices(devices: Any) -> None:
    """None, "cpu" or a list of "cpu" are fine; anything else asks for a device we do not have."""
    wanted = devices if isinstance(devices, (list, tuple)) else [devices]
    if devices is None or all(isinstance(d, str) and d.lower() == "cpu" for d in wanted):
        return
    raise ValueError(
        f"devices={devices!r}: bge-rerank computes on the CPU (this build has no GPU support); "
        "pass devices=None or 'cpu'"
    )


def _check_kwargs(cls: str, kwargs: dict) -> None:
    unknown = sorted(set(kwargs) - _IGNORED)
    if unknown:
        raise TypeError(f"{cls}() got unexpected keyword argument(s): {', '.join(unknown)}")


def _pairs(sentence_pairs: Any) -> tuple[list, bool]:
    """The pairs as a list, and whether one pair was given (``["q", "p"]`` or ``("q", "p")``)."""
    if isinstance(sentence_pairs, str):
        raise ValueError("sentence_pairs must be a [query, passage] pair or a list of pairs, not a string")
    pairs = list(sentence_pairs)
    single = len(pairs) > 0 and isinstance(pairs[0], str)
    return ([pairs] if single else pairs), single


class _FlagReranker:
    """The behaviour the three classes share; see each class for its arguments."""

    _llm = False

    def __init__(
        self,
        model_name_or_path: str,
        use_fp16: bool,
        use_bf16: bool,
        query_instruction_for_rerank: Optional[str],
        query_instruction_format: str,
        passage_instruction_for_rerank: Optional[str],
        passage_instruction_format: str,
        trust_remote_code: bool,
        cache_dir: Optional[str],
        devices: Any,
        batch_size: int,
        query_max_length: Optional[int],
        max_length: int,
        normalize: bool,
        dtype: Optional[str],
        max_batch_tokens: int,
        kwargs: dict,
        peft_path: Optional[str] = None,
        prompt: Optional[str] = None,
        cutoff_layers: Optional[Sequence[int]] = None,
    ):
        """Called by each class with all its arguments (``locals()``): the public signatures stay
        FlagEmbedding's, the handling is written once."""
        _check_kwargs(type(self).__name__, kwargs)
        _check_devices(devices)
        self.model_name_or_path = os.fspath(model_name_or_path)
        self.query_instruction_for_rerank = query_instruction_for_rerank
        self.query_instruction_format = query_instruction_format
        self.passage_instruction_for_rerank = passage_instruction_for_rerank
        self.passage_instruction_format = passage_instruction_format
        instructions = (query_instruction_for_rerank, query_instruction_format,
                        passage_instruction_for_rerank, passage_instruction_format)
        if self._llm and instructions != ("A: ", "{}{}", "B: ", "{}{}"):
            raise ValueError(
                "the LLM rerankers read 'A: ' + query and 'B: ' + passage (FlagEmbedding's default "
                "instructions); other query/passage instructions are not supported"
            )
        self.batch_size = batch_size
        self.query_max_length = query_max_length
        self.max_length = max_length
        self.normalize = normalize
        self.prompt = prompt
        self.cutoff_layers = _layers(cutoff_layers)
        self.reranker = Reranker(
            self.model_name_or_path,
            dtype=dtype if dtype is not None else ("bf16" if (use_fp16 or use_bf16) else "auto"),
            max_length=max_length,
            query_max_length=query_max_length,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            prompt=prompt,
            adapter=peft_path,
            cutoff_layers=self.cutoff_layers,
            cache_dir=cache_dir,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name_or_path!r}, dtype={self.reranker.engine.dtype!r})"

    def _instructed(self, text: str, instruction: Optional[str], template: str) -> str:
        # FlagEmbedding's get_detailed_instruct (a literal "\n" in the template is a newline).
        if instruction is None:
            return text
        return template.replace("\\n", "\n").format(instruction, text)

    def _scores(self, sentence_pairs: Any, normalize: Optional[bool], **overrides) -> tuple[list, bool]:
        pairs, single = _pairs(sentence_pairs)
        if not self._llm:
            pairs = [
                (
                    self._instructed(p[0], self.query_instruction_for_rerank, self.query_instruction_format),
                    self._instructed(p[1], self.passage_instruction_for_rerank, self.passage_instruction_format),
                )
                if isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(t, str) for t in p)
                else p
                for p in pairs
            ]
        normalize = self.normalize if normalize is None else normalize
        return self.reranker.score_lists(pairs, normalize, **overrides), single

    def _one_per_pair(self, lists: list, single: bool) -> Union[float, list[float]]:
        scores = [self.reranker.single_score(s) for s in lists]
        return scores[0] if single else scores

    def stop_self_pool(self) -> None:
        """FlagEmbedding's multi-process pool; there is none here (one process uses every core)."""


class FlagReranker(_FlagReranker):
    """An encoder cross-encoder (bge-reranker-base, -large, -v2-m3; BERT cross-encoders).

    ``use_fp16=True`` (or ``use_bf16=True``) computes in bf16: weights in bf16, activations rounded to
    bf16 at each matrix input with f32 sums (AMX tiles where the CPU has them), norms and softmax in
    f32 -- what "half precision" means on a CPU; scores move by about PyTorch's own bf16 error. Without
    them: f32, as FlagEmbedding on a CPU. ``dtype=`` picks any precision explicitly (auto, f32, bf16,
    f16, int8).
    """

    def __init__(
        self,
        model_name_or_path: str,
        use_fp16: bool = False,
        query_instruction_for_rerank: Optional[str] = None,
        query_instruction_format: str = "{}{}",
        passage_instruction_for_rerank: Optional[str] = None,
        passage_instruction_format: str = "{}{}",
        trust_remote_code: bool = False,
        cache_dir: Optional[str] = None,
        devices: Optional[Union[str, int, list]] = None,
        batch_size: int = 128,
        query_max_length: Optional[int] = None,
        max_length: int = 512,
        normalize: bool = False,
        use_bf16: bool = False,
        dtype: Optional[str] = None,
        max_batch_tokens: int = 2048,
        **kwargs: Any,
    ):
        _FlagReranker.__init__(**locals())

    def compute_score(
        self,
        sentence_pairs: Union[Sequence[str], Sequence[Sequence[str]]],
        batch_size: Optional[int] = None,
        max_length: Optional[int] = None,
        normalize: Optional[bool] = None,
        query_max_length: Optional[int] = None,
        **kwargs: Any,
    ) -> Union[float, list[float]]:
        """Scores of ``[query, passage]`` pairs, in order: a float for one pair, else a list.
        ``normalize=True`` maps them into [0, 1] by the sigmoid; None keeps the constructor's."""
        _check_kwargs("compute_score", kwargs)
        lists, single = self._scores(
            sentence_pairs, normalize,
            batch_size=batch_size, max_length=max_length, query_max_length=query_max_length,
        )
        return self._one_per_pair(lists, single)


class FlagLLMReranker(_FlagReranker):
    """The LLM reranker (bge-reranker-v2-gemma): the logit of "Yes" after FlagEmbedding's prompt.

    ``use_bf16=True`` (or ``use_fp16=True``) computes in bf16 (weights bf16, activations rounded to
    bf16 at each matrix input, f32 sums; FlagEmbedding loads the model in bf16 the same way). Without
    them: f32. ``peft_path``: a LoRA adapter folder merged at load. ``dtype=`` picks any precision.
    """

    _llm = True

    def __init__(
        self,
        model_name_or_path: str,
        peft_path: Optional[str] = None,
        use_fp16: bool = False,
        use_bf16: bool = False,
        query_instruction_for_rerank: str = "A: ",
        query_instruction_format: str = "{}{}",
        passage_instruction_for_rerank: str = "B: ",
        passage_instruction_format: str = "{}{}",
        cache_dir: Optional[str] = None,
        trust_remote_code: bool = False,
        devices: Optional[Union[str, int, list]] = None,
        prompt: Optional[str] = None,
        batch_size: int = 128,
        query_max_length: Optional[int] = None,
        max_length: int = 512,
        normalize: bool = False,
        dtype: Optional[str] = None,
        max_batch_tokens: int = 2048,
        **kwargs: Any,
    ):
        _FlagReranker.__init__(**locals())

    def compute_score(
        self,
        sentence_pairs: Union[Sequence[str], Sequence[Sequence[str]]],
        batch_size: Optional[int] = None,
        query_max_length: Optional[int] = None,
        max_length: Optional[int] = None,
        prompt: Optional[str] = None,
        normalize: Optional[bool] = None,
        **kwargs: Any,
    ) -> Union[float, list[float]]:
        """Scores of ``[query, passage]`` pairs: a float for one pair, else a list; ``prompt``
        replaces the instruction for this call."""
        _check_kwargs("compute_score", kwargs)
        lists, single = self._scores(
            sentence_pairs, normalize,
            batch_size=batch_size, max_length=max_length, query_max_length=query_max_length,
            prompt=prompt,
        )
        return self._one_per_pair(lists, single)


class LayerWiseFlagLLMReranker(_FlagReranker):
    """The layerwise LLM reranker (bge-reranker-v2-minicpm-layerwise): a score head per layer;
    ``cutoff_layers`` picks the layers that answer (default: the last), and layers above the highest
    are never computed. Precision as :class:`FlagLLMReranker`.
    """

    _llm = True

    def __init__(
        self,
        model_name_or_path: str,
        peft_path: Optional[str] = None,
        use_fp16: bool = False,
        use_bf16: bool = False,
        query_instruction_for_rerank: str = "A: ",
        query_instruction_format: str = "{}{}",
        passage_instruction_for_rerank: str = "B: ",
        passage_instruction_format: str = "{}{}",
        cache_dir: Optional[str] = None,
        trust_remote_code: bool = False,
        devices: Optional[Union[str, int, list]] = None,
        cutoff_layers: Optional[Sequence[int]] = None,
        prompt: Optional[str] = None,
        batch_size: int = 128,
        query_max_length: Optional[int] = None,
        max_length: int = 512,
        normalize: bool = False,
        dtype: Optional[str] = None,
        max_batch_tokens: int = 2048,
        **kwargs: Any,
    ):
        _FlagReranker.__init__(**locals())

    def compute_score(
        self,
        sentence_pairs: Union[Sequence[str], Sequence[Sequence[str]]],
        batch_size: Optional[int] = None,
        query_max_length: Optional[int] = None,
        max_length: Optional[int] = None,
        cutoff_layers: Optional[Sequence[int]] = None,
        prompt: Optional[str] = None,
        normalize: Optional[bool] = None,
        **kwargs: Any,
    ) -> Union[float, list[float], list[list[float]]]:
        """Scores as FlagEmbedding returns them: with one answering layer a list over the pairs (a
        float for one pair); with several, one such result per layer, in ascending layer order."""
        _check_kwargs("compute_score", kwargs)
        lists, single = self._scores(
            sentence_pairs, normalize,
            batch_size=batch_size, max_length=max_length, query_max_length=query_max_length,
            prompt=prompt, cutoff_layers=_layers(cutoff_layers),
        )
        layers = len(lists[0]) if lists else len(
            self.reranker.engine.resolve_layers(_layers(cutoff_layers) or self.cutoff_layers)
        )
        per_layer = [[scores[layer] for scores in lists] for layer in range(layers)]
        results = [layer[0] if single else layer for layer in per_layer]
        return results[0] if len(results) == 1 else results


def _layers(cutoff_layers: Any) -> Optional[list[int]]:
    if cutoff_layers is None:
        return None
    if isinstance(cutoff_layers, int):
        return [cutoff_layers]
    return list(cutoff_layers)


# FlagEmbedding's model_class names.
_CLASSES = {
    "encoder-only-base": FlagReranker,
    "decoder-only-base": FlagLLMReranker,
    "decoder-only-layerwise": LayerWiseFlagLLMReranker,
}

# config.json architectures -> the class that scores them.
_ARCHITECTURES = {
    "XLMRobertaForSequenceClassification": FlagReranker,
    "BertForSequenceClassification": FlagReranker,
    "GemmaForCausalLM": FlagLLMReranker,
    "LayerWiseMiniCPMForCausalLM": LayerWiseFlagLLMReranker,
}


class FlagAutoReranker:
    """Picks the reranker class for a model."""

    @classmethod
    def from_finetuned(
        cls,
        model_name_or_path: str,
        model_class: Optional[str] = None,
        use_fp16: bool = False,
        trust_remote_code: Optional[bool] = None,
        **kwargs: Any,
    ) -> _FlagReranker:
        """The class named by ``model_class`` (FlagEmbedding's names: encoder-only-base,
        decoder-only-base, decoder-only-layerwise), else the one for the architecture in the
        model's config.json -- so a fine-tuned checkpoint under any folder name loads."""
        if model_class is not None:
            name = getattr(model_class, "value", model_class)
            if name not in _CLASSES:
                raise ValueError(
                    f"model_class {name!r} is not supported; expected one of {', '.join(_CLASSES)}"
                )
            chosen = _CLASSES[name]
        else:
            architecture = _native.architecture(
                os.fspath(model_name_or_path), kwargs.get("cache_dir")
            )
            if architecture not in _ARCHITECTURES:
                raise ValueError(
                    f"{model_name_or_path}: `{architecture}` has no classification head, so it cannot "
                    "score pairs"
                )
            chosen = _ARCHITECTURES[architecture]
        return chosen(
            model_name_or_path,
            use_fp16=use_fp16,
            trust_remote_code=bool(trust_remote_code),
            **kwargs,
        )
