"""Rerankers by name, and the papers' reranking budgets.

=====================  ==========================================================================
``true-false``         MM-Embed zero-shot True/False (aliases ``truefalse``, ``mmembed``)
``yes-no``             LamRA-Rank pointwise P(YES) (aliases ``yesno``, ``lamra``, ``pointwise``)
``listwise``           LamRA-Rank listwise with sliding windows (alias ``lamra-listwise``)
=====================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lumir.protocols import ChatModel, Reranker

__all__ = ["RERANKERS", "RERANK_BUDGETS", "build_reranker", "default_llm_cache", "load_reranker", "reranker_names"]

RERANK_BUDGETS: dict[str, int] = {
    "lamra_mbeir_local": 50,  # LamRA §4.1: M-BEIR local pools, rerank the top-50
    "lamra_zero_shot": 10,  # LamRA §4.1: unseen datasets, top-10
    "lamra_pointwise_vs_listwise": 5,  # LamRA Table 7: top-5
    "mmembed_zero_shot": 10,  # MM-Embed §4.2 / Table 7: top-10
}
"""How many first-stage candidates each paper reranks (use as ``k``)."""

RERANKERS: dict[str, str] = {
    "true-false": "lumir.rerank.pointwise:TrueFalseReranker",
    "yes-no": "lumir.rerank.pointwise:YesNoReranker",
    "listwise": "lumir.rerank.listwise:ListwiseReranker",
}
_ALIASES = {
    "truefalse": "true-false",
    "mmembed": "true-false",
    "yesno": "yes-no",
    "lamra": "yes-no",
    "pointwise": "yes-no",
    "lamra-listwise": "listwise",
    **{name: name for name in RERANKERS},
}


def reranker_names() -> list[str]:
    """Every accepted name and alias."""
    return sorted(_ALIASES)


def load_reranker(name: str, chat: ChatModel, **options: Any) -> Reranker:
    """Build a reranker by name over a ChatModel; ``options`` go to its constructor (k, fusion, window, ...).

    Example:
        >>> from lumir.testing.fakes import ScriptedChatModel
        >>> type(load_reranker("mmembed", ScriptedChatModel())).__name__
        'TrueFalseReranker'
    """
    import importlib

    try:
        target = RERANKERS[_ALIASES[name.lower()]]
    except KeyError:
        raise KeyError(f"unknown reranker {name!r}; known: {reranker_names()}") from None
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    reranker: Reranker = cls(chat, **options)
    return reranker


def default_llm_cache() -> Path:
    """Where LLM generations and scores are cached by default: ``$LUMIR_HOME/llm-cache.sqlite``."""
    from lumir.models.chat.registry import lumir_home

    return lumir_home() / "llm-cache.sqlite"


def build_reranker(
    name: str,
    *,
    llm: str | Mapping[str, Any] = "smollm2",
    cache: str | Path | None = None,
    use_cache: bool = True,
    llm_options: Mapping[str, Any] | None = None,
    k: int | None = None,
    alpha: float | None = None,
    normalize: str = "none",
    per_task_alpha: Mapping[str, float] | None = None,
    **options: Any,
) -> Reranker:
    """A reranker over a chat model given by spec (what the CLI calls), cached on disk unless ``use_cache=False``.

    Args:
        name: reranker name (see the module docstring); llm: a :func:`~lumir.models.chat.load_chat_model` spec.
        cache: the SQLite cache file (default :func:`default_llm_cache`).
        k: rerank budget; alpha, normalize, per_task_alpha: the fusion (None keeps the reranker's default α).
        options: other reranker options (``window``, ``mode``, ``image_mode``, ``batch_size``, ...).
    """
    from lumir.models.chat import CachedChatModel, load_chat_model
    from lumir.rerank.fusion import FusionConfig

    chat: Any = load_chat_model(llm, **dict(llm_options or {}))
    if use_cache:
        chat = CachedChatModel(chat, cache or default_llm_cache())
    opts = dict(options)
    if k is not None:
        opts["k"] = k
    if alpha is not None or normalize != "none" or per_task_alpha:
        default_alpha = 0.0 if _ALIASES.get(name.lower()) == "true-false" else 0.5
        opts["fusion"] = FusionConfig(
            alpha=default_alpha if alpha is None else alpha, normalize=normalize, per_task=dict(per_task_alpha or {})
        )
    return load_reranker(name, chat, **opts)
