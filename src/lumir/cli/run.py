"""Small helpers the CLI commands share: building queries from options and printing rankings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import typer

from lumir.collections import Corpus, Rankings
from lumir.types import ImageRef, Query

__all__ = ["build_queries", "print_rankings"]


def build_queries(
    texts: Sequence[str], image: Path | None, queries_file: Path | None, instruction: str | None
) -> list[Query]:
    """Queries from ``--text`` (one each), ``--image`` (alone, or composed with a single ``--text``), or a file."""
    if queries_file is not None:
        from lumir.io.jsonl import read_queries

        return read_queries(queries_file)
    if image is not None:
        if not image.is_file():
            raise FileNotFoundError(f"query image not found: {image}")
        if len(texts) > 1:
            raise ValueError("a composed query takes one --text with --image")
        return [Query("q1", text=texts[0] if texts else None, image=ImageRef(image), instruction=instruction)]
    if not texts:
        raise ValueError("give a query: --text, --image, --text with --image, or --queries FILE")
    return [Query(f"q{i + 1}", text=t, instruction=instruction) for i, t in enumerate(texts)]


def print_rankings(queries: Sequence[Query], rankings: Rankings, corpus: Corpus, *, as_json: bool = False) -> None:
    """Print ranked results, one block per query (or JSON lines)."""
    by_id = {q.id: q for q in queries}
    for qid, hits in rankings:
        q = by_id[qid]
        if as_json:
            typer.echo(json.dumps({"query": qid, "hits": [h._asdict() for h in hits]}))
            continue
        label = " + ".join(p for p in (q.image.describe() if q.image else None, q.text) if p)
        typer.echo(f"\n{qid}: {label}")
        for h in hits:
            item = corpus.get(h.id)
            text = "" if item is None else (item.text or str(item.meta.get("caption", "")))
            where = "" if item is None or item.image is None else f" [{item.image.describe()}]"
            snippet = text if len(text) <= 90 else text[:87] + "..."
            typer.echo(f"  {h.rank:>3}. {h.score:7.4f}  {h.id}{where}  {snippet}")
