"""run_demo: index sample photos (and Flickr8k when present), run text→image, image→text and composed queries, and
write one HTML gallery of the results.

Layout of the output folder::

    <out>/photos/<id>.jpg      the sample photos (index directories store images by path)
    <out>/index/photos/        index over every photo (text→image and composed queries search it)
    <out>/index/captions/      index over every caption (image→text queries search it)
    <out>/demo.html            the gallery: thumbnails, scores, ranks; known right answers framed green
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lumir.collections import Corpus, Rankings
from lumir.demo.samples import DEMO_EXTRA, SamplePhoto, caption_items, collect_samples, photo_items
from lumir.embed import load_embedder
from lumir.errors import LumirError
from lumir.eval.gallery import GallerySection, write_sections
from lumir.index import FlatIndex, VectorStore, build_index, open_index
from lumir.index.store import CONFIG_FILE
from lumir.pipeline import Pipeline
from lumir.protocols import Embedder
from lumir.retrieve import DenseRetriever
from lumir.types import Item, Qrels, Query, Role

__all__ = ["DEMO_EMBEDDER", "DemoResult", "TopHit", "describe_sources", "find_flickr8k", "run_demo"]

FLICKR_SPLIT = "test_1k"

DEMO_EMBEDDER = "mini:open_vocab=1"
"""lumir-mini with its open-vocabulary (ConSE) part: the sample photos (a cat, an espresso, a moped, a missile) are
outside the Flickr8k world its trained heads know; ImageNet's class names cover them (see lumir.embed.mini)."""

TEXT_QUERIES: tuple[tuple[str, str], ...] = (
    ("a cat", "chelsea"),
    ("a cup of coffee", "coffee"),
    ("a rocket on a launch pad", "rocket"),
    ("galaxies in outer space", "hubble_deep_field"),
    ("a red motorcycle", "motorcycle"),
    ("an old woman in uniform", "grace_hopper"),
)
"""Text queries written for one sample photo each: (query, the photo it was written for)."""

FLICKR_TEXT_QUERIES: tuple[str, ...] = (
    "a dog running on the beach",
    "children playing in a fountain",
    "a man riding a bike on a dirt road",
)
"""Typical Flickr-style queries, asked when Flickr8k is on (no single right answer)."""

IMAGE_QUERIES: tuple[str, ...] = ("chelsea", "coffee", "rocket", "motorcycle")
"""Sample photos asked as image→text queries (their own caption is the right answer)."""

COMPOSED_QUERIES: tuple[tuple[str, str, str], ...] = (
    ("astronaut", "an old woman in a navy uniform", "grace_hopper"),
    ("rocket", "in outer space among galaxies", "hubble_deep_field"),
    ("chelsea", "a flower", "flower"),
)
"""Composed queries over sample photos: (reference photo, modifying text, the photo they were written for)."""

FLICKR_COMPOSED_QUERIES: tuple[tuple[str, str], ...] = (("dog", "in the snow"), ("girl", "on a beach"))
"""Composed queries over Flickr8k: (a word the reference photo's captions contain, modifying text)."""

N_FLICKR_CAPTION_QUERIES = 2
"""How many Flickr8k captions (and photos) to ask as text→image (and image→text) queries with a known answer."""


