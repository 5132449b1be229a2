"""`lumir demo` for real with lumir-mini on the bundled sample photos: gallery, rankings, warnings, errors, CLI."""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import lumir.demo
from lumir.cli.main import app
from lumir.collections import Corpus
from lumir.demo import SAMPLE_PHOTOS, DemoResult, DemoWarning, collect_samples, find_flickr8k, run_demo
from lumir.demo.run import DEMO_EMBEDDER, _reusable
from lumir.demo.samples import read_sample_table
from lumir.embed import load_embedder
from lumir.errors import DataFormatError, LumirError
from lumir.eval.gallery import GallerySection
from lumir.index import open_index
from lumir.protocols import Embedder

_HIDE_ALL = ("skimage", "skimage.data", "sklearn", "sklearn.datasets", "matplotlib", "matplotlib.cbook")

COVERED: dict[str, set[str]] = {
    "Text → image": {
        "a cat",
        "a cup of coffee",
        "a rocket on a launch pad",
        "a red motorcycle",
        "an old woman in uniform",
    },
    "Image → text": {"chelsea", "coffee", "rocket", "motorcycle"},
    "Composed image + text": {"astronaut + an old woman in a navy uniform", "chelsea + a flower"},
}
"""Demo queries whose known answer shows something an ImageNet class names (tabby cat, espresso, missile, moped,
military uniform, daisy): lumir-mini's open-vocabulary (ConSE) part covers them. Not covered: the galaxies of the
Hubble deep field (no ImageNet class)."""


@pytest.fixture(scope="module")
def mini() -> Embedder:
    return load_embedder(DEMO_EMBEDDER, show_progress=False)  # lumir-mini with its open-vocabulary part


