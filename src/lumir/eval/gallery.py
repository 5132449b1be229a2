"""HTML result galleries: one self-contained page (thumbnails inlined) showing ranked results per query."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lumir.collections import Corpus, Rankings
from lumir.config import atomic_write_text
from lumir.errors import ImageLoadError
from lumir.io.images import thumbnail_data_uri
from lumir.types import Item, Qrels, Query

__all__ = ["GallerySection", "render_gallery", "render_sections", "write_gallery", "write_sections"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
h1{font-size:1.3rem} .q{background:#fff;border:1px solid #ddd;border-radius:8px;padding:1rem;margin:1rem 0}
.row{display:flex;flex-wrap:wrap;gap:.8rem;margin-top:.6rem}
.hit{width:180px;border:1px solid #e2e2e2;border-radius:6px;padding:.4rem;background:#fff;font-size:.8rem}
.hit.rel{border:2px solid #2a9d44} .hit img,.qimg{max-width:100%;border-radius:4px;display:block}
.meta{color:#666;font-size:.75rem} .txt{margin-top:.3rem;max-height:6.5em;overflow:hidden}
.qimg{max-width:200px} h2{font-size:1.1rem;margin-top:2rem} .intro{color:#444}
"""


def _thumb(item: Item, size: int) -> str:
    if item.image is None:
        return ""
    try:
        uri = thumbnail_data_uri(item.image, size=size)
    except ImageLoadError as err:
        return f'<div class="meta">[image unreadable: {html.escape(str(err))}]</div>'
    return f'<img src="{uri}" alt="{html.escape(item.id)}" loading="lazy">'


def _query_blocks(
    queries: Sequence[Query], rankings: Rankings, corpus: Corpus, qrels: Qrels | None, thumb_size: int
) -> list[str]:
    by_id = {q.id: q for q in queries}
    parts: list[str] = []
    for qid, hits in rankings:
        q = by_id.get(qid)
        parts.append('<div class="q">')
        parts.append(f"<div class='meta'>query {html.escape(qid)}</div>")
        if q is not None:
            if q.image is not None:
                parts.append(_thumb(q, thumb_size * 2).replace("<img ", '<img class="qimg" ', 1))
            if q.text:
                parts.append(f"<b>{html.escape(q.text)}</b>")
        parts.append('<div class="row">')
        rel = (qrels or {}).get(qid, {})
        for hit in hits:
            item = corpus.get(hit.id)
            cls = "hit rel" if rel.get(hit.id, 0) > 0 else "hit"
            parts.append(f'<div class="{cls}">')
            parts.append(f"<div class='meta'>#{hit.rank} · {hit.score:.4f} · {html.escape(hit.id)}</div>")
            if item is not None:
                parts.append(_thumb(item, thumb_size))
                text = item.text or str(item.meta.get("caption", "") or "")
                if text:
                    parts.append(f"<div class='txt'>{html.escape(text)}</div>")
            parts.append("</div>")
        parts.append("</div></div>")
    return parts


def _head(title: str) -> list[str]:
    return [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style>",
        f"<h1>{html.escape(title)}</h1>",
    ]


def render_gallery(
    queries: Sequence[Query],
    rankings: Rankings,
    corpus: Corpus,
    *,
    qrels: Qrels | None = None,
    title: str = "lumir results",
    thumb_size: int = 160,
) -> str:
    """Render an HTML page: each query (text and/or image) followed by its ranked hits with scores and ranks.

    Relevant hits (per ``qrels``) get a green border.
    """
    parts = _head(title) + _query_blocks(queries, rankings, corpus, qrels, thumb_size)
    return "\n".join(parts) + "\n"


@dataclass(frozen=True)
class GallerySection:
    """One headed section of a multi-section gallery: queries, their rankings over ``corpus``, optional qrels."""

    heading: str
    queries: Sequence[Query]
    rankings: Rankings
    corpus: Corpus
    qrels: Qrels | None = None
    note: str = ""


def render_sections(
    sections: Sequence[GallerySection], *, title: str = "lumir results", intro: str = "", thumb_size: int = 160
) -> str:
    """Render several :class:`GallerySection` on one page, each under an ``<h2>`` heading (and optional note).

    ``intro`` (plain text; newlines become line breaks) goes under the title.
    """
    parts = _head(title)
    if intro:
        parts.append(f"<p class='intro'>{'<br>'.join(html.escape(line) for line in intro.splitlines())}</p>")
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        if section.note:
            parts.append(f"<p class='meta'>{html.escape(section.note)}</p>")
        parts += _query_blocks(section.queries, section.rankings, section.corpus, section.qrels, thumb_size)
    return "\n".join(parts) + "\n"


def write_gallery(
    path: str | Path, queries: Sequence[Query], rankings: Rankings, corpus: Corpus, **kwargs: object
) -> Path:
    """Write :func:`render_gallery` output to ``path`` (atomically) and return the path."""
    path = Path(path)
    atomic_write_text(path, render_gallery(queries, rankings, corpus, **kwargs))  # type: ignore[arg-type]
    return path


def write_sections(path: str | Path, sections: Sequence[GallerySection], **kwargs: object) -> Path:
    """Write :func:`render_sections` output to ``path`` (atomically) and return the path."""
    path = Path(path)
    atomic_write_text(path, render_sections(sections, **kwargs))  # type: ignore[arg-type]
    return path
