"""Type stubs of the compiled engine module (crates/python/src/lib.rs)."""

from os import PathLike
from pathlib import Path
from typing import Optional, Sequence, Union

__version__: str

class Engine:
    """A loaded reranker (any of the three families)."""

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        adapter: Optional[Union[str, PathLike]] = None,
        cache_dir: Optional[Union[str, PathLike]] = None,
        kernel: Optional[str] = None,
    ) -> None: ...
    def score(
        self,
        queries: Sequence[str],
        passages: Sequence[str],
        *,
        max_length: int = 512,
        query_max_length: Optional[int] = None,
        passage_max_length: Optional[int] = None,
        prompt: Optional[str] = None,
        batch_size: int = 128,
        max_batch_tokens: int = 2048,
        normalize: bool = False,
        cutoff_layers: Optional[Sequence[int]] = None,
    ) -> list[list[float]]: ...
    def resolve_layers(self, cutoff_layers: Optional[Sequence[int]] = None) -> list[int]: ...
    @property
    def architecture(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def kernel(self) -> str: ...
    @property
    def model_dir(self) -> Path: ...
    @property
    def fingerprint(self) -> str: ...

def architecture(model: str, cache_dir: Optional[Union[str, PathLike]] = None) -> str: ...
def rank(scores: Sequence[float]) -> list[int]: ...