@dataclass(frozen=True)
class TopHit:
    """The best result of one demo query, and where its known right answer ranked.

    ``known_rank`` is the rank of the best known right answer in the top k (None: not there, or none is known).
    """

    section: str
    query: str
    hit: str
    score: float
    has_known: bool
    known_rank: int | None

    @property
    def correct(self) -> bool | None:
        """Whether the top hit is a known right answer (None when the query has none)."""
        return self.known_rank == 1 if self.has_known else None


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did: where the gallery is, which sources it used, counts, timings and top-1 hits."""

    html: Path
    sources: dict[str, int]
    n_photos: int
    n_captions: int
    sections: list[GallerySection]
    top1: list[TopHit]
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def describe_sources(sources: dict[str, int]) -> str:
    """``"scikit-image (8 photos), matplotlib (1 photo)"``."""
    return ", ".join(f"{name} ({n} photo{'' if n == 1 else 's'})" for name, n in sources.items())


def find_flickr8k(data: str | Path | None = None) -> Path | None:
    """The Flickr8k folder: ``data`` itself or ``data/flickr8k``; without ``data``, ``<default data root>/flickr8k``.

    Returns None when ``data`` is not given and no data root with a ``flickr8k/`` folder exists.

    Raises:
        FileNotFoundError: ``data`` is given but is not a Flickr8k folder and holds no ``flickr8k/`` folder.
    """
    from lumir.eval.tasks import default_data_root

    if data is not None:
        p = Path(data).expanduser()
        for cand in (p, p / "flickr8k"):
            if (cand / "Flickr8k.token.txt").is_file():
                return cand
        raise FileNotFoundError(
            f"no Flickr8k found at {p} (expected {p / 'flickr8k' / 'Flickr8k.token.txt'}); pass --data with the "
            "folder that holds flickr8k/, or --no-flickr to use the sample photos only"
        )
    try:
        root = default_data_root(None) / "flickr8k"
    except FileNotFoundError:
        return None
    return root if root.is_dir() else None


def _flickr(root: Path, limit: int | None) -> tuple[list[Item], list[Item]]:
    from lumir.data.flickr8k import load_flickr8k

    images, captions = load_flickr8k(root.resolve(), FLICKR_SPLIT)
    if limit is not None:
        images = images[:limit]
        keep = {im.id for im in images}
        captions = [c for c in captions if c.meta["image"] in keep]
    return images, captions


def _caption_photo(captions: Sequence[Item]) -> dict[str, list[str]]:
    """photo id -> the ids of its captions."""
    out: dict[str, list[str]] = {}
    for c in captions:
        out.setdefault(str(c.meta["image"]), []).append(c.id)
    return out


def _caption_words(captions: Sequence[Item]) -> dict[str, set[str]]:
    """photo id -> the lower-case words of all its captions."""
    out: dict[str, set[str]] = {}
    for c in captions:
        out.setdefault(str(c.meta["image"]), set()).update(re.findall(r"[a-z]+", (c.text or "").lower()))
    return out


@dataclass(frozen=True)
class _QuerySet:
    kind: str  # "t2i" (searches the photos), "i2t" (searches the captions) or "composed" (the photos)
    heading: str
    queries: list[Query]
    qrels: Qrels
    note: str
    references: dict[str, str] = field(default_factory=dict)  # composed query id -> its reference photo id


def _text_queries(samples: Sequence[SamplePhoto], images: Sequence[Item], captions: Sequence[Item]) -> _QuerySet:
    have = {p.id for p in samples}
    queries: list[Query] = []
    qrels: Qrels = {}
    for text, target in TEXT_QUERIES:
        if target in have:
            queries.append(Query(f"t2i-{len(queries) + 1}", text=text))
            qrels[queries[-1].id] = {target: 1}
    if images:
        queries += [Query(f"t2i-{len(queries) + 1 + i}", text=text) for i, text in enumerate(FLICKR_TEXT_QUERIES)]
        step = max(1, len(images) // N_FLICKR_CAPTION_QUERIES)
        for image in images[::step][:N_FLICKR_CAPTION_QUERIES]:
            caption = next(c for c in captions if c.meta["image"] == image.id)
            queries.append(Query(f"t2i-{len(queries) + 1}", text=caption.text, meta={"caption_id": caption.id}))
            qrels[queries[-1].id] = {image.id: 1}
    note = (
        f"Each text query against all {len(samples) + len(images)} photos. Green: the photo the query was written "
        "for (or, for a Flickr8k caption, the photo it describes)."
    )
    return _QuerySet("t2i", "Text → image", queries, qrels, note)


def _image_queries(samples: Sequence[SamplePhoto], images: Sequence[Item], captions: Sequence[Item]) -> _QuerySet:
    ref = {it.id: it.image for it in photo_items(samples)}
    queries: list[Query] = []
    qrels: Qrels = {}
    for pid in [pid for pid in IMAGE_QUERIES if pid in ref] or list(ref)[:3]:
        queries.append(Query(f"i2t-{len(queries) + 1}", image=ref[pid], meta={"photo": pid}))
        qrels[queries[-1].id] = {f"{pid}#0": 1}
    if images:
        by_photo = _caption_photo(captions)
        step = max(1, len(images) // N_FLICKR_CAPTION_QUERIES)
        for image in images[step // 2 :: step][:N_FLICKR_CAPTION_QUERIES]:
            queries.append(Query(f"i2t-{len(queries) + 1}", image=image.image, meta={"photo": image.id}))
            qrels[queries[-1].id] = dict.fromkeys(by_photo[image.id], 1)
    note = f"Each photo against all {len(samples) + len(captions)} captions. Green: the photo's own caption(s)."
    return _QuerySet("i2t", "Image → text", queries, qrels, note)


def _composed_queries(samples: Sequence[SamplePhoto], images: Sequence[Item], captions: Sequence[Item]) -> _QuerySet:
    ref = {it.id: it.image for it in photo_items(samples)}
    queries: list[Query] = []
    qrels: Qrels = {}
    references: dict[str, str] = {}
    for pid, text, target in COMPOSED_QUERIES:
        if pid in ref and target in ref:
            queries.append(Query(f"cmp-{len(queries) + 1}", text=text, image=ref[pid]))
            qrels[queries[-1].id] = {target: 1}
            references[queries[-1].id] = pid
    if not queries and len(ref) >= 2:
        first = next(iter(ref))
        queries.append(Query("cmp-1", text="at night", image=ref[first]))
        references["cmp-1"] = first
    if images:
        words = _caption_words(captions)
        for word, text in FLICKR_COMPOSED_QUERIES:
            change = text.split()[-1]  # the reference photo should not show it already
            found = next((im for im in images if word in words[im.id] and change not in words[im.id]), None)
            if found is not None:
                label = f"{found.id} (a photo with a {word})"
                queries.append(Query(f"cmp-{len(queries) + 1}", text=text, image=found.image, meta={"label": label}))
                references[queries[-1].id] = found.id
    note = (
        f"A reference photo plus a modifying text against the other {len(samples) + len(images) - 1} photos (the "
        "reference itself is left out). Green: the photo the query was written for."
    )
    return _QuerySet("composed", "Composed image + text", queries, qrels, note, references)


def _drop_references(rankings: Rankings, references: dict[str, str], k: int) -> Rankings:
    """Rankings without each query's own reference photo, cut to ``k``."""
    rows = [[(h.id, h.score) for h in hits if h.id != references.get(qid)][:k] for qid, hits in rankings]
    return Rankings.from_hits(rankings.query_ids, rows, k)


