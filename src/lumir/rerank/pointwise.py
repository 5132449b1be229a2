"""Pointwise LLM rerankers: one prompt per (query, candidate), relevance from two answer tokens' logits.

- :class:`TrueFalseReranker` — MM-Embed §4.2 zero-shot reranking: the Table 13 prompt of the query's task, relevance
  ``softmax([logit(False), logit(True)])[1]`` = P(True). The paper reranks by P(True) alone, so fusion defaults to
  α = 0 (set ``fusion=`` to mix in the retrieval score).
- :class:`YesNoReranker` — LamRA-Rank pointwise §3.4–3.5: P(YES) over [NO, YES], fused with the retrieval score
  (α = 0.5).

Both are :class:`PointwiseReranker` with different prompts, answer tokens and fusion; a trained reranker (a LoRA
adapter on the ChatModel) uses the same class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lumir.errors import PromptTooLongError
from lumir.protocols import ChatModel, Conversation
from lumir.rerank.base import ContentRenderer, LLMReranker, RerankStats, softmax_pick
from lumir.rerank.fusion import FusionConfig
from lumir.rerank.prompts import LAMRA_POINTWISE_PROMPT, true_false_prompt
from lumir.types import Item, Query

__all__ = ["PointwiseReranker", "TrueFalseReranker", "YesNoReranker"]

_MAX_SHORTENINGS = 4


class PointwiseReranker(LLMReranker):
    """Score each of the top-k candidates with P(positive token) and reorder.

    Args:
        chat: any ChatModel (wrap it in :class:`~lumir.models.chat.cache.CachedChatModel` to reuse scores).
        prompt: one template for every query, or task name -> template (others use Table 13 / fallbacks); None
            selects per task with :func:`~lumir.rerank.prompts.true_false_prompt`.
        tokens: ``(negative, positive)`` answer tokens.
        k: how many candidates per query are reranked (a budget; ``rerank(k=...)`` overrides it).
        fusion: how S_rank is combined with the first-stage score.
        image_mode: ``"native"`` or ``"caption"`` (caption-proxy, for text-only models); captions: id -> caption.
        max_words: candidate and query texts are cut to this many words (counted in the stats).
        batch_size: prompts per model call.
        system: an optional system message.
        progress: show a progress bar (None: only on a terminal).
    """

    name = "pointwise"

    def __init__(
        self,
        chat: ChatModel,
        *,
        prompt: str | Mapping[str, str] | None = None,
        tokens: tuple[str, str] = ("False", "True"),
        k: int = 10,
        fusion: FusionConfig | None = None,
        image_mode: str = "native",
        captions: Mapping[str, str] | None = None,
        max_words: int = 256,
        batch_size: int = 16,
        system: str | None = None,
        progress: bool | None = None,
    ) -> None:
        if len(tokens) != 2:
            raise ValueError(f"tokens must be (negative, positive), got {tokens!r}")
        self.chat = chat
        self.prompt = prompt
        self.tokens = (str(tokens[0]), str(tokens[1]))
        self.k = k
        self.fusion = fusion if fusion is not None else FusionConfig()
        self.renderer = ContentRenderer(image_mode=image_mode, captions=captions, max_words=max_words)
        self.batch_size = batch_size
        self.system = system
        self.progress = progress
        self.last_stats = RerankStats()

    def template_for(self, query: Query, candidate: Item) -> str:
        """The template this query/candidate pair is rendered with."""
        if isinstance(self.prompt, str):
            return self.prompt
        return true_false_prompt(query, candidate.modality, overrides=self.prompt).template

    def spec(self) -> dict[str, Any]:
        chat_spec = getattr(self.chat, "spec", None)
        return {
            "type": self.name,
            "tokens": list(self.tokens),
            "prompt": self.prompt if self.prompt is None or isinstance(self.prompt, str) else dict(self.prompt),
            "fusion": self.fusion.to_dict(),
            "image_mode": self.renderer.image_mode,
            "max_words": self.renderer.max_words,
            "chat": chat_spec() if callable(chat_spec) else type(self.chat).__name__,
        }

    def conversation(
        self, query: Query, candidate: Item, *, max_words: int | None = None, stats: RerankStats | None = None
    ) -> Conversation:
        """The chat sent for one pair."""
        parts = self.renderer.parts(
            self.template_for(query, candidate), query, candidate, max_words=max_words, stats=stats
        )
        return self.renderer.conversation(parts, self.system)

    def _score(
        self, queries: list[Query], heads: list[list[Item]], _scores: list[np.ndarray], stats: RerankStats
    ) -> list[np.ndarray | None]:
        pairs = [(qi, q, c) for qi, (q, head) in enumerate(zip(queries, heads, strict=True)) for c in head]
        probs = np.zeros(len(pairs))
        bar = tqdm(total=len(pairs), desc=f"rerank ({self.name})", unit="pair", disable=self._quiet(len(pairs)))
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start : start + self.batch_size]
            convs = [self.conversation(q, c, stats=stats) for _, q, c in batch]
            lp = self._logprobs(convs, batch, stats)
            p = softmax_pick(lp)
            probs[start : start + len(batch)] = p[:, 1] if p is not None else 0.5
            bar.update(len(batch))
        bar.close()
        stats.prompts += len(pairs)
        out: list[np.ndarray | None] = []
        start = 0
        for head in heads:
            out.append(probs[start : start + len(head)].copy())
            start += len(head)
        return out

    def _logprobs(
        self, convs: list[Conversation], batch: list[tuple[int, Query, Item]], stats: RerankStats
    ) -> np.ndarray:
        try:
            stats.model_calls += 1
            return np.asarray(self.chat.token_logprobs(convs, self.tokens), dtype=np.float64)
        except PromptTooLongError:
            if len(convs) == 1 and len(batch) == 1:
                return self._shortened(batch[0], stats)
        rows = [self._logprobs([c], [b], stats)[0] for c, b in zip(convs, batch, strict=True)]
        return np.stack(rows)

    def _shortened(self, pair: tuple[int, Query, Item], stats: RerankStats) -> np.ndarray:
        """Re-cut one over-long prompt's texts to half, a quarter, ... of ``max_words`` until it fits."""
        _, q, c = pair
        words = self.renderer.max_words
        for _ in range(_MAX_SHORTENINGS):
            words = max(8, words // 2)
            stats.shortened_on_overflow += 1
            try:
                stats.model_calls += 1
                conv = self.conversation(q, c, max_words=words)
                return np.asarray(self.chat.token_logprobs([conv], self.tokens), dtype=np.float64)
            except PromptTooLongError:
                continue
        stats.extra["unscored_pairs"] = int(stats.extra.get("unscored_pairs", 0)) + 1
        return np.full((1, 2), np.log(0.5))  # never fit: neutral P = 0.5, reported


class TrueFalseReranker(PointwiseReranker):
    """MM-Embed zero-shot reranker (§4.2): Table 13 prompts, P(True) over [False, True]; α = 0 by default."""

    name = "true-false"

    def __init__(self, chat: ChatModel, **options: Any) -> None:
        options.setdefault("tokens", ("False", "True"))
        options.setdefault("fusion", FusionConfig(alpha=0.0))
        options.setdefault("k", 10)
        super().__init__(chat, **options)


class YesNoReranker(PointwiseReranker):
    """LamRA-Rank pointwise (§3.4–3.5): P(YES) over [NO, YES], fused with α = 0.5."""

    name = "yes-no"

    def __init__(self, chat: ChatModel, **options: Any) -> None:
        options.setdefault("prompt", LAMRA_POINTWISE_PROMPT)
        options.setdefault("tokens", ("NO", "YES"))
        options.setdefault("fusion", FusionConfig(alpha=0.5))
        options.setdefault("k", 10)
        super().__init__(chat, **options)
