"""Flickr8k image-text retrieval: images, their five captions, and the standard t2i / i2t tasks.

Folder layout::

    flickr8k/
      Flickr8k.token.txt     # "<image>#<n>\\t<caption>", 5 captions per image
      images/<image>         # the photos
      test_1k.txt            # one image file name per line (a split); likewise train_4k.txt, ...

Protocol (Karpathy / Hodosh et al.): text -> image with every caption of the split as a query against the split's
images; image -> text with every image as a query against all captions, where any of its 5 captions is a hit.

**Union pool** (:func:`flickr8k_union_tasks`, M-BEIR's universal setting as MM-Embed §5.1 evaluates it): the split's
photos and captions form *one* pool (test_1k: 1,000 + 5,000 = 6,000 candidates) and the instruction alone says
which modality is wanted. ``flickr8k-union/t2i``: each caption, with an instruction asking for an image, against the
whole pool (its photo is relevant; the query's own caption is excluded, since it would trivially rank first);
``flickr8k-union/i2t``: each photo, with an instruction asking for a caption (its 5 captions are relevant; the photo
itself is excluded). The instructions are M-BEIR's first MSCOCO prompts for tasks 0 (text -> image) and 3
(image -> text) (:data:`UNION_INSTRUCTIONS`); Flickr8k photos are everyday scenes like MSCOCO's. Both tasks set
``candidate_modality``, so the evaluator reports MM-Embed's modality accuracy M.A.@1 (Table 2) next to recall.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from lumir.collections import Corpus, RetrievalTask
from lumir.errors import DataFormatError
from lumir.types import ImageRef, Item, Modality, Qrels, Query

__all__ = [
    "IMAGE_TEXT_METRICS",
    "UNION_INSTRUCTIONS",
    "flickr8k_tasks",
    "flickr8k_union_tasks",
    "image_text_tasks",
    "load_flickr8k",
    "union_image_text_tasks",
]

IMAGE_TEXT_METRICS: tuple[str, ...] = ("R@1", "R@5", "R@10")
"""Recall at 1/5/10 in both directions (their sum over both directions is the usual "Rsum")."""

UNION_INSTRUCTIONS: dict[str, str] = {
    "t2i": "Identify the image showcasing the described everyday scene.",
    "i2t": "Find an image caption describing the following everyday image.",
}
"""Union-pool query instructions by direction: M-BEIR's (``instructions/query_instructions.tsv``) first prompts for
MSCOCO task 0 (text -> image) and task 3 (image -> text), also the prompts MTEB's M-BEIR MSCOCO tasks use."""

_WHERE = "pass the flickr8k folder (CLI: --data PATH), or set LUMIR_DATA to the directory that contains flickr8k/"


def _read_split(path: Path) -> list[str]:
    names: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name in seen:
            raise DataFormatError(
                f"image {name!r} is listed twice (first on line {seen[name]})", path=path, line=lineno
            )
        seen[name] = lineno
        names.append(name)
    return names


def _read_captions(path: Path, wanted: set[str]) -> dict[str, list[tuple[str, str]]]:
    """``{image: [(caption_id, caption), ...]}`` for the wanted images, in file order."""
    out: dict[str, list[tuple[str, str]]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            cid, sep, caption = line.rstrip("\n").partition("\t")
            image, hash_, n = cid.partition("#")
            if not sep or not hash_ or not n.isdigit():
                raise DataFormatError("expected '<image>#<n><TAB><caption>'", path=path, line=lineno)
            if image not in wanted:
                continue
            if not caption.strip():
                raise DataFormatError(f"caption {cid!r} is empty", path=path, line=lineno)
            out.setdefault(image, []).append((cid, caption.strip()))
    return out


def check_images_exist(refs: Sequence[tuple[str, Path]], where: str) -> None:
    """Raise FileNotFoundError with the count and first names when listed image files are absent."""
    missing = [name for name, p in refs if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(refs)} listed images are missing under {where} (first: {missing[:5]})"
        )


