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

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from lumir.errors import PromptTooLongError
from lumir.progress import progress
from lumir.protocols import ChatModel, Conversation
from lumir.rerank.base import LLMReranker, RerankStats, softmax_pick
from lumir.rerank.prompts import LAMRA_POINTWISE_PROMPT, PROMPT_TABLES, true_false_prompt
from lumir.types import Item, Query

__all__ = ["PointwiseReranker", "TrueFalseReranker", "YesNoReranker"]

_MAX_SHORTENINGS = 4


class PointwiseReranker(LLMReranker):
    """Score each of the top-k candidates with P(positive token) and reorder.

    Args:
        llm: any ChatModel, or its spec (see :class:`~lumir.rerank.base.LLMReranker` for the options every reranker
            takes: ``llm_cache``, ``k``, ``alpha``, ``normalize``, ``per_task_alpha``, ``fusion``, ``image_mode``,
            ``captions``, ``max_words``, ``batch_size``, ``system``, ``progress``).
        prompt: one template for every query, or task name -> template (others use Table 13 / fallbacks); None
            selects per task with :func:`~lumir.rerank.prompts.true_false_prompt`.
        prompt_table: the M-BEIR table those per-task prompts come from: ``"table13"`` (MM-Embed Table 13
            verbatim, the default) or ``"full"`` (with the images Table 13 leaves out for tasks 3, 7 and 8; see
            :data:`~lumir.rerank.prompts.TABLE13_OMISSIONS`).
        tokens: ``(negative, positive)`` answer tokens.
    """

    name = "pointwise"
    default_k = 10
    default_alpha = 0.5
    default_prompt: ClassVar[str | None] = None
    default_tokens: ClassVar[tuple[str, str]] = ("False", "True")

    def __init__(
        self,
        llm: ChatModel | str | Mapping[str, Any],
        *,
        prompt: str | Mapping[str, str] | None = None,
        tokens: Sequence[str] | None = None,
        prompt_table: str = "table13",
        **options: Any,
    ) -> None:
        tokens = tuple(tokens) if tokens is not None else self.default_tokens
        if len(tokens) != 2:
            raise ValueError(f"tokens must be (negative, positive), got {tokens!r}")
        if prompt_table not in PROMPT_TABLES:
            raise ValueError(f"prompt_table must be one of {sorted(PROMPT_TABLES)}, got {prompt_table!r}")
        self.prompt = prompt if prompt is not None else self.default_prompt
        self.prompt_table = prompt_table
        self.tokens = (str(tokens[0]), str(tokens[1]))
        self._setup(llm, **options)

    def _options_spec(self) -> dict[str, Any]:
        prompt = self.prompt if self.prompt is None or isinstance(self.prompt, str) else dict(self.prompt)
        out = {"prompt": prompt, "tokens": list(self.tokens)}
        return out if self.prompt_table == "table13" else {**out, "prompt_table": self.prompt_table}

    def template_for(self, query: Query, candidate: Item) -> str:
        """The template this query/candidate pair is rendered with."""
        if isinstance(self.prompt, str):
            return self.prompt
        return true_false_prompt(query, candidate.modality, overrides=self.prompt, table=self.prompt_table).template

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
        bar = progress(total=len(pairs), desc=f"rerank ({self.name})", unit="pair", enabled=self._show(len(pairs)))
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
                conv = self.conversation(q, c, max_words=words)
                return np.asarray(self.chat.token_logprobs([conv], self.tokens), dtype=np.float64)
            except PromptTooLongError:
                continue
        stats.extra["unscored_pairs"] = int(stats.extra.get("unscored_pairs", 0)) + 1
        return np.full((1, 2), np.log(0.5))  # never fit: neutral P = 0.5, reported


class TrueFalseReranker(PointwiseReranker):
    """MM-Embed zero-shot reranker (§4.2): Table 13 prompts, P(True) over [False, True]; the paper reranks by P(True)
    alone, so α = 0 unless set. Budget: top-10 (MM-Embed §4.2 / Table 7). ``prompt_table="full"`` shows the images
    Table 13 leaves out of tasks 3, 7 and 8 (:data:`~lumir.rerank.prompts.MBEIR_TRUE_FALSE_PROMPTS_FULL`)."""

    name = "true-false"
    default_k = 10
    default_alpha = 0.0
    default_tokens = ("False", "True")


class YesNoReranker(PointwiseReranker):
    """LamRA-Rank pointwise (§3.4–3.5): P(YES) over [NO, YES], fused with α = 0.5. Budget: top-10 (zero-shot)."""

    name = "yes-no"
    default_k = 10
    default_alpha = 0.5
    default_prompt = LAMRA_POINTWISE_PROMPT
    default_tokens = ("NO", "YES")
