"""What the LLM rerankers share: prompt rendering into chat content, the rerank loop, fusion, counters.

Every reranker reorders the top ``k`` of each first-stage ranking and keeps the rest below them in their
first-stage order, so its output ids are exactly its input ids (a property test checks this). Each reranked
candidate gets ``fuse_scores(S_ret, S_rank)``; the tail gets scores strictly below the head's.

Images reach the LLM as image parts (``image_mode="native"``, a vision-language ChatModel) or, in the explicitly
named **caption-proxy** mode (``image_mode="caption"``), as the text ``Image description: <caption>`` taken from
``captions[item id]`` or ``item.meta["caption"]``. A text-only model given images without caption-proxy mode is
refused before any model call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lumir.collections import Corpus, Rankings
from lumir.errors import ModalityError, with_cli_message
from lumir.models.chat.cache import CachedChatModel, resolve_chat_model
from lumir.protocols import ChatModel, Conversation
from lumir.rerank.fusion import FusionConfig, fuse_scores
from lumir.rerank.prompts import split_template
from lumir.types import Item, Query

__all__ = ["IMAGE_MODES", "ContentRenderer", "LLMReranker", "RerankStats", "apply_rerank"]

logger = logging.getLogger(__name__)

IMAGE_MODES = ("native", "caption")


@dataclass
class RerankStats:
    """Counters reported with every reranked Rankings (``rankings.meta["rerank"]``).

    Attributes:
        queries: queries reranked; candidates: (query, candidate) pairs scored.
        prompts: prompts sent (pairs for pointwise, windows for listwise); model_calls: calls that reached the
            model (0 when every answer came from the LLM cache).
        truncated_texts: texts cut to ``max_words``; shortened_on_overflow: prompts re-cut after a context overflow.
        parse_failures: listwise answers (or scores) that named no candidate.
        fallback_queries: queries left in first-stage order (a parse failure or a prompt that never fit).
    """

    queries: int = 0
    candidates: int = 0
    prompts: int = 0
    model_calls: int = 0
    truncated_texts: int = 0
    shortened_on_overflow: int = 0
    parse_failures: int = 0
    fallback_queries: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return {**out, **self.extra}


class ContentRenderer:
    """Turns a template plus query and candidate(s) into chat content parts.

    Args:
        image_mode: ``"native"`` (image parts) or ``"caption"`` (caption-proxy text).
        captions: item id -> caption for caption-proxy mode (else ``item.meta["caption"]``).
        max_words: texts longer than this are cut (and counted).
    """

    def __init__(
        self, *, image_mode: str = "native", captions: Mapping[str, str] | None = None, max_words: int = 256
    ) -> None:
        if image_mode not in IMAGE_MODES:
            raise ValueError(f"unknown image_mode {image_mode!r}; use 'native' or 'caption' (caption-proxy)")
        self.image_mode = image_mode
        self.captions = dict(captions or {})
        self.max_words = max_words

    def check(self, items: Sequence[Item], chat: ChatModel) -> None:
        """Refuse, before any model call, images a text-only model cannot see and captions that are missing."""
        with_images = [it for it in items if it.image is not None]
        if not with_images:
            return
        if self.image_mode == "native" and not chat.supports_images:
            what = (
                f"{len(with_images)} item(s) to rerank hold images (first: {with_images[0].id!r}) and the chat model"
            )
            raise with_cli_message(
                ModalityError(
                    f"{what} reads text only; use a vision-language model or image_mode='caption' (caption-proxy mode)"
                ),
                f"{what} reads text only; use a vision-language model (llm=hf:VLM_FOLDER) or caption-proxy mode: add "
                "image_mode=caption to --rerank, e.g. --rerank true-false:llm=smollm2,image_mode=caption",
            )
        if self.image_mode == "caption":
            missing = [it.id for it in with_images if self._caption(it) is None]
            if missing:
                raise ModalityError(
                    f"caption-proxy mode needs a caption for every image; {len(missing)} have none "
                    f"(first: {missing[0]!r}); pass captions= or set item.meta['caption']"
                )

    def _caption(self, item: Item) -> str | None:
        cap = self.captions.get(item.id) or item.meta.get("caption")
        return str(cap) if cap else None

    def cut(self, text: str, max_words: int | None, stats: RerankStats | None) -> str:
        words = text.split()
        limit = self.max_words if max_words is None else max_words
        if len(words) <= limit:
            return text
        if stats is not None:
            stats.truncated_texts += 1
        return " ".join(words[:limit]) + " …"

    def image(self, item: Item, stats: RerankStats | None) -> list[dict[str, Any]]:
        if item.image is None:
            return []
        if self.image_mode == "native":
            return [{"type": "image", "image": item.image}]
        return [{"type": "text", "text": f"Image description: {self.cut(self._caption(item) or '', None, stats)}"}]

    def parts(
        self,
        template: str,
        query: Query,
        candidate: Item | None = None,
        *,
        values: Mapping[str, list[dict[str, Any]]] | None = None,
        max_words: int | None = None,
        stats: RerankStats | None = None,
    ) -> list[dict[str, Any]]:
        """Content parts for one prompt; adjacent text is merged. ``values`` fills other markers."""
        pieces: list[dict[str, Any]] = []
        for piece in split_template(template):
            if piece == "<qimg>":
                pieces += self.image(query, stats)
            elif piece == "<qtxt>":
                pieces.append({"type": "text", "text": self.cut(query.text or "", max_words, stats)})
            elif piece == "<cimg>":
                pieces += self.image(candidate, stats) if candidate is not None else []
            elif piece == "<ctxt>":
                text = candidate.text if candidate is not None else None
                pieces.append({"type": "text", "text": self.cut(text or "", max_words, stats)})
            elif values is not None and piece in values:
                pieces += values[piece]
            else:
                pieces.append({"type": "text", "text": piece})
        merged: list[dict[str, Any]] = []
        for p in pieces:
            if p["type"] == "text" and merged and merged[-1]["type"] == "text":
                merged[-1] = {"type": "text", "text": merged[-1]["text"] + p["text"]}
            elif p["type"] != "text" or p["text"]:
                merged.append(p)
        return merged

    def conversation(self, parts: list[dict[str, Any]], system: str | None = None) -> Conversation:
        conv: Conversation = [{"role": "system", "content": system}] if system else []
        return [*conv, {"role": "user", "content": parts}]


ScoreFn = Callable[[list[Query], list[list[Item]], list[np.ndarray], RerankStats], list[np.ndarray | None]]
"""(queries, head candidates, head first-stage scores, stats) -> per-query S_rank (None: keep first-stage order)."""


def apply_rerank(
    queries: Sequence[Query],
    rankings: Rankings,
    corpus: Corpus,
    k: int,
    score: ScoreFn,
    *,
    fusion: FusionConfig,
    stats: RerankStats,
    spec: Mapping[str, Any],
    chat: ChatModel | None = None,
) -> Rankings:
    """The shared loop: take each query's top ``k``, score it, fuse, reorder, append the untouched tail.

    ``stats.model_calls`` counts the calls that reached a model during this call (``chat.stats.calls``: a fully
    cached rerun makes none); when ``chat`` is a :class:`~lumir.models.chat.cache.CachedChatModel`, its hits and
    misses are added too (``cache_hits``, ``cache_misses``).
    """
    if k < 1:
        raise ValueError(f"rerank k must be >= 1, got {k}")
    by_id = {q.id: q for q in queries}
    missing = [qid for qid in rankings.query_ids if qid not in by_id]
    if missing:
        raise ValueError(f"rankings hold {len(missing)} query id(s) not among the queries (first: {missing[0]!r})")
    qs: list[Query] = []
    heads: list[list[Item]] = []
    head_scores: list[np.ndarray] = []
    all_hits = []
    for qid, hits in rankings:
        unknown = [h.id for h in hits[:k] if h.id not in corpus]
        if unknown:
            raise KeyError(f"query {qid!r}: candidate {unknown[0]!r} is not in the corpus given to the reranker")
        qs.append(by_id[qid])
        heads.append([corpus[h.id] for h in hits[:k]])
        head_scores.append(np.array([h.score for h in hits[:k]], dtype=np.float64))
        all_hits.append(hits)
    stats.queries += len(qs)
    stats.candidates += sum(len(h) for h in heads)
    calls0 = chat.stats.calls if chat is not None else 0
    cached = chat if isinstance(chat, CachedChatModel) else None
    hits0, misses0 = (cached.hits, cached.misses) if cached is not None else (0, 0)
    rank_scores = score(qs, heads, head_scores, stats) if qs else []
    if chat is not None:
        stats.model_calls = int(chat.stats.calls) - calls0
    if cached is not None:
        stats.extra["cache_hits"] = cached.hits - hits0
        stats.extra["cache_misses"] = cached.misses - misses0
    rows: list[list[tuple[str, float]]] = []
    for q, hits, s_ret, s_rank in zip(qs, all_hits, head_scores, rank_scores, strict=True):
        head = hits[:k]
        if s_rank is None or len(head) == 0:
            stats.fallback_queries += int(s_rank is None and len(head) > 0)
            rows.append([(h.id, h.score) for h in hits])
            continue
        fused = fuse_scores(s_ret, np.asarray(s_rank, dtype=np.float64), fusion.alpha_for(q.task), fusion.normalize)
        order = sorted(range(len(head)), key=lambda j: (-fused[j], j))  # ties keep the first-stage order
        row = [(head[j].id, float(fused[j])) for j in order]
        floor = float(fused.min()) if len(fused) else 0.0
        row += [(h.id, floor - 1.0 - i) for i, h in enumerate(hits[k:])]
        rows.append(row)
    out = Rankings.from_hits([q.id for q in qs], rows, rankings.k)
    meta = {**rankings.meta, "reranker": dict(spec), "rerank_k": k, "rerank": stats.to_dict()}
    return Rankings(out.query_ids, out.ids, out.scores, meta)


def softmax_pick(logprobs: np.ndarray) -> np.ndarray | None:
    """Softmax over candidate-token log-probabilities (rows), or None when no finite value exists."""
    x = np.asarray(logprobs, dtype=np.float64)
    if x.size == 0 or not np.isfinite(x).any():
        return None
    x = np.where(np.isfinite(x), x, -1e30)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


class LLMReranker:
    """What every LLM reranker shares: its chat model, budget ``k``, fusion, rendering, ``rerank`` and ``rank``.

    Subclasses set :attr:`name` and the ``default_*`` class attributes, pass the common options (``**options``) to
    :meth:`_setup` and implement ``_score`` and ``_options_spec``.

    Common options (every reranker takes them):
        llm: a ChatModel, or its spec (``"qwen-coder"``, ``{"type": "llama-cpp", ...}``, ...).
        llm_cache: SQLite file of the on-disk LLM cache to put in front of a model given by spec (None: no cache).
        k: how many candidates per query it reranks (its budget; default :attr:`default_k`).
        alpha, normalize, per_task_alpha: the fusion ``S = α·S_ret + (1 − α)·S_rank`` (α default
            :attr:`default_alpha`); or ``fusion``, a whole :class:`~lumir.rerank.fusion.FusionConfig`.
        image_mode, captions, max_words: rendering (``"native"`` images or ``"caption"`` caption-proxy mode).
        batch_size: prompts per model call; system: a system message; progress: progress bar (None: auto).
    """

    name: ClassVar[str] = ""
    default_k: ClassVar[int] = 10
    default_alpha: ClassVar[float] = 0.5
    default_max_words: ClassVar[int] = 256
    default_batch_size: ClassVar[int] = 16
    chat: ChatModel
    k: int
    fusion: FusionConfig
    renderer: ContentRenderer
    batch_size: int
    system: str | None
    progress: bool | None
    last_stats: RerankStats
    _progress_min = 64  # below this many prompts no bar is shown when ``progress`` is None

    def _setup(
        self,
        llm: ChatModel | str | Mapping[str, Any],
        *,
        llm_cache: str | Path | None = None,
        k: int | None = None,
        alpha: float | None = None,
        normalize: str = "none",
        per_task_alpha: Mapping[str, float] | None = None,
        fusion: FusionConfig | None = None,
        image_mode: str = "native",
        captions: Mapping[str, str] | None = None,
        max_words: int | None = None,
        batch_size: int | None = None,
        system: str | None = None,
        progress: bool | None = None,
    ) -> None:
        """Set the options every reranker shares (see the class docstring); None takes the class default."""
        max_words = self.default_max_words if max_words is None else max_words
        batch_size = self.default_batch_size if batch_size is None else batch_size
        if fusion is not None and (alpha is not None or normalize != "none" or per_task_alpha):
            raise ValueError("give either fusion= or alpha/normalize/per_task_alpha, not both")
        self.k = self.default_k if k is None else int(k)
        if self.k < 1:
            raise ValueError(f"rerank budget k must be >= 1, got {self.k}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        config = fusion or FusionConfig(alpha, normalize, dict(per_task_alpha or {}))
        self.fusion = config.with_default(self.default_alpha)
        self.renderer = ContentRenderer(image_mode=image_mode, captions=captions, max_words=max_words)
        self.chat = resolve_chat_model(llm, llm_cache)
        self.batch_size = batch_size
        self.system = system
        self.progress = progress
        self.last_stats = RerankStats()

    def spec(self) -> dict[str, Any]:
        """Everything that rebuilds this reranker through :data:`lumir.registry.RERANKERS` (its LLM included)."""
        out: dict[str, Any] = {
            "type": self.name,
            "llm": self.chat.spec(),
            "k": self.k,
            "alpha": self.fusion.alpha,
            "normalize": self.fusion.normalize,
            "per_task_alpha": dict(self.fusion.per_task),
            "image_mode": self.renderer.image_mode,
            "max_words": self.renderer.max_words,
            "batch_size": self.batch_size,
            "system": self.system,
            **self._options_spec(),
        }
        if self.renderer.captions:
            out["captions"] = dict(self.renderer.captions)
        return out

    def _options_spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def _score(
        self, queries: list[Query], heads: list[list[Item]], scores: list[np.ndarray], stats: RerankStats
    ) -> list[np.ndarray | None]:
        raise NotImplementedError

    def rerank(self, queries: Sequence[Query], rankings: Rankings, corpus: Corpus) -> Rankings:
        """Reorder each query's top :attr:`k` by the LLM's score fused with the first-stage score (module doc)."""
        stats = RerankStats()
        self.renderer.check(
            [*queries, *(corpus[h.id] for _, hits in rankings for h in hits[: self.k] if h.id in corpus)], self.chat
        )
        out = apply_rerank(
            queries,
            rankings,
            corpus,
            self.k,
            self._score,
            fusion=self.fusion,
            stats=stats,
            spec=self.spec(),
            chat=self.chat,
        )
        self.last_stats = stats
        return out

    def rank(
        self,
        query: Query | Item | str,
        candidates: Sequence[Item | str],
        *,
        top_k: int | None = None,
        return_documents: bool = False,
    ) -> list[dict[str, Any]]:
        """Score every candidate for one query with the LLM alone, best first (sentence-transformers'
        ``CrossEncoder.rank`` shape): ``[{"corpus_id": position, "score": S_rank[, "text": ...]}, ...]``.

        There is no first-stage score here, so nothing is fused and the budget :attr:`k` does not apply.

        Example:
            >>> from lumir.testing.fakes import ScriptedChatModel
            >>> from lumir.rerank import YesNoReranker
            >>> judge = lambda text, toks: [-3.0, 0.0] if text.count("red") == 2 else [0.0, -3.0]  # [NO, YES]
            >>> chat = ScriptedChatModel(score_fn=judge)
            >>> [r["corpus_id"] for r in YesNoReranker(chat).rank("a red car", ["a blue car", "a red car"])]
            [1, 0]
        """
        if isinstance(query, Query):
            q = query
        elif isinstance(query, Item):
            q = Query(query.id, text=query.text, image=query.image, meta=query.meta)
        else:
            q = Query("query", text=query)
        items = [
            Item(str(i), text=c.text, image=c.image, meta=c.meta) if isinstance(c, Item) else Item(str(i), text=c)
            for i, c in enumerate(candidates)
        ]
        if not items:
            return []
        self.renderer.check([q, *items], self.chat)
        stats = RerankStats()
        [s_rank] = self._score([q], [items], [np.zeros(len(items))], stats)
        scores = np.zeros(len(items)) if s_rank is None else np.asarray(s_rank, dtype=np.float64)
        order = sorted(range(len(items)), key=lambda i: (-scores[i], i))[: top_k or len(items)]
        out = []
        for i in order:
            row: dict[str, Any] = {"corpus_id": i, "score": float(scores[i])}
            if return_documents:
                row["text"] = candidates[i] if isinstance(candidates[i], str) else items[i].text
            out.append(row)
        return out

    def _show(self, n: int) -> bool:
        """Whether to show progress for ``n`` prompts: for long jobs by default, or as ``progress`` says."""
        return n >= self._progress_min if self.progress is None else self.progress