def load_flickr8k(root: str | Path, split: str = "test_1k") -> tuple[list[Item], list[Item]]:
    """Load a Flickr8k split as ``(images, captions)``.

    Images have id = file name and only an image; captions have id ``"<image>#<n>"``, text only, and
    ``meta["image"]`` naming their image. Both follow the split file's image order.

    Raises:
        FileNotFoundError: the folder, the split file, the caption file or listed images are missing; the message
            says what to pass.
        DataFormatError: a malformed caption or split line, or a split image without captions.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Flickr8k folder not found: {root}; {_WHERE}")
    split_path, token_path = root / f"{split}.txt", root / "Flickr8k.token.txt"
    if not split_path.is_file():
        found = sorted(p.stem for p in root.glob("*.txt") if p.name != token_path.name and "readme" not in p.name)
        raise FileNotFoundError(f"Flickr8k split file not found: {split_path} (splits found: {found}); {_WHERE}")
    if not token_path.is_file():
        raise FileNotFoundError(f"Flickr8k caption file not found: {token_path}; {_WHERE}")
    names = _read_split(split_path)
    refs = [(name, root / "images" / name) for name in names]
    check_images_exist(refs, str(root / "images"))
    by_image = _read_captions(token_path, set(names))
    without = [name for name in names if name not in by_image]
    if without:
        raise DataFormatError(
            f"{len(without)} images of split {split!r} have no caption (first: {without[:5]})", path=token_path
        )
    images = [Item(name, image=ImageRef(str(p))) for name, p in refs]
    captions = [Item(cid, text=text, meta={"image": name}) for name in names for cid, text in by_image[name]]
    return images, captions


def image_text_tasks(
    prefix: str, images: Sequence[Item], captions: Sequence[Item], meta: dict[str, object] | None = None
) -> list[RetrievalTask]:
    """The ``<prefix>/t2i`` and ``<prefix>/i2t`` tasks over images and captions linked by ``meta["image"]``.

    t2i: every caption is a query whose one relevant candidate is its image. i2t: every image is a query whose
    relevant candidates are all its captions.
    """
    t2i_name, i2t_name = f"{prefix}/t2i", f"{prefix}/i2t"
    t2i_qrels: Qrels = {c.id: {c.meta["image"]: 1} for c in captions}
    i2t_qrels: Qrels = {im.id: {} for im in images}
    for c in captions:
        i2t_qrels[c.meta["image"]][c.id] = 1
    info = dict(meta or {})
    t2i = RetrievalTask(
        t2i_name,
        [Query(c.id, text=c.text, meta=c.meta, task=t2i_name) for c in captions],
        Corpus(images),
        t2i_qrels,
        query_modality=Modality.TEXT,
        candidate_modality=Modality.IMAGE,
        metrics=IMAGE_TEXT_METRICS,
        meta=info,
    )
    i2t = RetrievalTask(
        i2t_name,
        [Query(im.id, image=im.image, meta=im.meta, task=i2t_name) for im in images],
        Corpus(captions),
        i2t_qrels,
        query_modality=Modality.IMAGE,
        candidate_modality=Modality.TEXT,
        metrics=IMAGE_TEXT_METRICS,
        meta=info,
    )
    return [t2i, i2t]


def flickr8k_tasks(root: str | Path, split: str = "test_1k") -> list[RetrievalTask]:
    """``flickr8k/t2i`` (captions -> images) and ``flickr8k/i2t`` (images -> captions) for one split.

    On ``test_1k``: 5,000 caption queries against 1,000 images, and 1,000 image queries against 5,000 captions.
    """
    images, captions = load_flickr8k(root, split)
    return image_text_tasks("flickr8k", images, captions, {"source": "flickr8k", "root": str(root), "split": split})


def union_image_text_tasks(
    prefix: str,
    images: Sequence[Item],
    captions: Sequence[Item],
    meta: dict[str, object] | None = None,
    *,
    instructions: Mapping[str, str] | None = UNION_INSTRUCTIONS,
) -> list[RetrievalTask]:
    """``<prefix>/t2i`` and ``<prefix>/i2t`` over ONE pool of ``images`` + ``captions`` (see the module docstring).

    Args:
        prefix: task name prefix.
        images: photo items; candidates and (i2t) queries.
        captions: caption items linked to their photo by ``meta["image"]``; candidates and (t2i) queries.
        meta: recorded in each task's ``meta``.
        instructions: direction (``"t2i"``, ``"i2t"``) -> the instruction set on every query of that direction
            (``Query.instruction``); None leaves queries without one (then an embedder's own instruction table, if
            any, applies).
    """
    pool = Corpus([*images, *captions])
    info = {**(meta or {}), "pool": "union"}
    tasks = []
    for base in image_text_tasks(prefix, images, captions, info):
        direction = base.name.rpartition("/")[2]
        instruction = None if instructions is None else instructions[direction]
        queries = [dataclasses.replace(q, instruction=instruction) for q in base.queries]
        exclude = {q.id: frozenset({q.id}) for q in queries}  # a query's own caption / photo is in the pool
        tasks.append(dataclasses.replace(base, queries=queries, corpus=pool, exclude=exclude))
    return tasks


def flickr8k_union_tasks(
    root: str | Path, split: str = "test_1k", *, instructions: bool = True
) -> list[RetrievalTask]:
    """``flickr8k-union/t2i`` and ``flickr8k-union/i2t``: one split's photos and captions in one pool.

    On ``test_1k``: 6,000 candidates; 5,000 caption queries asking for an image (own caption excluded) and 1,000
    photo queries asking for a caption (the photo itself excluded). ``instructions=False`` drops the instructions
    (:data:`UNION_INSTRUCTIONS`), e.g. for an embedder that cannot embed an image with a text.
    """
    images, captions = load_flickr8k(root, split)
    meta: dict[str, object] = {"source": "flickr8k", "root": str(root), "split": split}
    return union_image_text_tasks(
        "flickr8k-union", images, captions, meta, instructions=UNION_INSTRUCTIONS if instructions else None
    )
