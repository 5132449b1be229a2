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


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _files(root: Path, recursive: bool) -> tuple[list[Path], list[str]]:
    """Files under ``root`` (symlinked files and folders followed) and notes on what was left out.

    A symlinked folder is followed once: one that leads back inside ``root`` (its content is loaded anyway, or it
    is a loop) or to a folder already loaded is left out; a link whose target is missing is left out.
    """
    notes: list[str] = []
    if not recursive:
        entries = sorted(root.iterdir())
        broken = [p.name for p in entries if p.is_symlink() and not p.exists()]
        if broken:
            notes.append(f"{len(broken)} broken link(s) (first: {broken[:3]})")
        return [p for p in entries if p.is_file()], notes
    seen = {os.path.realpath(root)}
    loops: list[str] = []
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for name in sorted(dirnames):
            link = Path(dirpath) / name
            if link.is_symlink():
                real = os.path.realpath(link)
                if any(_inside(real, s) for s in seen):  # root and every folder followed so far
                    loops.append(f"{link.relative_to(root).as_posix()} -> {real}")
                    continue
                seen.add(real)
            keep.append(name)
        dirnames[:] = keep
        out.extend(Path(dirpath) / f for f in filenames)
    broken = [p.relative_to(root).as_posix() for p in out if not p.exists()]
    if broken:
        notes.append(f"{len(broken)} broken link(s) (first: {broken[:3]})")
    if loops:
        notes.append(
            f"{len(loops)} linked folder(s) that lead to a folder already loaded or to a loop (first: {loops[:3]})"
        )
    files = [p for p in out if p.exists()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix()), notes


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
        skipped with one warning that counts them. Symlinked files and folders are followed (ids keep the link's
        path); a linked folder that leads back inside ``root`` or to a folder already loaded (a loop) and a broken
        link are skipped with a warning.

    Raises:
        FileNotFoundError: ``root`` is not a folder, or holds no image.
        ValueError: ``captions`` is not ``"meta"`` or ``"item"``.
    """
    if captions not in ("meta", "item"):
        raise ValueError(f"captions must be 'meta' or 'item', got {captions!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files, notes = _files(root, recursive)
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
    for note in notes:
        warnings.warn(f"{root}: skipped {note}", UserWarning, stacklevel=2)
    if not items:
        raise FileNotFoundError(f"no image files in {root} (looked for {sorted(IMAGE_EXTENSIONS)})")
    return items
