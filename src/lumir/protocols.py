"""Stage contracts: the whole public interface between lumir's stages, as small Protocols.

Every component also has ``spec()``: a JSON-serialisable ``{"type": ..., ...}`` mapping from which
:mod:`lumir.registry` rebuilds it (``lumir.registry.build(kind, spec)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from lumir.collections import Corpus, Rankings
from lumir.types import Item, Modality, Query, Role

__all__ = [
    "Augmenter",
    "ChatModel",
    "Conversation",
    "Embedder",
    "Index",
    "Reranker",
    "Retriever",
    "Rewriter",
]

Conversation = list[dict[str, Any]]
"""A chat: ``[{"role": "user", "content": [{"type": "text", "text": ...}, {"type": "image", "image": ImageRef}]}]``."""


@runtime_checkable
class Embedder(Protocol):
    """Maps items to L2-comparable vectors for one role (query or candidate)."""

    modalities: frozenset[Modality]
    """What it can embed; anything else raises ModalityError before any work is done."""

    dim: int

    def embed(self, items: Sequence[Item], *, role: Role, batch_size: int = 32) -> torch.Tensor:
        """Return a float32 CPU tensor of shape (len(items), dim)."""
        ...

    def spec(self) -> dict[str, Any]:
        """A JSON-serialisable description from which :func:`lumir.embed.load_embedder` rebuilds it."""
        ...


@runtime_checkable
class Index(Protocol):
    """Vector store with implicit positions 0..n-1 and a faiss-style ``(scores, positions)`` search.

    ``config`` holds the settings ``save``/``load`` need beyond the file (chunk sizes, faiss factory, nprobe, ...);
    ``type(index).load(path, **index.config)`` reopens a saved index and ``spec()`` rebuilds an empty one.
    """

    dim: int

    @property
    def config(self) -> dict[str, Any]: ...

    def add(self, vectors: torch.Tensor | np.ndarray) -> None: ...

    def search(
        self, queries: torch.Tensor | np.ndarray, k: int, *, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, positions)``, each (n_queries, k); position -1 marks an empty slot."""
        ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path) -> Index:
        """Reopen a saved index (implementations take ``config``'s entries as keyword options)."""
        ...

    def spec(self) -> dict[str, Any]: ...

    def __len__(self) -> int: ...


class Retriever(Protocol):
    """First-stage retrieval: queries to rankings."""

    def retrieve(self, queries: Sequence[Query], k: int) -> Rankings: ...


class Reranker(Protocol):
    """Reorders the top ``k`` of each ranking (its own budget); its output ids are exactly its input ids."""

    k: int
    """How many first-stage candidates per query it rescores (the papers' budgets: 50 / 10 / 5)."""

    def rerank(self, queries: Sequence[Query], rankings: Rankings, corpus: Corpus) -> Rankings: ...

    def spec(self) -> dict[str, Any]: ...


class Rewriter(Protocol):
    """Rewrites queries before retrieval: one query per input, same ids, same order.

    Provenance travels with the result: a rewritten query keeps its original text in
    ``meta["rewrite"]["original"]`` and the rewriter's spec in ``meta["rewrite"]["rewriter"]``.
    """

    def rewrite(self, queries: Sequence[Query]) -> list[Query]: ...

    def spec(self) -> dict[str, Any]: ...


class Augmenter(Protocol):
    """Enriches corpus items offline (re-captioning, paraphrasing, knowledge extraction).

    Returns the new items; each carries its provenance (source item id, model, prompt, decoding settings) in
    ``meta``.
    """

    def augment(self, items: Sequence[Item]) -> list[Item]: ...

    def spec(self) -> dict[str, Any]: ...


@runtime_checkable
class ChatModel(Protocol):
    """A (multimodal) language model shared by rewriting, reranking, captioning and knowledge extraction.

    Attributes:
        backend: which implementation runs it (``"transformers"``, ``"llama-cpp"``, ``"openai"``, ...); part of
            cache keys.
        supports_images: whether image parts reach the model (a vision-language model).
        context_length: the longest prompt it accepts, in tokens (None when unknown).
        stats: counters of the calls that actually reached the model (``calls``, ``conversations``,
            ``prompt_tokens``); a cache in front counts only its misses.
    """

    backend: str
    supports_images: bool
    context_length: int | None
    stats: Any

    @property
    def fingerprint(self) -> str:
        """A stable identity of the weights, template and dtype (what cache keys use)."""
        ...

    def spec(self) -> dict[str, Any]: ...

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in the model's own tokens (no special tokens added)."""
        ...

    def render(self, conversation: Conversation) -> str:
        """The exact prompt the model sees for a conversation (its chat template applied); cache keys use it."""
        ...

    def generate(self, conversations: Sequence[Conversation], **gen: Any) -> list[str]: ...

    def token_logprobs(self, conversations: Sequence[Conversation], tokens: Sequence[str]) -> torch.Tensor:
        """Log-probabilities (n, len(tokens)) of each candidate token at the next position."""
        ...


SpecLike = str | Path | Mapping[str, Any]
"""A component given by spec: a spec string, a path, or a ``{"type": ...}`` mapping."""
