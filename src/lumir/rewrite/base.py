"""What the LLM rewriters share: batched generation through a ChatModel, validation, fallback, counters, provenance.

A subclass says how one query becomes a conversation (:meth:`LLMRewriter.conversation`), which decoding options
it generates with (:meth:`LLMRewriter.generation_options`) and how a reply becomes a rewrite
(:meth:`LLMRewriter.parse`). Everything else is here:

- queries without text (image-only) pass unchanged; a composed query keeps its image and gets new text;
- each distinct query text is generated once per call, in batches of ``batch_size`` conversations;
- every rewrite goes through :func:`lumir.rewrite.validate.refusal_reason`; a refused one falls back to the
  original text and is counted by reason (``empty``, ``echo``, ``too_long``, ``off_topic``);
- each query with text gets ``meta["rewrite"]`` (:func:`~lumir.rewrite.template.with_provenance`): the original
  text, the rewriter's spec and, after a fallback, ``fallback`` (the reason) and ``refused`` (the rejected text);
- :attr:`LLMRewriter.stats` adds up every call, :attr:`LLMRewriter.last_stats` holds the last call's counters
  (the evaluator reports them per task).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lumir.models.chat.cache import CachedChatModel
from lumir.progress import progress
from lumir.protocols import ChatModel, Conversation, Embedder
from lumir.rewrite.template import with_provenance
from lumir.rewrite.validate import REFUSALS, refusal_reason
from lumir.types import Item, Query, Role

__all__ = ["LLMRewriter", "RewriteStats", "resolve_similarity"]

_PROGRESS_MIN = 64  # below this many distinct texts no progress bar is shown


@dataclass
class RewriteStats:
    """Counters of a rewriter.

    Attributes:
        queries: queries given; rewritten: queries whose text was replaced by an accepted rewrite;
        unchanged: queries without text (image-only), passed as they are;
        fallbacks: refusal reason -> queries that kept their original text for it;
        model_calls: calls that reached the model (0 when every reply came from the LLM cache);
        cache_hits, cache_misses: replies found in / added to the LLM cache (0 without one);
        seconds: wall time spent in ``rewrite``.
    """

    queries: int = 0
    rewritten: int = 0
    unchanged: int = 0
    fallbacks: dict[str, int] = field(default_factory=dict)
    model_calls: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    seconds: float = 0.0

    @property
    def fallback_total(self) -> int:
        """Queries that fell back to their original text, for any reason."""
        return sum(self.fallbacks.values())

    def add(self, other: RewriteStats) -> None:
        """Add ``other``'s counts to these."""
        for name in ("queries", "rewritten", "unchanged", "model_calls", "cache_hits", "cache_misses", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.fallbacks.items():
            self.fallbacks[reason] = self.fallbacks.get(reason, 0) + n

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for reports): every counter, ``fallbacks`` in :data:`~lumir.rewrite.validate.REFUSALS`
        order, and ``ms_per_query``."""
        order = [r for r in REFUSALS if r in self.fallbacks] + sorted(set(self.fallbacks) - set(REFUSALS))
        return {
            "queries": self.queries,
            "rewritten": self.rewritten,
            "unchanged": self.unchanged,
            "fallbacks": {r: self.fallbacks[r] for r in order},
            "fallback_total": self.fallback_total,
            "model_calls": self.model_calls,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "seconds": round(self.seconds, 4),
            "ms_per_query": round(1000 * self.seconds / max(1, self.queries), 3),
        }


def resolve_similarity(similarity: Embedder | str | Mapping[str, Any] | None) -> Embedder | None:
    """An embedder from an embedder or its spec (None stays None)."""
    if similarity is None or isinstance(similarity, Embedder):
        return similarity
    from lumir.embed import load_embedder

    return load_embedder(similarity)


class LLMRewriter:
    """The shared rewrite loop (module docstring); subclasses set :attr:`chat` and the options in ``__init__``.

    Attributes:
        chat: the ChatModel replies come from (behind the LLM cache when one was given).
        max_words: longest acceptable rewrite, in words.
        max_new_tokens: generation cap per reply.
        batch_size: conversations per ``chat.generate`` call.
        similarity, min_similarity: with an embedder, ``off_topic`` means cosine < ``min_similarity``.
        stats: counters of every call so far; last_stats: the last call's.
    """

    name: ClassVar[str] = ""
    chat: ChatModel
    max_words: int
    max_new_tokens: int
    batch_size: int
    similarity: Embedder | None
    min_similarity: float
    stats: RewriteStats
    last_stats: RewriteStats

    def _setup_common(
        self,
        *,
        max_words: int,
        max_new_tokens: int,
        batch_size: int,
        similarity: Embedder | str | Mapping[str, Any] | None = None,
        min_similarity: float = 0.5,
    ) -> None:
        if max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {max_words}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.max_words = int(max_words)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self.similarity = resolve_similarity(similarity)
        self.min_similarity = float(min_similarity)
        self.stats = RewriteStats()
        self.last_stats = RewriteStats()

    # ------------------------------------------------------------------ what subclasses define
    def conversation(self, text: str) -> Conversation:
        """The conversation sent for one query text."""
        raise NotImplementedError

    def generation_options(self) -> dict[str, Any]:
        """Keyword arguments of ``chat.generate`` (decoding; part of the LLM cache key)."""
        raise NotImplementedError

    def parse(self, output: str) -> str:
        """The rewrite inside one reply."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """Everything that rebuilds this rewriter through :data:`lumir.registry.REWRITERS`."""
        raise NotImplementedError

    def _similarity_spec(self) -> dict[str, Any]:
        if self.similarity is None:
            return {}
        return {"similarity": self.similarity.spec(), "min_similarity": self.min_similarity}

    # ------------------------------------------------------------------ the loop
    def generate(self, texts: Sequence[str]) -> list[str]:
        """The model's raw reply for each text (batched; no validation, no counters)."""
        options = self.generation_options()
        out: list[str] = []
        with progress(total=len(texts), desc=f"rewrite ({self.name})", unit="query",
                      enabled=len(texts) >= _PROGRESS_MIN) as bar:  # fmt: skip
            for start in range(0, len(texts), self.batch_size):
                batch = [self.conversation(t) for t in texts[start : start + self.batch_size]]
                out.extend(self.chat.generate(batch, **options))
                bar.update(len(batch))
        return out

    def rewrite_texts(self, texts: Sequence[str]) -> list[tuple[str, str | None]]:
        """``(parsed rewrite, refusal reason or None)`` for each text (distinct texts generated once)."""
        unique = list(dict.fromkeys(texts))
        parsed = [self.parse(o) for o in self.generate(unique)]
        sims = self._similarities(unique, parsed)
        verdict = {
            t: (p, refusal_reason(t, p, max_words=self.max_words, similarity=s, min_similarity=self.min_similarity))
            for t, p, s in zip(unique, parsed, sims, strict=True)
        }
        return [verdict[t] for t in texts]

    def _similarities(self, originals: Sequence[str], rewrites: Sequence[str]) -> list[float | None]:
        """Cosine similarity of each rewrite to its original (None each without an embedder or for empty text)."""
        if self.similarity is None or not originals:
            return [None] * len(originals)
        idx = [i for i, r in enumerate(rewrites) if r.strip()]
        out: list[float | None] = [None] * len(originals)
        if not idx:
            return out
        items = [Item(f"o{i}", text=originals[i]) for i in idx] + [Item(f"r{i}", text=rewrites[i]) for i in idx]
        vecs = self.similarity.embed(items, role=Role.CANDIDATE).float()
        vecs = vecs / vecs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        n = len(idx)
        for j, i in enumerate(idx):
            out[i] = float(vecs[j] @ vecs[n + j])
        return out

    def rewrite(self, queries: Sequence[Query]) -> list[Query]:
        """One query per input (same ids, same order): accepted rewrites replace the text, refused ones fall back.

        Raises:
            PromptTooLongError: a query does not fit the model's context.
        """
        start = time.perf_counter()
        stats = RewriteStats(queries=len(queries))
        calls0 = int(self.chat.stats.calls)
        cached = self.chat if isinstance(self.chat, CachedChatModel) else None
        hits0, misses0 = (cached.hits, cached.misses) if cached is not None else (0, 0)
        todo = [i for i, q in enumerate(queries) if q.text is not None and q.text.strip()]
        results = dict(zip(todo, self.rewrite_texts([queries[i].text or "" for i in todo]), strict=True))
        spec = self.spec()
        out: list[Query] = []
        for i, q in enumerate(queries):
            if i not in results or q.text is None:
                stats.unchanged += 1
                out.append(q)
                continue
            text, reason = results[i]
            if reason is None:
                stats.rewritten += 1
                out.append(with_provenance(q, text, spec))
            else:
                stats.fallbacks[reason] = stats.fallbacks.get(reason, 0) + 1
                out.append(with_provenance(q, q.text, spec, fallback=reason, refused=text))
        stats.model_calls = int(self.chat.stats.calls) - calls0
        if cached is not None:
            stats.cache_hits, stats.cache_misses = cached.hits - hits0, cached.misses - misses0
        stats.seconds = time.perf_counter() - start
        self.last_stats = stats
        self.stats.add(stats)
        return out
