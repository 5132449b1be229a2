"""LLM reranking after first-stage retrieval: MM-Embed True/False, LamRA pointwise and listwise, score fusion.

Every reranker implements :class:`~lumir.protocols.Reranker` over any :class:`~lumir.protocols.ChatModel` and only
reorders: its output ids are its input ids. Prompts are data (:mod:`lumir.rerank.prompts`); fusion and its
normalisation are in :mod:`lumir.rerank.fusion`.
"""

from __future__ import annotations

from lumir.rerank.base import RerankStats
from lumir.rerank.fusion import FusionConfig, fuse_scores
from lumir.rerank.listwise import ListwiseReranker
from lumir.rerank.pointwise import PointwiseReranker, TrueFalseReranker, YesNoReranker
from lumir.rerank.prompts import MBEIR_TRUE_FALSE_PROMPTS
from lumir.rerank.registry import RERANK_BUDGETS, load_reranker, reranker_names

__all__ = [
    "MBEIR_TRUE_FALSE_PROMPTS",
    "RERANK_BUDGETS",
    "FusionConfig",
    "ListwiseReranker",
    "PointwiseReranker",
    "RerankStats",
    "TrueFalseReranker",
    "YesNoReranker",
    "fuse_scores",
    "load_reranker",
    "reranker_names",
]
