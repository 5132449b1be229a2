"""Dense first-stage retrieval: embed queries, search an index, map positions back to candidate ids.

This is lumir's one search path: an index directory (:class:`~lumir.index.VectorStore`) stores vectors, ids, items
and the embedder spec; :class:`DenseRetriever` searches it (``DenseRetriever.from_store``), an in-memory corpus
(``DenseRetriever.from_corpus``), or any :class:`~lumir.protocols.Index` with its corpus.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lumir.collections import Corpus, Rankings
from lumir.errors import DimensionMismatchError, ModalityError
from lumir.protocols import Embedder, Index
from lumir.types import Modality, Query, Role

if TYPE_CHECKING:
    from lumir.index import VectorStore

__all__ = ["AUTO", "DenseRetriever"]

logger = logging.getLogger(__name__)

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

    Rankings it returns carry ``meta["short_rankings"]``: how many queries got fewer than ``k`` hits although at
    least ``k`` candidates were allowed (approximate indexes such as IVF visit only ``nprobe`` lists); a warning is
    logged when that happens.

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
        if candidate_modality not in (None, AUTO):
            candidate_modality = Modality.parse(candidate_modality)
        self.embedder = embedder
        self.index = index
        self.corpus = corpus
        self.candidate_modality = candidate_modality
        self.batch_size = batch_size
        self._ids = np.array([*corpus.ids, ""], dtype=object)  # position -1 -> ""
        self._modalities = corpus.modalities()
        self._counts = Counter(str(m) for m in self._modalities)
        if isinstance(candidate_modality, Modality):
            self._check_modality(candidate_modality.value)

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

    def _check_modality(self, modality: str) -> None:
        if self._counts.get(modality, 0) == 0:
            held = ", ".join(f"{n} {m}" for m, n in sorted(self._counts.items())) or "nothing"
            raise ModalityError(
                f"no candidate has modality {modality!r}, so nothing can be returned; the candidates are: {held}"
            )

    def _mask(self, modality: str | None) -> np.ndarray | None:
        if modality is None or self._counts.get(modality, 0) == len(self._modalities):
            return None
        self._check_modality(modality)
        return np.asarray(self._modalities == modality)

    def retrieve(self, queries: Sequence[Query], k: int) -> Rankings:
        """Top-``k`` candidates for each query, as :class:`Rankings` in query order.

        Raises:
            ValueError: ``k`` < 1.
            ModalityError: a candidate-modality filter that no candidate satisfies.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = list(queries)
        if not queries:
            return Rankings([], np.empty((0, k), dtype=object), np.empty((0, k), dtype=np.float32))
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, q in enumerate(queries):
            groups[self._query_modality_filter(q)].append(i)
        masks = {modality: self._mask(modality) for modality in groups}  # errors before any embedding
        vectors = self.embedder.embed(queries, role=Role.QUERY, batch_size=self.batch_size)
        ids = np.full((len(queries), k), "", dtype=object)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        short = 0
        for modality, rows in groups.items():
            mask = masks[modality]
            s, pos = self.index.search(vectors[rows], k, mask=mask)
            ids[rows] = self._ids[pos]
            scores[rows] = s
            allowed = len(self.corpus) if mask is None else int(mask.sum())
            short += int(((pos >= 0).sum(axis=1) < min(k, allowed)).sum())
        if short:
            logger.warning(
                "%d of %d queries got fewer than %d hits from %s although enough candidates were allowed; an "
                "approximate index visits only part of the corpus (raise nprobe / ef_search, or use the flat backend)",
                short,
                len(queries),
                k,
                type(self.index).__name__,
            )
        return Rankings([q.id for q in queries], ids, scores, {"short_rankings": short} if short else {})

    def _query_modality_filter(self, query: Query) -> str | None:
        if self.candidate_modality == AUTO:
            wanted = query.meta.get("cand_modality")
            return None if wanted is None else Modality.parse(wanted).value
        if isinstance(self.candidate_modality, Modality):
            return self.candidate_modality.value
        return None
