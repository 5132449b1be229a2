"""Karpathy-split caption files in the ALBEF/BLIP format, e.g. ``coco_karpathy_test.json``.

The file is a JSON list of ``{"image": "<path relative to the image root>", "caption": [..] or ".."}``. Test files
give each image once with its list of captions; train files give one caption per entry and repeat the image; both
are read the same way (captions of one image are gathered in file order).
"""

from __future__ import annotations

import json
from pathlib import Path

from lumir.collections import RetrievalTask
from lumir.data.flickr8k import check_images_exist, image_text_tasks
from lumir.errors import DataFormatError
from lumir.types import ImageRef, Item

__all__ = ["karpathy_tasks", "load_karpathy"]


def _read(json_path: Path) -> dict[str, list[str]]:
    """``{image: [caption, ...]}`` in file order."""
    if not json_path.is_file():
        raise FileNotFoundError(f"Karpathy caption file not found: {json_path}")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"invalid JSON: {err.msg}", path=json_path, line=err.lineno) from err
    if not isinstance(data, list):
        raise DataFormatError('expected a JSON list of {"image": ..., "caption": ...} objects', path=json_path)
    out: dict[str, list[str]] = {}
    for i, entry in enumerate(data):
        where = f"entry {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not entry["image"]:
            raise DataFormatError(f'{where}: expected an object with a non-empty "image" string', path=json_path)
        caption = entry.get("caption")
        captions = [caption] if isinstance(caption, str) else caption
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise DataFormatError(
                f'{where}: "caption" must be a string or a non-empty list of strings', path=json_path
            )
        if not all(c.strip() for c in captions):
            raise DataFormatError(f"{where}: image {entry['image']!r} has an empty caption", path=json_path)
        out.setdefault(entry["image"], []).extend(c.strip() for c in captions)
    return out


def load_karpathy(json_path: str | Path, image_root: str | Path | None = None) -> tuple[list[Item], list[Item]]:
    """Load a Karpathy caption file as ``(images, captions)``, like :func:`lumir.data.flickr8k.load_flickr8k`.

    Image ids are the ``image`` values of the file; caption ids are ``"<image>#<n>"`` (n counts from 0 per image)
    with ``meta["image"]`` naming the image.

    Args:
        json_path: the caption file.
        image_root: the folder the ``image`` paths are relative to. When None, no pixels are available: the
            returned image list is empty and the captions still name their image in ``meta["image"]`` (enough
            for text-side work such as query sets and caption statistics).

    Raises:
        FileNotFoundError: the file, or listed images under ``image_root``, are missing (count and first names).
        DataFormatError: the file is not in the format above (the entry is named).
    """
    json_path = Path(json_path)
    by_image = _read(json_path)
    captions = [
        Item(f"{image}#{n}", text=text, meta={"image": image})
        for image, texts in by_image.items()
        for n, text in enumerate(texts)
    ]
    if image_root is None:
        return [], captions
    root = Path(image_root)
    refs = [(image, root / image) for image in by_image]
    check_images_exist(refs, str(root))
    return [Item(image, image=ImageRef(str(p))) for image, p in refs], captions


def karpathy_tasks(json_path: str | Path, image_root: str | Path, name: str | None = None) -> list[RetrievalTask]:
    """``<name>/t2i`` and ``<name>/i2t`` tasks (name defaults to the file stem, e.g. ``coco_karpathy_test_5k``).

    Raises:
        ValueError: ``image_root`` is None (retrieval tasks need the images).
    """
    if image_root is None:
        raise ValueError("Karpathy retrieval tasks need the images: pass image_root (the folder the paths start from)")
    json_path = Path(json_path)
    images, captions = load_karpathy(json_path, image_root)
    prefix = name or json_path.stem
    return image_text_tasks(prefix, images, captions, {"source": "karpathy", "file": str(json_path)})
