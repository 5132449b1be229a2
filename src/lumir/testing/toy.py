"""A toy multimodal world with known answers: solid-colour images, colour-word captions, qrels."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from lumir.collections import Corpus, RetrievalTask
from lumir.testing.fakes import COLORS
from lumir.types import ImageRef, Item, Modality, Query

__all__ = ["color_image", "toy_corpus", "toy_corpus_files", "toy_t2i_task", "toy_tasks"]


def color_image(name: str, size: int = 32) -> Image.Image:
    """A solid image of one of :data:`COLORS`."""
    return Image.new("RGB", (size, size), COLORS[name])


def toy_corpus() -> Corpus:
    """One solid-colour image per colour (ids ``img-<colour>``) and one caption per colour (``txt-<colour>``).

    Example:
        >>> len(toy_corpus())
        16
    """
    images = [Item(f"img-{c}", image=ImageRef(color_image(c)), meta={"caption": c}) for c in COLORS]
    texts = [Item(f"txt-{c}", text=f"a {c} thing") for c in COLORS]
    return Corpus(images + texts)


def toy_corpus_files(folder: str | Path) -> Corpus:
    """:func:`toy_corpus` with its images saved as PNG files under ``folder`` (index directories store images by
    path)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for it in toy_corpus():
        if it.image is not None:
            path = folder / f"{it.id}.png"
            color_image(it.id.removeprefix("img-")).save(path)
            it = Item(it.id, image=ImageRef(path), meta=dict(it.meta))
        items.append(it)
    return Corpus(items)


def toy_t2i_task() -> RetrievalTask:
    """Text -> image over the toy corpus images; every colour word query has exactly one right image."""
    corpus = Corpus([it for it in toy_corpus() if it.modality is Modality.IMAGE])
    queries = [Query(f"q-{c}", text=c, task="toy_t2i") for c in COLORS]
    qrels = {f"q-{c}": {f"img-{c}": 1} for c in COLORS}
    return RetrievalTask(
        "toy/t2i", queries, corpus, qrels, Modality.TEXT, Modality.IMAGE, meta={"spec": {"type": "toy"}}
    )


def toy_tasks() -> list[RetrievalTask]:
    """The toy tasks (the ``toy`` task spec of :data:`lumir.registry.TASKS`)."""
    return [toy_t2i_task()]
