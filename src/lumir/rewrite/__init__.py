"""Query rewriting before first-stage retrieval (the MGQRe stage): rewriters behind the ``Rewriter`` protocol.

- :class:`TemplateRewriter` (:mod:`lumir.rewrite.template`): fills a text template with each query — CLIP-style
  prompt templates ("a photo of {text}") and a baseline for learned rewriters.

Every rewriter keeps query ids and order, and records provenance in each rewritten query's ``meta["rewrite"]``
(the original text and the rewriter's spec).
"""

from __future__ import annotations

from lumir.rewrite.template import TemplateRewriter, with_provenance

__all__ = ["TemplateRewriter", "with_provenance"]
