"""Listwise LLM reranking (LamRA-Rank §3.4–3.5): the query and up to M numbered candidates in one prompt.

The model is asked for the position of the most relevant candidate. Two ways to read its answer:

- ``mode="logits"`` (default): softmax over the logits of the position tokens ``"1"`` … ``"m"`` at the first answer
  position gives each candidate of the window a probability ``p``;
- ``mode="generate"``: greedy generation parsed with :func:`~lumir.rerank.prompts.parse_position` (``"3"``,
  ``"(3)"``, ``"Ans: (3)"``): the named candidate gets 1, the others 0 — for servers that return no logprobs.

**Sliding windows.** When K exceeds the window M, windows of M candidates start every ``stride`` positions
(default ``ceil(M/2)``) and the last one ends at K, so every candidate appears in at least one window and
neighbours are compared in several. A candidate's S_rank is the mean of the ``p`` it received over its windows
(all windows have the same size, so the values are comparable); windows are independent, hence batched. With
K ≤ M there is one window and S_rank is the paper's position softmax. A window whose answer names no candidate
(unparsable text, or no finite position logit) makes its query keep the first-stage order; such queries are
counted in ``parse_failures`` and ``fallback_queries``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lumir.errors import PromptTooLongError
from lumir.progress import progress
from lumir.protocols import ChatModel, Conversation
from lumir.rerank.base import LLMReranker, RerankStats, softmax_pick
from lumir.rerank.prompts import LAMRA_LISTWISE_PROMPT, LISTWISE_ITEM, parse_position
from lumir.types import Item, Query

__all__ = ["ListwiseReranker", "window_starts"]

MAX_WINDOW = 9  # position answers must be single tokens "1".."9"
_MAX_SHORTENINGS = 4


def window_starts(k: int, window: int, stride: int) -> list[int]:
    """Start offsets of the sliding windows over ``k`` candidates (the last window ends at ``k``).

    Example:
        >>> window_starts(20, 5, 3), window_starts(4, 5, 3), window_starts(10, 5, 5)
        ([0, 3, 6, 9, 12, 15], [0], [0, 5])
    """
    if k <= window:
        return [0]
    starts = list(range(0, k - window + 1, stride))
    if starts[-1] + window < k:
        starts.append(k - window)
    return starts


class ListwiseReranker(LLMReranker):
    """Rerank by asking for the most relevant of M numbered candidates, over sliding windows.

    Args:
        llm: any ChatModel, or its spec (see :class:`~lumir.rerank.base.LLMReranker` for the options every reranker
            takes; here ``k`` defaults to 5, LamRA Table 7, ``alpha`` to 0.5 and ``max_words`` to 96).
        window: M, candidates per prompt (2..9; LamRA trains with 3–6 and reranks the top-5).
        stride: window step (default ``ceil(window / 2)``).
        mode: ``"logits"`` or ``"generate"`` (see the module docstring).
        prompt: the template (markers ``<qimg> <qtxt> <n> <candidates>``); item: one candidate's line.
        max_new_tokens: generation cap in ``"generate"`` mode.
    """

    name = "listwise"
    default_k = 5
    default_alpha = 0.5
    default_max_words = 96
    default_batch_size = 8
    _progress_min = 32

    def __init__(
        self,
        llm: ChatModel | str | Mapping[str, Any],
        *,
        window: int = 5,
        stride: int | None = None,
        mode: str = "logits",
        prompt: str = LAMRA_LISTWISE_PROMPT,
        item: str = LISTWISE_ITEM,
        max_new_tokens: int = 8,
        **options: Any,
    ) -> None:
        if not 2 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be in 2..{MAX_WINDOW} (single-token positions), got {window}")
        if mode not in ("logits", "generate"):
            raise ValueError(f"mode must be 'logits' or 'generate', got {mode!r}")
        self.window = window
        self.stride = stride or math.ceil(window / 2)
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        self.mode = mode
        self.prompt = prompt
        self.item = item
        self.max_new_tokens = max_new_tokens
        self._setup(llm, **options)

    def _options_spec(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "stride": self.stride,
            "mode": self.mode,
            "prompt": self.prompt,
            "item": self.item,
            "max_new_tokens": self.max_new_tokens,
        }

    def conversation(
        self,
        query: Query,
        candidates: Sequence[Item],
        *,
        max_words: int | None = None,
        stats: RerankStats | None = None,
    ) -> Conversation:
        """The chat for one window."""
        listing: list[dict[str, Any]] = []
        for i, cand in enumerate(candidates, start=1):
            line = self.item.replace("<n>", str(i))
            listing += self.renderer.parts(line, query, cand, max_words=max_words, stats=stats)
            listing.append({"type": "text", "text": "\n"})
        values = {"<candidates>": listing[:-1], "<n>": [{"type": "text", "text": str(len(candidates))}]}
        parts = self.renderer.parts(self.prompt, query, None, values=values, max_words=max_words, stats=stats)
        return self.renderer.conversation(parts, self.system)

    def _score(
        self, queries: list[Query], heads: list[list[Item]], _scores: list[np.ndarray], stats: RerankStats
    ) -> list[np.ndarray | None]:
        jobs: list[tuple[int, int, list[Item]]] = []  # (query index, window start, window candidates)
        for qi, head in enumerate(heads):
            for s in window_starts(len(head), self.window, self.stride) if len(head) > 1 else []:
                jobs.append((qi, s, head[s : s + self.window]))
        stats.prompts += len(jobs)
        stats.extra["windows"] = int(stats.extra.get("windows", 0)) + len(jobs)
        sums = [np.zeros(len(h)) for h in heads]
        counts = [np.zeros(len(h)) for h in heads]
        failed = [False] * len(heads)
        by_size: dict[int, list[int]] = {}
        for j, (_, _, cands) in enumerate(jobs):
            by_size.setdefault(len(cands), []).append(j)
        bar = progress(total=len(jobs), desc="rerank (listwise)", unit="window", enabled=self._show(len(jobs)))
        for size, idx in by_size.items():
            for start in range(0, len(idx), self.batch_size):
                batch = [jobs[j] for j in idx[start : start + self.batch_size]]
                probs = self._window_probs(queries, batch, size, stats)
                for (qi, s, _), p in zip(batch, probs, strict=True):
                    if p is None:
                        failed[qi] = True
                        stats.parse_failures += 1
                        continue
                    sums[qi][s : s + size] += p
                    counts[qi][s : s + size] += 1
                bar.update(len(batch))
        bar.close()
        out: list[np.ndarray | None] = []
        for qi, head in enumerate(heads):
            if len(head) <= 1:
                out.append(np.ones(len(head)))
            elif failed[qi]:
                out.append(None)
            else:
                out.append(sums[qi] / np.maximum(counts[qi], 1))
        return out

    def _window_probs(
        self, queries: list[Query], batch: list[tuple[int, int, list[Item]]], size: int, stats: RerankStats
    ) -> list[np.ndarray | None]:
        convs = [self.conversation(queries[qi], cands, stats=stats) for qi, _, cands in batch]
        try:
            return self._read(convs, size)
        except PromptTooLongError:
            pass
        out: list[np.ndarray | None] = []
        for qi, _, cands in batch:  # one at a time, re-cutting the texts until the window fits
            words = self.renderer.max_words
            result: list[np.ndarray | None] = [None]
            for _ in range(_MAX_SHORTENINGS):
                words = max(4, words // 2)
                stats.shortened_on_overflow += 1
                try:
                    result = self._read([self.conversation(queries[qi], cands, max_words=words)], size)
                    break
                except PromptTooLongError:
                    continue
            out.append(result[0])
        return out

    def _read(self, convs: list[Conversation], size: int) -> list[np.ndarray | None]:
        if self.mode == "logits":
            tokens = [str(i) for i in range(1, size + 1)]
            lp = np.asarray(self.chat.token_logprobs(convs, tokens), dtype=np.float64)
            return [softmax_pick(row) for row in lp]
        answers = self.chat.generate(convs, max_new_tokens=self.max_new_tokens)
        out: list[np.ndarray | None] = []
        for answer in answers:
            pos = parse_position(answer, size)
            if pos is None:
                out.append(None)
                continue
            p = np.zeros(size)
            p[pos - 1] = 1.0
            out.append(p)
        return out
