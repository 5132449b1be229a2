"""HTML galleries: one ranked list per query, and several headed sections on one page."""

from __future__ import annotations

from pathlib import Path

from lumir.collections import Rankings
from lumir.eval.gallery import GallerySection, render_gallery, render_sections, write_sections
from lumir.testing.toy import toy_corpus
from lumir.types import Query


def _one_query() -> tuple[list[Query], Rankings]:
    corpus = toy_corpus()
    ids = corpus.ids[:2]
    return [Query("q1", text="a red <thing>")], Rankings.from_hits(["q1"], [[(ids[0], 0.9), (ids[1], 0.5)]], 2)


def test_sections_get_headings_notes_an_intro_and_their_own_qrels(tmp_path: Path) -> None:
    corpus = toy_corpus()
    queries, rankings = _one_query()
    first = rankings.ids[0][0]
    sections = [
        GallerySection("Text → image", queries, rankings, corpus, {"q1": {first: 1}}, note="green: right"),
        GallerySection("Again", queries, rankings, corpus),
    ]
    page = render_sections(sections, title="demo", intro="line one\nline <two>")
    assert page.count("<h2>") == 2 and "<h2>Text → image</h2>" in page and "green: right" in page
    assert "line one<br>line &lt;two&gt;" in page
    assert page.count('class="hit rel"') == 1  # qrels apply to their own section only
    assert page.count("a red &lt;thing&gt;") == 2 and page.count("#2 · 0.5000 · ") == 2
    path = write_sections(tmp_path / "g.html", sections, title="demo")
    assert path.read_text(encoding="utf-8").startswith("<!doctype html>")


def test_render_gallery_is_one_section_without_heading() -> None:
    queries, rankings = _one_query()
    page = render_gallery(queries, rankings, toy_corpus(), title="t")
    assert "<h2>" not in page and "<h1>t</h1>" in page and "query q1" in page
    assert page.count('<div class="hit') == 2
