"""Rerankers by spec (through :data:`lumir.registry.RERANKERS`), and the papers' reranking budgets.

=====================  ==========================================================================
``true-false``         MM-Embed zero-shot True/False (aliases ``truefalse``, ``mmembed``)
``yes-no``             LamRA-Rank pointwise P(YES) (aliases ``yesno``, ``lamra``, ``pointwise``)
``listwise``           LamRA-Rank listwise with sliding windows (alias ``lamra-listwise``)
=====================  ==========================================================================

A spec names the reranker and its options, its LLM included:
``yes-no:llm=qwen-coder,k=20,alpha=0.5`` or ``{"type": "yes-no", "llm": "qwen-coder", "k": 20}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lumir.models.chat.cache import default_llm_cache
from lumir.protocols import ChatModel, Reranker

__all__ = ["RERANK_BUDGETS", "default_llm_cache", "load_reranker", "reranker_names"]

RERANK_BUDGETS: dict[str, int] = {
    "lamra_mbeir_local": 50,  # LamRA §4.1: M-BEIR local pools, rerank the top-50
    "lamra_zero_shot": 10,  # LamRA §4.1: unseen datasets, top-10
    "lamra_pointwise_vs_listwise": 5,  # LamRA Table 7: top-5
    "mmembed_zero_shot": 10,  # MM-Embed §4.2 / Table 7: top-10
}
"""How many first-stage candidates each paper reranks (use as ``k``)."""


def reranker_names() -> list[str]:
    """Every accepted name and alias."""
    from lumir.registry import RERANKERS

    return sorted(RERANKERS.aliases())


def load_reranker(
    spec: str | Mapping[str, Any], llm: ChatModel | str | Mapping[str, Any] | None = None, **options: Any
) -> Reranker:
    """Build a reranker from its spec; ``llm`` (a ChatModel or its spec) and ``options`` override the spec's.

    Example:
        >>> from lumir.testing.fakes import ScriptedChatModel
        >>> type(load_reranker("mmembed", ScriptedChatModel())).__name__
        'TrueFalseReranker'
        >>> load_reranker("yes-no:k=20,alpha=0.3", ScriptedChatModel()).k
        20
    """
    from lumir.registry import RERANKERS

    if llm is not None:
        options["llm"] = llm
    reranker: Reranker = RERANKERS.build(spec, **options)
    return reranker
