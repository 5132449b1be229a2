"""Pipeline: rewrite -> retrieve -> rerank, returning every stage's Rankings and timings."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from lumir.collections import Corpus, Rankings
from lumir.protocols import Reranker, Retriever, Rewriter
from lumir.types import Query

__all__ = ["FIRST_STAGE", "RERANKED", "Pipeline", "PipelineOutput"]

FIRST_STAGE = "first_stage"
RERANKED = "reranked"


@dataclass(frozen=True)
class PipelineOutput:
    """What one pipeline run produced.

    Attributes:
        queries: the queries as retrieved (after rewriting, if any).
        stages: stage name -> Rankings, in execution order (``first_stage``, then ``reranked`` if any).
        seconds: stage name -> wall time (``rewrite``, ``first_stage``, ``reranked``).
    """

    queries: list[Query]
    stages: dict[str, Rankings]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def final(self) -> Rankings:
        """The last stage's rankings."""
        return list(self.stages.values())[-1]


class Pipeline:
    """Compose the query side: optional rewriter, a first-stage retriever, optional reranker.

    Args:
        retriever: first-stage retrieval.
        rewriter: rewrites queries before retrieval (ids kept).
        reranker: reorders the top ``rerank_k`` of the first stage; needs ``corpus`` for candidate content.
        corpus: candidate lookup for the reranker (defaults to ``retriever.corpus`` when it has one).
        k: how many candidates the first stage returns.
        rerank_k: how many of those the reranker sees (the papers use 50 / 10 / 5); defaults to ``k``.

    Example:
        >>> from lumir.retrieve import DenseRetriever
        >>> from lumir.testing.fakes import ColorEmbedder
        >>> from lumir.testing.toy import toy_corpus
        >>> p = Pipeline(DenseRetriever.from_corpus(toy_corpus(), ColorEmbedder()), k=3)
        >>> out = p.run([Query("q", text="red")])
        >>> list(out.stages), out.final.for_query("q")[0].id in {"img-red", "txt-red"}
        (['first_stage'], True)
    """

    def __init__(
        self,
        retriever: Retriever,
        *,
        rewriter: Rewriter | None = None,
        reranker: Reranker | None = None,
        corpus: Corpus | None = None,
        k: int = 100,
        rerank_k: int | None = None,
    ) -> None:
        if corpus is None:
            corpus = getattr(retriever, "corpus", None)
        if reranker is not None and corpus is None:
            raise ValueError("a reranker needs the corpus to read candidates; pass corpus=")
        self.retriever = retriever
        self.rewriter = rewriter
        self.reranker = reranker
        self.corpus = corpus
        self.k = k
        self.rerank_k = rerank_k

    def run(self, queries: Sequence[Query], k: int | None = None) -> PipelineOutput:
        """Run every configured stage on ``queries``."""
        k = k or self.k
        queries = list(queries)
        seconds: dict[str, float] = {}
        if self.rewriter is not None:
            t = time.perf_counter()
            rewritten = self.rewriter.rewrite(queries)
            seconds["rewrite"] = time.perf_counter() - t
            if [q.id for q in rewritten] != [q.id for q in queries]:
                raise ValueError("the rewriter must return one query per input query, with the same ids, in order")
            queries = rewritten
        t = time.perf_counter()
        stages = {FIRST_STAGE: self.retriever.retrieve(queries, k)}
        seconds[FIRST_STAGE] = time.perf_counter() - t
        if self.reranker is not None:
            assert self.corpus is not None
            t = time.perf_counter()
            stages[RERANKED] = self.reranker.rerank(queries, stages[FIRST_STAGE], self.corpus, self.rerank_k)
            seconds[RERANKED] = time.perf_counter() - t
        return PipelineOutput(queries, stages, seconds)

    def search(self, query: Query | str, k: int | None = None) -> Rankings:
        """Convenience: one query (a Query or plain text) to its final rankings."""
        q = query if isinstance(query, Query) else Query("query", text=query)
        return self.run([q], k).final
