"""Pipeline: rewrite -> retrieve -> rerank, returning every stage's Rankings and timings."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lumir.collections import Corpus, Rankings
from lumir.protocols import Reranker, Retriever, Rewriter
from lumir.types import Hit, ImageRef, ImageSource, Query

if TYPE_CHECKING:
    from lumir.pipeline.spec import PipelineSpec

__all__ = ["FIRST_STAGE", "RERANKED", "REWRITE", "Pipeline", "PipelineOutput"]

REWRITE = "rewrite"
FIRST_STAGE = "first_stage"
RERANKED = "reranked"


@dataclass(frozen=True)
class PipelineOutput:
    """What one pipeline run produced.

    Attributes:
        queries: the queries as retrieved (after rewriting, if any).
        stages: stage name -> Rankings, in execution order (``first_stage``, then ``reranked`` if any).
        seconds: stage name -> wall time (``rewrite``, ``first_stage``, ``reranked``).
        original: the queries as given (differs from ``queries`` only when a rewriter ran).
    """

    queries: list[Query]
    stages: dict[str, Rankings]
    seconds: dict[str, float] = field(default_factory=dict)
    original: list[Query] = field(default_factory=list)

    @property
    def final(self) -> Rankings:
        """The last stage's rankings."""
        return list(self.stages.values())[-1]

    @property
    def rewrites(self) -> dict[str, str | None]:
        """Query id -> rewritten text, for the queries a rewriter changed."""
        before = {q.id: q.text for q in self.original}
        return {q.id: q.text for q in self.queries if q.id in before and before[q.id] != q.text}


class Pipeline:
    """Compose the query side: optional rewriter, a first-stage retriever, optional reranker.

    A Pipeline is itself a :class:`~lumir.protocols.Retriever` (its ``retrieve`` returns the final stage), so
    pipelines nest and :func:`lumir.eval.evaluate` scores every stage of one.

    Args:
        retriever: first-stage retrieval.
        rewriter: rewrites queries before retrieval (ids kept).
        reranker: reorders the top ``reranker.k`` of the first stage (its own budget); needs ``corpus``.
        corpus: candidate lookup for the reranker (defaults to ``retriever.corpus`` when it has one).
        k: how many candidates the first stage returns (at least the reranker's budget).
        spec: the :class:`~lumir.pipeline.spec.PipelineSpec` it was built from, if any (recorded in eval results).

    Example:
        >>> from lumir.retrieve import DenseRetriever
        >>> from lumir.testing.fakes import ColorEmbedder
        >>> from lumir.testing.toy import toy_corpus
        >>> p = Pipeline(DenseRetriever.from_corpus(toy_corpus(), ColorEmbedder()), k=3)
        >>> [h.id for h in p.search("red", k=2)]
        ['img-red', 'txt-red']
    """

    def __init__(
        self,
        retriever: Retriever,
        *,
        rewriter: Rewriter | None = None,
        reranker: Reranker | None = None,
        corpus: Corpus | None = None,
        k: int = 100,
        spec: PipelineSpec | None = None,
    ) -> None:
        if corpus is None:
            corpus = getattr(retriever, "corpus", None)
        if reranker is not None and corpus is None:
            raise ValueError("a reranker needs the corpus to read candidates; pass corpus=")
        if k < 1:
            raise ValueError(f"the first-stage depth k must be >= 1, got {k}")
        if reranker is not None and reranker.k > k:
            raise ValueError(
                f"the reranker's budget k={reranker.k} exceeds the first-stage depth k={k}: it would rerank fewer "
                f"candidates than asked; raise the first-stage k or lower the reranker's"
            )
        self.retriever = retriever
        self.rewriter = rewriter
        self.reranker = reranker
        self.corpus = corpus
        self.k = k
        self.spec = spec

    def run(
        self, queries: Sequence[Query], k: int | None = None, *, exclude: Mapping[str, Collection[str]] | None = None
    ) -> PipelineOutput:
        """Run every configured stage on ``queries``; ``k`` overrides the first-stage depth.

        ``exclude`` maps query ids to candidate ids never returned for them (a union pool holding the query's own
        item): the first stage retrieves deeper by the largest exclusion set, drops them and keeps ``k``, so no
        stage after it (reranker included) ever sees them.
        """
        depth = self.k if k is None else k
        if self.reranker is not None and self.reranker.k > depth:
            raise ValueError(f"the reranker's budget k={self.reranker.k} exceeds the first-stage depth k={depth}")
        original = list(queries)
        queries = original
        seconds: dict[str, float] = {}
        if self.rewriter is not None:
            t = time.perf_counter()
            rewritten = self.rewriter.rewrite(queries)
            seconds[REWRITE] = time.perf_counter() - t
            if [q.id for q in rewritten] != [q.id for q in queries]:
                raise ValueError("the rewriter must return one query per input query, with the same ids, in order")
            queries = rewritten
        t = time.perf_counter()
        extra = max((len(exclude.get(q.id, ())) for q in queries), default=0) if exclude else 0
        first = self.retriever.retrieve(queries, depth + extra)
        stages = {FIRST_STAGE: first.without(exclude, depth) if exclude else first}
        seconds[FIRST_STAGE] = time.perf_counter() - t
        if self.reranker is not None:
            assert self.corpus is not None
            t = time.perf_counter()
            stages[RERANKED] = self.reranker.rerank(queries, stages[FIRST_STAGE], self.corpus)
            seconds[RERANKED] = time.perf_counter() - t
        return PipelineOutput(queries, stages, seconds, original)

    def retrieve(self, queries: Sequence[Query], k: int) -> Rankings:
        """The final stage's rankings, cut to ``k`` (the :class:`~lumir.protocols.Retriever` protocol)."""
        return self.run(queries, max(k, self.k)).final.top(k)

    def search(
        self,
        query: Query | str | None = None,
        *,
        image: ImageRef | ImageSource | None = None,
        k: int = 10,
        instruction: str | None = None,
        task: str | None = None,
    ) -> list[Hit]:
        """One query — text, an image, or both (composed) — to its final hits, best first.

        ``query`` may also be a ready :class:`~lumir.types.Query`; no query id needs inventing.
        """
        if isinstance(query, Query):
            q = query
        else:
            q = Query("query", text=query, image=image, instruction=instruction, task=task)  # type: ignore[arg-type]
        return self.retrieve([q], k).for_query(q.id)

    def describe(self) -> Mapping[str, Any]:
        """The stages, for reports: the spec it was built from, or the components' own specs."""
        if self.spec is not None:
            return self.spec.to_dict()
        out: dict[str, Any] = {"k": self.k}
        for name, stage in (("rewriter", self.rewriter), ("reranker", self.reranker)):
            if stage is not None:
                out[name] = stage.spec()
        embedder = getattr(self.retriever, "embedder", None)
        if embedder is not None:
            out["embedder"] = embedder.spec()
        return out
