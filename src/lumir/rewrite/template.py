"""TemplateRewriter: ``template.format(text=query.text)`` for every query with text, provenance recorded."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from lumir.types import Query

__all__ = ["TemplateRewriter", "with_provenance"]


def with_provenance(query: Query, text: str | None, rewriter: Mapping[str, Any], **extra: Any) -> Query:
    """``query`` with new ``text``; ``meta["rewrite"]`` keeps the original text, the rewriter's spec and ``extra``.

    Example:
        >>> q = with_provenance(Query("q1", text="dog"), "a photo of dog", {"type": "template"})
        >>> q.text, q.meta["rewrite"]["original"]
        ('a photo of dog', 'dog')
    """
    record = {"original": query.text, "rewriter": dict(rewriter), **extra}
    return dataclasses.replace(query, text=text, meta={**query.meta, "rewrite": record})


class TemplateRewriter:
    """Rewrites each query's text as ``template.format(text=...)``; image-only queries pass unchanged.

    Args:
        template: a ``str.format`` template with a ``{text}`` field, e.g. ``"a photo of {text}"``.

    Example:
        >>> r = TemplateRewriter("a photo of {text}")
        >>> [q.text for q in r.rewrite([Query("q", text="a cat")])]
        ['a photo of a cat']
    """

    def __init__(self, template: str) -> None:
        if "{text}" not in template:
            raise ValueError(f"the rewrite template {template!r} needs a {{text}} field, e.g. 'a photo of {{text}}'")
        self.template = template

    def spec(self) -> dict[str, Any]:
        """``{"type": "template", "template": ...}``."""
        return {"type": "template", "template": self.template}

    def rewrite(self, queries: Sequence[Query]) -> list[Query]:
        """One rewritten query per input (same ids, same order)."""
        spec = self.spec()
        return [q if q.text is None else with_provenance(q, self.template.format(text=q.text), spec) for q in queries]
