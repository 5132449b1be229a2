"""Collections: Corpus (ids <-> positions), Rankings (the one currency between stages), RetrievalTask."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lumir.types import Hit, Item, Modality, Qrels, Query, Run

__all__ = ["Corpus", "Rankings", "RetrievalTask"]


class Corpus(Sequence[Item]):
    """An ordered, id-addressable collection of candidate items.

    Positions ``0..n-1`` are what indexes store; ids are what every public boundary speaks.

    Example:
        >>> c = Corpus([Item("a", text="x"), Item("b", text="y")])
        >>> c.position("b"), c["a"].text
        (1, 'x')
    """

    def __init__(self, items: Iterable[Item], *, source: Mapping[str, Any] | None = None) -> None:
        self.source: dict[str, Any] | None = dict(source) if source is not None else None
        """The data-source spec it was loaded from (:data:`lumir.registry.SOURCES`), if any."""
        self._items: list[Item] = list(items)
        self._pos: dict[str, int] = {}
        for i, item in enumerate(self._items):
            if item.id in self._pos:
                raise ValueError(f"duplicate candidate id {item.id!r} at positions {self._pos[item.id]} and {i}")
            self._pos[item.id] = i

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, key: int | str | slice) -> Any:  # Item, or list[Item] for a slice
        if isinstance(key, str):
            try:
                return self._items[self._pos[key]]
            except KeyError:
                raise KeyError(f"unknown candidate id {key!r}") from None
        return self._items[key]

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, Item):
            key = key.id
        return key in self._pos

    def get(self, item_id: str) -> Item | None:
        """The item with this id, or None."""
        i = self._pos.get(item_id)
        return None if i is None else self._items[i]

    @property
    def ids(self) -> list[str]:
        """Candidate ids in position order."""
        return [it.id for it in self._items]

    def position(self, item_id: str) -> int:
        """Position of an id (KeyError naming the id if absent)."""
        try:
            return self._pos[item_id]
        except KeyError:
            raise KeyError(f"unknown candidate id {item_id!r}") from None

    def modalities(self) -> np.ndarray:
        """Array of modality strings, one per position (for candidate-modality masks)."""
        return np.array([it.modality.value for it in self._items], dtype=object)

    def modality_mask(self, modality: Modality | str) -> np.ndarray:
        """Boolean mask of positions whose modality equals ``modality``."""
        m = Modality.parse(modality).value
        return np.array([it.modality.value == m for it in self._items], dtype=bool)

    def extend(self, items: Iterable[Item]) -> Corpus:
        """A new corpus with ``items`` appended (ids must stay unique)."""
        return Corpus([*self._items, *items])

    def __repr__(self) -> str:
        return f"Corpus({len(self)} items)"


@dataclass(frozen=True)
class Rankings:
    """Ranked candidate ids and scores for a batch of queries — the one currency between stages.

    ``ids[i, j]`` is the j-th ranked candidate of ``query_ids[i]``; ``""`` marks an empty slot (score ``-inf``).
    Rows are sorted by descending score.

    Example:
        >>> r = Rankings.from_run({"q1": {"a": 0.2, "b": 0.9}})
        >>> [(h.id, h.rank) for h in r.for_query("q1")]
        [('b', 1), ('a', 2)]
    """

    query_ids: list[str]
    ids: np.ndarray  # (n_queries, k) object array of str
    scores: np.ndarray  # (n_queries, k) float32
    meta: Mapping[str, Any] = field(default_factory=dict)
    _rows: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids, dtype=object)
        scores = np.asarray(self.scores, dtype=np.float32)
        if ids.ndim == 1 and len(self.query_ids) == 0:
            ids = ids.reshape(0, 0)
            scores = scores.reshape(0, 0)
        if ids.ndim != 2 or ids.shape != scores.shape:
            raise ValueError(f"ids {ids.shape} and scores {scores.shape} must be 2-D and of the same shape")
        if ids.shape[0] != len(self.query_ids):
            raise ValueError(f"{len(self.query_ids)} query ids but {ids.shape[0]} ranking rows")
        object.__setattr__(self, "query_ids", list(self.query_ids))
        object.__setattr__(self, "_rows", {q: i for i, q in enumerate(self.query_ids)})
        if len(self._rows) != len(self.query_ids):
            raise ValueError("rankings contain duplicate query ids; each query must have exactly one row")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "scores", scores)

    @property
    def k(self) -> int:
        """Width of each ranking (some slots may be empty)."""
        return int(self.ids.shape[1])

    def __len__(self) -> int:
        return len(self.query_ids)

    def row(self, query_id: str) -> int:
        """Row index of a query id."""
        try:
            return self._rows[query_id]
        except KeyError:
            raise KeyError(f"unknown query id {query_id!r}") from None

    def for_query(self, query_id: str) -> list[Hit]:
        """The non-empty hits of one query, best first."""
        return self._hits(self.row(query_id))

    def _hits(self, i: int) -> list[Hit]:
        return [
            Hit(str(cid), float(s), r + 1)
            for r, (cid, s) in enumerate(zip(self.ids[i], self.scores[i], strict=True))
            if cid != ""
        ]

    def __iter__(self) -> Iterator[tuple[str, list[Hit]]]:
        for i, qid in enumerate(self.query_ids):
            yield qid, self._hits(i)

    def top(self, k: int) -> Rankings:
        """The first ``k`` columns."""
        return Rankings(self.query_ids, self.ids[:, :k], self.scores[:, :k], self.meta)

    def select(self, query_ids: Sequence[str]) -> Rankings:
        """Rows for the given query ids, in that order."""
        rows = [self.row(q) for q in query_ids]
        return Rankings(list(query_ids), self.ids[rows], self.scores[rows], self.meta)

    def to_run(self) -> Run:
        """``{query_id: {candidate_id: score}}`` (empty slots dropped)."""
        return {qid: {h.id: h.score for h in hits} for qid, hits in self}

    @classmethod
    def from_run(cls, run: Mapping[str, Mapping[str, float]], k: int | None = None) -> Rankings:
        """Build from a run dict; each row is sorted by descending score (ties by id) and cut to ``k``."""
        qids = list(run)
        rows = [sorted(run[q].items(), key=lambda kv: (-kv[1], kv[0])) for q in qids]
        width = k if k is not None else max((len(r) for r in rows), default=0)
        return cls.from_hits(qids, [r[:width] for r in rows], width)

    @classmethod
    def from_hits(cls, query_ids: Sequence[str], rows: Sequence[Sequence[tuple[str, float]]], k: int) -> Rankings:
        """Build from per-query ``(id, score)`` lists already in rank order, padding to width ``k``."""
        ids = np.full((len(query_ids), k), "", dtype=object)
        scores = np.full((len(query_ids), k), -np.inf, dtype=np.float32)
        for i, row in enumerate(rows):
            for j, (cid, s) in enumerate(row[:k]):
                ids[i, j] = cid
                scores[i, j] = s
        return cls(list(query_ids), ids, scores)

    def without(self, exclude: Mapping[str, Collection[str]], k: int | None = None) -> Rankings:
        """Each query's ranking with its excluded candidate ids dropped (later hits move up), cut to width ``k``.

        Queries absent from ``exclude`` keep their hits. Used for union pools where a query's own item is also a
        candidate (M-BEIR, MM-Embed: a caption query must not retrieve itself); retrieve ``k`` plus the largest
        exclusion count first so every row can still be filled.

        Example:
            >>> r = Rankings.from_run({"q1": {"a": 0.9, "b": 0.5, "c": 0.1}})
            >>> [h.id for h in r.without({"q1": {"a"}}, k=2).for_query("q1")]
            ['b', 'c']
        """
        width = self.k if k is None else k
        if not any(exclude.get(q) for q in self.query_ids):
            return (
                self
                if width == self.k
                else Rankings(self.query_ids, self.ids[:, :width], self.scores[:, :width], self.meta)
            )
        rows = [[(h.id, h.score) for h in hits if h.id not in exclude.get(qid, ())] for qid, hits in self]
        out = Rankings.from_hits(self.query_ids, rows, width)
        return Rankings(out.query_ids, out.ids, out.scores, self.meta)

    @classmethod
    def concat(cls, parts: Sequence[Rankings]) -> Rankings:
        """Stack rankings of disjoint query sets (widths are padded to the widest)."""
        k = max((p.k for p in parts), default=0)
        qids: list[str] = []
        rows: list[list[tuple[str, float]]] = []
        for p in parts:
            for qid, hits in p:
                qids.append(qid)
                rows.append([(h.id, h.score) for h in hits])
        return cls.from_hits(qids, rows, k)


@dataclass(frozen=True)
class RetrievalTask:
    """A retrieval task described as data: queries, a candidate pool, qrels and the metrics to report.

    Loaders in :mod:`lumir.data` build these; :func:`lumir.eval.evaluate` runs them.
    """

    name: str
    queries: list[Query]
    corpus: Corpus
    qrels: Qrels
    query_modality: Modality | None = None
    candidate_modality: Modality | None = None
    metrics: tuple[str, ...] = ("R@1", "R@5", "R@10")
    meta: Mapping[str, Any] = field(default_factory=dict)
    exclude: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Query id -> candidate ids never returned for it (union pools: the query's own item is also a candidate).

    :func:`lumir.eval.evaluate` drops them from the first stage, before any reranker sees them, and so from every
    stage's rankings and metrics."""

    def max_excluded(self) -> int:
        """The largest exclusion set of any query (how much deeper the first stage must retrieve)."""
        return max((len(v) for v in self.exclude.values()), default=0)

    def spec(self) -> dict[str, Any]:
        """The task spec that rebuilds this task (``lumir.eval.load_tasks(task.spec())``).

        Raises:
            ValueError: the task was built in code, not loaded from a spec.
        """
        if "spec" not in self.meta:
            raise ValueError(f"task {self.name!r} was built in code; it has no spec to rebuild it from")
        return dict(self.meta["spec"])

    def __repr__(self) -> str:
        return f"RetrievalTask({self.name!r}, {len(self.queries)} queries, {len(self.corpus)} candidates)"