def _top1(qs: _QuerySet, rankings: Rankings, corpus: Corpus, about: dict[str, str]) -> list[TopHit]:
    """The top hit of each query; ``about`` gives a caption of each photo, to say what a photo hit shows."""
    out = []
    for q in qs.queries:
        hits = rankings.for_query(q.id)
        if not hits:
            continue
        best, item = hits[0], corpus.get(hits[0].id)
        photo = q.meta.get("label") or q.meta.get("photo") or qs.references.get(q.id)
        asked = " + ".join(str(x) for x in (photo, q.text) if x)
        if item is not None and item.text:
            shown = f"{item.text} ({best.id})"
        else:
            shown = best.id + (f' (captioned "{about[best.id]}")' if best.id in about else "")
        known = qs.qrels.get(q.id) or {}
        rank = next((h.rank for h in hits if known.get(h.id, 0) > 0), None)
        out.append(TopHit(qs.heading, asked, shown, best.score, bool(known), rank))
    return out


def _reusable(path: Path, corpus: Corpus, embedder: Embedder) -> VectorStore | None:
    """The index at ``path`` when it holds exactly ``corpus`` embedded by this embedder, else None.

    Besides the ids, items and embedder spec, the first and last items are embedded again and compared with the
    stored vectors, so an index made with other weights under the same spec (e.g. updated heads) is not reused.
    """
    if not (path / CONFIG_FILE).is_file():
        return None
    try:
        store = open_index(path, embedder=embedder)
        if store.config.get("embedder") != embedder.spec() or store.ids != corpus.ids:
            return None
        if [_content(it) for it in store.corpus] != [_content(it) for it in corpus]:
            return None
    except (LumirError, OSError, ValueError):
        return None
    if not isinstance(store.index, FlatIndex) or not len(corpus):
        return None
    probe = sorted({0, len(corpus) - 1})
    fresh = embedder.embed([corpus[i] for i in probe], role=Role.CANDIDATE)
    stored = store.index.vectors[probe]
    return store if torch.allclose(torch.as_tensor(fresh), stored, atol=1e-4) else None


def _content(item: Item) -> tuple[str, str | None, str | None]:
    path = None if item.image is None else item.image.path
    return item.id, item.text, None if path is None else str(path.resolve())


