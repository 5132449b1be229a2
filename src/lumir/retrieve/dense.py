"""Dense first-stage retrieval: embed queries, search an index, map positions back to candidate ids."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lumir.collections import Corpus, Rankings
from lumir.errors import DimensionMismatchError
from lumir.protocols import Embedder, Index
from lumir.types import Modality, Query, Role

if TYPE_CHECKING:
    from lumir.index import VectorStore

__all__ = ["DenseRetriever"]

AUTO = "auto"


class DenseRetriever:
    """Bi-encoder retrieval over an :class:`~lumir.protocols.Index` of a :class:`~lumir.collections.Corpus`.

    Args:
        embedder: embeds queries (``role=QUERY``); must be the one that embedded the corpus.
        index: holds one vector per corpus position.
        corpus: the candidates, in index position order.
        candidate_modality: restrict results to one candidate modality (a mask over positions), or ``"auto"``
            to use each query's ``meta["cand_modality"]`` (M-BEIR's desired modality) when present.
        batch_size: query embedding batch size.

    Example:
        >>> from lumir.testing.fakes import ColorEmbedder
        >>> from lumir.testing.toy import toy_corpus
        >>> r = DenseRetriever.from_corpus(toy_corpus(), ColorEmbedder(), candidate_modality="image")
        >>> r.retrieve([Query("q", text="green")], k=1).for_query("q")[0].id
        'img-green'
    """

    def __init__(
        self,
        embedder: Embedder,
        index: Index,
        corpus: Corpus,
        *,
        candidate_modality: Modality | str | None = None,
        batch_size: int = 64,
    ) -> None:
        if len(index) != len(corpus):
            raise ValueError(f"index holds {len(index)} vectors but the corpus has {len(corpus)} items")
        if embedder.dim != index.dim:
            raise DimensionMismatchError(
                f"embedder {type(embedder).__name__} gives {embedder.dim}-d vectors but the index holds {index.dim}-d"
            )
        self.embedder = embedder
        self.index = index
        self.corpus = corpus
        self.candidate_modality = candidate_modality
        self.batch_size = batch_size
        self._ids = np.array([*corpus.ids, ""], dtype=object)  # position -1 -> ""
        self._modalities = corpus.modalities()

    @classmethod
    def from_corpus(cls, corpus: Corpus, embedder: Embedder, *, batch_size: int = 64, **kwargs: Any) -> DenseRetriever:
        """Embed ``corpus`` into an in-memory exact index and retrieve over it."""
        from lumir.index import FlatIndex

        index = FlatIndex(embedder.dim)
        if len(corpus):
            index.add(embedder.embed(list(corpus), role=Role.CANDIDATE, batch_size=batch_size))
        return cls(embedder, index, corpus, batch_size=batch_size, **kwargs)

    @classmethod
    def from_store(cls, store: VectorStore, **kwargs: Any) -> DenseRetriever:
        """Retrieve over a saved index directory with the embedder it records."""
        return cls(store.embedder, store.index, store.corpus, **kwargs)

    def _mask(self, modality: Modality | str | None) -> np.ndarray | None:
        if modality is None:
            return None
        return np.asarray(self._modalities == Modality.parse(modality).value)

    def retrieve(self, queries: Sequence[Query], k: int) -> Rankings:
        """Top-``k`` candidates for each query, as :class:`Rankings` in query order."""
        queries = list(queries)
        if not queries:
            return Rankings([], np.empty((0, k), dtype=object), np.empty((0, k), dtype=np.float32))
        vectors = self.embedder.embed(queries, role=Role.QUERY, batch_size=self.batch_size)
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, q in enumerate(queries):
            groups[self._query_modality_filter(q)].append(i)
        ids = np.full((len(queries), k), "", dtype=object)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for modality, rows in groups.items():
            s, pos = self.index.search(vectors[rows], k, mask=self._mask(modality))
            ids[rows] = self._ids[pos]
            scores[rows] = s
        return Rankings([q.id for q in queries], ids, scores)

    def _query_modality_filter(self, query: Query) -> str | None:
        if self.candidate_modality == AUTO:
            wanted = query.meta.get("cand_modality")
            return None if wanted is None else Modality.parse(wanted).value
        if self.candidate_modality is None:
            return None
        return Modality.parse(self.candidate_modality).value
