"""Stage contracts: the whole public interface between lumir's stages, as small Protocols."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from lumir.collections import Corpus, Rankings
from lumir.types import Item, Modality, Query, Role

__all__ = ["Augmenter", "ChatModel", "Conversation", "Embedder", "Index", "Reranker", "Retriever", "Rewriter"]

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
    """Vector store with implicit positions 0..n-1 and a faiss-style ``(scores, positions)`` search."""

    dim: int

    def add(self, vectors: torch.Tensor | np.ndarray) -> None: ...

    def search(
        self, queries: torch.Tensor | np.ndarray, k: int, *, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, positions)``, each (n_queries, k); position -1 marks an empty slot."""
        ...

    def save(self, path: Path) -> None: ...

    def __len__(self) -> int: ...


class Retriever(Protocol):
    """First-stage retrieval: queries to rankings."""

    def retrieve(self, queries: Sequence[Query], k: int) -> Rankings: ...


class Reranker(Protocol):
    """Reorders (a prefix of) each ranking; its output ids are a subset of its input ids."""

    def rerank(
        self, queries: Sequence[Query], rankings: Rankings, corpus: Corpus, k: int | None = None
    ) -> Rankings: ...


class Rewriter(Protocol):
    """Rewrites queries before retrieval (ids are kept)."""

    def rewrite(self, queries: Sequence[Query]) -> list[Query]: ...


class Augmenter(Protocol):
    """Enriches corpus items offline (e.g. recaptioning); ids are kept."""

    def augment(self, items: Sequence[Item]) -> list[Item]: ...


class ChatModel(Protocol):
    """A (multimodal) language model shared by rewriting, reranking, captioning and knowledge extraction."""

    def generate(self, conversations: Sequence[Conversation], **gen: Any) -> list[str]: ...

    def token_logprobs(self, conversations: Sequence[Conversation], tokens: Sequence[str]) -> torch.Tensor:
        """Log-probabilities (n, len(tokens)) of each candidate token at the next position."""
        ...