def run_demo(
    out: str | Path = "runs/demo",
    *,
    data: str | Path | None = None,
    flickr: bool = True,
    k: int = 5,
    embedder: Embedder | str = DEMO_EMBEDDER,
    batch_size: int = 64,
    flickr_limit: int | None = None,
    show_progress: bool = True,
    reuse: bool = True,
    log: Callable[[str], None] | None = None,
) -> DemoResult:
    """Index the sample photos (and Flickr8k's 1K test photos and captions when found), run the demo queries, and
    write ``<out>/demo.html``.

    Args:
        out: output folder (photos, the two indexes and the gallery go there; stale demo indexes are replaced).
        data: the folder holding ``flickr8k/`` (or the Flickr8k folder itself); default: ``$LUMIR_DATA`` or
            ``../shared/data`` when they hold one. Without any, the demo uses the sample photos only.
        flickr: add Flickr8k when found (False: sample photos only).
        k: results per query.
        embedder: an embedder or a spec for :func:`lumir.embed.load_embedder`; loaded once, used for everything
            (default: :data:`DEMO_EMBEDDER`, lumir-mini with its open-vocabulary part).
        batch_size: embedding batch size.
        flickr_limit: use only the first ``flickr_limit`` Flickr8k test photos (and their captions).
        show_progress: show progress bars while embedding.
        reuse: keep an index already in ``out`` when it holds the same items embedded the same way (checked by
            re-embedding its first and last items); False: always re-embed.
        log: called with a line for each step (e.g. ``print``).

    Raises:
        LumirError: no sample-photo package is installed and Flickr8k is off or not found.
        FileNotFoundError: ``data`` is given but holds no Flickr8k.
    """
    say = log or (lambda _line: None)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    out = Path(out)
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    flickr_root = find_flickr8k(data) if flickr else None
    samples = collect_samples(out / "photos")
    images, captions = _flickr(flickr_root, flickr_limit) if flickr_root is not None else ([], [])
    if not samples and not images:
        why = "--no-flickr was given" if not flickr else "no Flickr8k folder was found (pass --data PATH)"
        raise LumirError(
            "nothing to show: none of scikit-image, scikit-learn and matplotlib is installed (they ship the sample "
            f"photos) and {why}. Install them with: pip install '{DEMO_EXTRA}'"
        )
    notes = []
    if not flickr:
        notes.append("Flickr8k skipped (--no-flickr)")
    elif flickr_root is None:
        notes.append(
            "Flickr8k not found: pass --data PATH (the folder holding flickr8k/) to add its 1,000 test photos"
        )
    sources: dict[str, int] = {}
    for p in samples:
        sources[p.package] = sources.get(p.package, 0) + 1
    if images:
        sources[f"Flickr8k {FLICKR_SPLIT}"] = len(images)
    seconds["photos"] = time.perf_counter() - started

    t = time.perf_counter()
    emb = load_embedder(embedder) if isinstance(embedder, str) else embedder
    seconds["load embedder"] = time.perf_counter() - t
    photos = Corpus([*photo_items(samples), *images])
    texts = Corpus([*caption_items(samples), *captions])
    stores = {}
    reused = []
    for name, corpus in (("photos", photos), ("captions", texts)):
        path = out / "index" / name
        t = time.perf_counter()
        store = _reusable(path, corpus, emb) if reuse else None
        if store is not None:
            reused.append(name)
            notes.append(f"reused the {name} index in {path} (same items, same embedder)")
        else:
            say(f"embedding {len(corpus)} {name} -> {path}")
            store = build_index(corpus, emb, path, batch_size=batch_size, overwrite=True, show_progress=show_progress)
        stores[name] = store
        seconds[f"index {name}"] = time.perf_counter() - t

    t = time.perf_counter()
    search = {
        "photos": Pipeline(DenseRetriever.from_store(stores["photos"], batch_size=batch_size), k=k),
        "captions": Pipeline(DenseRetriever.from_store(stores["captions"], batch_size=batch_size), k=k),
    }
    about: dict[str, str] = {}
    for c in texts:
        about.setdefault(str(c.meta["image"]), c.text or "")
    sections: list[GallerySection] = []
    top1: list[TopHit] = []
    for make in (_text_queries, _image_queries, _composed_queries):
        qs = make(samples, images, captions)
        if not qs.queries:
            continue
        corpus = texts if qs.kind == "i2t" else photos
        pipeline = search["captions" if qs.kind == "i2t" else "photos"]
        if qs.references:  # one more, since each query's own reference photo is dropped
            rankings = _drop_references(pipeline.run(qs.queries, k + 1).final, qs.references, k)
        else:
            rankings = pipeline.run(qs.queries, k).final
        sections.append(GallerySection(qs.heading, qs.queries, rankings, corpus, qs.qrels, qs.note))
        top1 += _top1(qs, rankings, corpus, about)
    seconds["queries"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started

    built = (
        "" if len(reused) == len(stores) else f" (embedding took {sum(seconds[f'index {n}'] for n in stores):.0f} s)"
    )
    intro = "\n".join(
        [
            f"Sources: {describe_sources(sources)}.",
            f"{len(photos)} photos and {len(texts)} captions indexed with the {emb.spec()['type']} embedder"
            f"{' (open vocabulary)' if emb.spec().get('open_vocab') else ''}"
            f"{built}; {k} results per query; {seconds['total']:.0f} s in all.",
            *notes,
            "Each result shows its rank, its cosine score and its id; a green frame marks a known right answer.",
        ]
    )
    html_path = write_sections(out / "demo.html", sections, title="lumir demo", intro=intro)
    return DemoResult(html_path, sources, len(photos), len(texts), sections, top1, seconds, notes)
