"""MemoEmbedder: embed each distinct input once per process, whatever role or task asks for it.

Paired tasks over the same items — Flickr8k's text→image and image→text share the 1,000 photos and 5,000
captions — embed every item twice without it: once as a candidate and once as a query. Queries and candidates get
the same vector whenever the embedder feeds the model the same input for both (no instruction applies), which
:meth:`lumir.embed.base.BaseEmbedder.input_key` tells; other embedders are memoised per role.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from lumir.embed.base import BaseEmbedder
from lumir.protocols import Embedder
from lumir.types import ImageRef, Item, Modality, Role

__all__ = ["MemoEmbedder", "image_key"]


def image_key(ref: ImageRef | None) -> Hashable:
    """A cheap identity of an image: its resolved path, a digest of its bytes, or the in-memory object."""
    if ref is None:
        return None
    if ref.path is not None:
        return ("path", str(ref.path.resolve()))
    if isinstance(ref.source, bytes):
        return ("bytes", hashlib.sha256(ref.source).hexdigest())
    return ("object", id(ref.source))


class MemoEmbedder:
    """Wraps an embedder; identical inputs are embedded once and served from memory afterwards.

    Args:
        embedder: the embedder to wrap (its ``spec()``, ``dim`` and ``modalities`` are this one's).

    Attributes:
        hits, misses: items served from memory / embedded so far.

    Example:
        >>> from lumir.testing.fakes import HashEmbedder
        >>> memo = MemoEmbedder(HashEmbedder(8))
        >>> a = memo.embed([Item("a", text="red")], role=Role.CANDIDATE)
        >>> b = memo.embed([Item("a", text="red")], role=Role.CANDIDATE)
        >>> bool(torch.equal(a, b)), memo.hits, memo.misses
        (True, 1, 1)
    """

    def __init__(self, embedder: Embedder) -> None:
        self.inner = embedder
        self.dim = embedder.dim
        self.modalities: frozenset[Modality] = embedder.modalities
        self.hits = 0
        self.misses = 0
        self._vectors: dict[Hashable, torch.Tensor] = {}

    def spec(self) -> dict[str, Any]:
        """The wrapped embedder's spec (memoisation does not change vectors)."""
        return self.inner.spec()

    def _key(self, item: Item, role: Role) -> Hashable:
        if isinstance(self.inner, BaseEmbedder):
            return self.inner.input_key(item, role)
        return (role.value, item.id, item.text, image_key(item.image))

    def embed(self, items: Sequence[Item], *, role: Role | str, batch_size: int = 32) -> torch.Tensor:
        """Embed ``items``, reusing every vector already computed for the same input."""
        role = Role(role)
        keys = [self._key(it, role) for it in items]
        todo: dict[Hashable, int] = {}
        for i, key in enumerate(keys):
            if key not in self._vectors and key not in todo:
                todo[key] = i
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        if todo:
            fresh = self.inner.embed([items[i] for i in todo.values()], role=role, batch_size=batch_size)
            for key, vector in zip(todo, fresh, strict=True):
                self._vectors[key] = vector
        if not keys:
            return torch.zeros(0, self.dim)
        return torch.stack([self._vectors[key] for key in keys])

    def __repr__(self) -> str:
        return f"MemoEmbedder({self.inner!r}, {len(self._vectors)} vectors)"