@pytest.fixture(scope="module")
def demo(mini: Embedder, tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    """One real sample-photo demo run, shared by the tests below."""
    return run_demo(tmp_path_factory.mktemp("demo"), flickr=False, embedder=mini, k=5, show_progress=False)


def _section(result: DemoResult, start: str) -> GallerySection:
    return next(s for s in result.sections if s.heading.startswith(start))


def _rank(section: GallerySection, query_id: str, candidate: str) -> int | None:
    return next((h.rank for h in section.rankings.for_query(query_id) if h.id == candidate), None)


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``import`` of these modules fail, as if their package were not installed."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_sample_table_is_complete_and_every_photo_is_saved(demo: DemoResult) -> None:
    assert len({p.id for p in SAMPLE_PHOTOS}) == len(SAMPLE_PHOTOS) == 11
    assert {p.package for p in SAMPLE_PHOTOS} == {"scikit-image", "scikit-learn", "matplotlib"}
    assert all(len(p.caption.split()) >= 5 for p in SAMPLE_PHOTOS)
    # all three packages are installed here (the demo extra), so the demo saved every photo as a JPEG
    saved = sorted(p.stem for p in (demo.html.parent / "photos").glob("*.jpg"))
    assert saved == sorted(p.id for p in SAMPLE_PHOTOS)


def test_malformed_sample_table_names_the_line(tmp_path: Path) -> None:
    table = tmp_path / "t.tsv"
    table.write_text("# c\nid\tpackage\tkey\tcaption\ncat\tscikit-image\tchelsea\n")
    with pytest.raises(DataFormatError, match=r"t\.tsv, line 3: expected 4"):
        read_sample_table(table)


def test_gallery_shows_every_query_with_thumbnails_scores_and_ranks(demo: DemoResult) -> None:
    page = demo.html.read_text(encoding="utf-8")
    assert demo.html.name == "demo.html"
    assert [s.heading for s in demo.sections] == ["Text → image", "Image → text", "Composed image + text"]
    for section in demo.sections:
        assert f"<h2>{html.escape(section.heading)}</h2>" in page
        for q in section.queries:
            assert f"query {q.id}<" in page
            if q.text:
                assert html.escape(q.text) in page
    n_queries = sum(len(s.queries) for s in demo.sections)
    n_image_queries = sum(q.image is not None for s in demo.sections for q in s.queries)
    n_photo_hits = 5 * (n_queries - len(_section(demo, "Image").queries))
    assert page.count('src="data:image/jpeg;base64,') == n_image_queries + n_photo_hits
    assert len(re.findall(r"#[1-5] · -?\d\.\d{4} · ", page)) == 5 * n_queries
    assert 'class="hit rel"' in page  # known answers are framed
    assert "scikit-image (8 photos), scikit-learn (2 photos), matplotlib (1 photo)" in page


def test_counts_sources_and_top1_summary(demo: DemoResult) -> None:
    assert demo.sources == {"scikit-image": 8, "scikit-learn": 2, "matplotlib": 1}
    assert (demo.n_photos, demo.n_captions) == (11, 11)
    assert len(demo.top1) == sum(len(s.queries) for s in demo.sections)
    assert {t.section for t in demo.top1} == {s.heading for s in demo.sections}
    assert demo.seconds["total"] > 0 and (demo.html.parent / "index" / "photos" / "lumir.json").is_file()
    assert sum(t.correct is True for t in demo.top1) >= len(demo.top1) // 2


def test_queries_an_imagenet_class_covers_find_their_known_answer_first(demo: DemoResult) -> None:
    top1 = {(t.section, t.query): t for t in demo.top1}
    asked = {(section, query) for section, queries in COVERED.items() for query in queries}
    assert asked <= set(top1), sorted(asked - set(top1))
    missed = {key: (top1[key].hit, top1[key].known_rank) for key in sorted(asked) if top1[key].known_rank != 1}
    assert not missed, missed


def test_the_open_vocabulary_part_is_what_finds_the_coffee(tmp_path: Path) -> None:
    # heads only (Flickr8k's people-and-dogs world): "a cup of coffee" ranks the cat first, as before the ConSE part
    heads_only = run_demo(tmp_path, flickr=False, embedder="mini:open_vocab=0", k=5, show_progress=False)
    coffee = next(t for t in heads_only.top1 if t.query == "a cup of coffee")
    assert coffee.known_rank != 1 and "chelsea" in coffee.hit


@pytest.mark.parametrize("photo", ["chelsea", "coffee", "rocket", "motorcycle"])
def test_a_photo_finds_its_own_caption(demo: DemoResult, photo: str) -> None:
    section = _section(demo, "Image")
    query = next(q for q in section.queries if q.meta["photo"] == photo)
    assert section.qrels is not None and section.qrels[query.id] == {f"{photo}#0": 1}
    rank = _rank(section, query.id, f"{photo}#0")
    assert rank is not None and rank <= 3, section.rankings.for_query(query.id)


@pytest.mark.parametrize(
    ("text", "photo"), [("a red motorcycle", "motorcycle"), ("a rocket on a launch pad", "rocket")]
)
def test_a_text_query_finds_its_photo(demo: DemoResult, text: str, photo: str) -> None:
    section = _section(demo, "Text")
    query = next(q for q in section.queries if q.text == text)
    rank = _rank(section, query.id, photo)
    assert rank is not None and rank <= 3, section.rankings.for_query(query.id)


def test_composed_queries_leave_out_their_reference_photo(demo: DemoResult) -> None:
    section = _section(demo, "Composed")
    assert all(q.image is not None and q.text for q in section.queries)
    for q in section.queries:
        assert q.image is not None and q.image.path is not None
        hits = section.rankings.for_query(q.id)
        assert len(hits) == 5 and q.image.path.stem not in {h.id for h in hits}
    query = next(q for q in section.queries if q.text == "an old woman in a navy uniform")
    rank = _rank(section, query.id, "grace_hopper")
    assert rank is not None and rank <= 3


def test_a_missing_package_is_skipped_with_a_warning_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _hide(monkeypatch, "sklearn", "sklearn.datasets")
    with pytest.warns(DemoWarning, match=r"scikit-learn is not installed.*china, flower.*pip install 'lumir\[demo\]'"):
        saved = collect_samples(tmp_path)
    ids = {p.id for p in saved}
    assert "china" not in ids and "flower" not in ids and {"chelsea", "grace_hopper"} <= ids


def test_nothing_to_show_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _hide(monkeypatch, *_HIDE_ALL)
    with pytest.warns(DemoWarning), pytest.raises(LumirError, match=r"nothing to show.*--no-flickr.*lumir\[demo\]"):
        run_demo(tmp_path, flickr=False, embedder="hash")
    res = CliRunner().invoke(app, ["demo", "--no-flickr", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "warning: scikit-image is not installed" in res.output and "error: nothing to show" in res.output


def test_data_without_flickr8k_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no Flickr8k found at .*--no-flickr"):
        find_flickr8k(tmp_path)


def test_cli_prints_sources_top1_and_the_gallery(
    demo: DemoResult, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_run_demo(out: Path, **kwargs: Any) -> DemoResult:
        calls.append({"out": out, **kwargs})
        return demo

    opened: list[str] = []
    monkeypatch.setattr(lumir.demo, "run_demo", fake_run_demo)
    monkeypatch.setattr("webbrowser.open", opened.append)
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--no-flickr", "-k", "3", "--open"])
    assert res.exit_code == 0, res.output
    assert calls[0]["out"] == tmp_path and calls[0]["flickr"] is False and calls[0]["k"] == 3
    assert "sources: scikit-image (8 photos), scikit-learn (2 photos), matplotlib (1 photo)" in res.output
    assert "Image → text:" in res.output and "chelsea  ->" in res.output
    assert f"gallery: {demo.html}" in res.output and opened == [demo.html.resolve().as_uri()]


class _Negated:
    """Same spec and dim as the wrapped embedder, other vectors (like new heads under the same spec)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.dim, self.modalities = inner, inner.dim, inner.modalities

    def spec(self) -> dict[str, Any]:
        return self.inner.spec()

    def embed(self, items: Any, **kwargs: Any) -> Any:
        return -self.inner.embed(items, **kwargs)


def test_a_rerun_reuses_the_indexes_only_when_they_still_match(demo: DemoResult, mini: Embedder) -> None:
    out = demo.html.parent
    path = out / "index" / "photos"
    corpus = open_index(path).corpus
    assert _reusable(path, corpus, mini) is not None
    assert _reusable(path, Corpus(list(corpus)[:-1]), mini) is None
    assert _reusable(path, corpus, _Negated(mini)) is None
    again = run_demo(out, flickr=False, embedder=mini, show_progress=False)
    assert sum(n.startswith("reused the") for n in again.notes) == 2
    assert [h.hit for h in again.top1] == [h.hit for h in demo.top1]


@pytest.mark.realdata
def test_flickr8k_subset_adds_photos_captions_and_known_answers(mini: Embedder, tmp_path: Path) -> None:
    from lumir.eval.tasks import default_data_root

    try:
        root = default_data_root()
    except FileNotFoundError as err:
        pytest.fail(f"this test needs Flickr8k: {err}")
    if find_flickr8k(root) is None:
        pytest.fail(f"no flickr8k/ folder in {root}; set LUMIR_DATA to the folder holding flickr8k/")
    result = run_demo(tmp_path, data=root, embedder=mini, flickr_limit=6, show_progress=False)
    assert result.sources["Flickr8k test_1k"] == 6
    assert (result.n_photos, result.n_captions) == (11 + 6, 11 + 30)
    t2i, i2t, _ = result.sections
    flickr_t2i = [q for q in t2i.queries if "caption_id" in q.meta]
    assert len(flickr_t2i) == 2 and all(t2i.qrels and len(t2i.qrels[q.id]) == 1 for q in flickr_t2i)
    assert "a dog running on the beach" in {q.text for q in t2i.queries}
    assert sum(bool(i2t.qrels) and len(i2t.qrels[q.id]) == 5 for q in i2t.queries) == 2  # Flickr photos: 5 captions
    assert "Flickr8k test_1k (6 photos)" in result.html.read_text(encoding="utf-8")
