"""Query rewriting before first-stage retrieval (the MGQRe stage): rewriters behind the ``Rewriter`` protocol.

- :class:`TemplateRewriter` (:mod:`lumir.rewrite.template`): fills a text template with each query — CLIP-style
  prompt templates ("a photo of {text}") and a baseline for learned rewriters.
- :class:`PromptRewriter` (:mod:`lumir.rewrite.prompted`): a prompted LLM rewrites each query (MGQRe's
  LLMsRewrite baseline).
- :class:`TrainedRewriter` (:mod:`lumir.rewrite.trained`): a rewriter trained by SFT → PRO → PPO (or any local
  causal LM) on the one trained prompt.

Every rewriter keeps query ids and order, and records provenance in each rewritten query's ``meta["rewrite"]``
(the original text and the rewriter's spec; the LLM rewriters add ``fallback`` when they kept the original).
The LLM rewriters are imported on first use (they pull in the chat-model stack).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lumir.rewrite.template import TemplateRewriter, with_provenance

if TYPE_CHECKING:
    from lumir.rewrite.base import LLMRewriter, RewriteStats
    from lumir.rewrite.prompted import PromptRewriter
    from lumir.rewrite.trained import TrainedRewriter

__all__ = ["LLMRewriter", "PromptRewriter", "RewriteStats", "TemplateRewriter", "TrainedRewriter", "with_provenance"]

_LAZY = {
    "LLMRewriter": "lumir.rewrite.base",
    "RewriteStats": "lumir.rewrite.base",
    "PromptRewriter": "lumir.rewrite.prompted",
    "TrainedRewriter": "lumir.rewrite.trained",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lumir.rewrite' has no attribute {name!r}")
