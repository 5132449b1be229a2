"""A folder of images (optionally with ``<stem>.txt`` caption sidecars) as candidate items.

Example:
    >>> import tempfile, pathlib
    >>> from lumir.testing.toy import color_image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> color_image("red").save(root / "red.png")
    >>> _ = (root / "red.txt").write_text("a red square")
    >>> [(it.id, dict(it.meta)) for it in load_image_folder(root)]
    [('red.png', {'caption': 'a red square'})]
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

from lumir.errors import DataFormatError
from lumir.io.images import IMAGE_EXTENSIONS
from lumir.types import ImageRef, Item

__all__ = ["load_image_folder"]


def _caption(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as err:
        raise DataFormatError(f"caption file is not valid UTF-8 ({err.reason})", path=path) from err
    return text or None


def _files(root: Path, recursive: bool) -> list[Path]:
    if not recursive:
        return sorted(p for p in root.iterdir() if p.is_file())
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out.extend(Path(dirpath) / f for f in filenames)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def load_image_folder(
    root: str | Path, *, recursive: bool = True, captions: Literal["meta", "item"] = "meta"
) -> list[Item]:
    """Load every image file under ``root`` as an :class:`~lumir.types.Item`, sorted by id.

    Args:
        root: the folder.
        recursive: also look in sub-folders.
        captions: what a sidecar caption ``<stem>.txt`` next to an image becomes: ``"meta"`` stores it in
            ``meta["caption"]`` (an image-only item); ``"item"`` makes the item image+text.

    Returns:
        Items with id = the path relative to ``root`` with forward slashes (``"cats/tom.jpg"``). Files that are
        neither images (by extension, see :data:`lumir.io.images.IMAGE_EXTENSIONS`) nor used caption sidecars are
        skipped with one warning that counts them.

    Raises:
        FileNotFoundError: ``root`` is not a folder, or holds no image.
        ValueError: ``captions`` is not ``"meta"`` or ``"item"``.
    """
    if captions not in ("meta", "item"):
        raise ValueError(f"captions must be 'meta' or 'item', got {captions!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = _files(root, recursive)
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    sidecars: set[Path] = set()
    items: list[Item] = []
    for path in images:
        sidecar = path.with_suffix(".txt")
        text = _caption(sidecar)
        if sidecar.is_file():
            sidecars.add(sidecar)
        ref = ImageRef(str(path))
        item_id = path.relative_to(root).as_posix()
        if captions == "item":
            items.append(Item(item_id, text=text, image=ref))
        else:
            items.append(Item(item_id, image=ref, meta={} if text is None else {"caption": text}))
    skipped = [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS and p not in sidecars]
    if skipped:
        names = [p.relative_to(root).as_posix() for p in skipped[:3]]
        warnings.warn(
            f"{root}: skipped {len(skipped)} file(s) that are not images (first: {names})", UserWarning, stacklevel=2
        )
    if not items:
        raise FileNotFoundError(f"no image files in {root} (looked for {sorted(IMAGE_EXTENSIONS)})")
    return items
