"""First-stage retrieval: dense retrievers and rank fusion."""

from __future__ import annotations

from lumir.retrieve.dense import DenseRetriever

__all__ = ["DenseRetriever"]
