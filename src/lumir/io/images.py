"""Image loading with errors that name the item, up-front validation of a corpus' images, and thumbnails.

Example:
    >>> from lumir.testing.toy import color_image
    >>> ref = ImageRef(color_image("red", size=8))
    >>> load_image(ref, "img-red").size
    (8, 8)
    >>> thumbnail_data_uri(ref).startswith("data:image/jpeg;base64,")
    True
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from lumir.errors import ImageLoadError
from lumir.types import ImageRef, Item

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["IMAGE_EXTENSIONS", "find_bad_images", "load_image", "thumbnail_data_uri"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
"""File suffixes (lower case, with the dot) treated as images by the loaders."""


def load_image(ref: ImageRef, item_id: str | None = None) -> PILImage.Image:
    """Decode an image to RGB.

    Args:
        ref: the image reference (a path, encoded bytes or a PIL image).
        item_id: the item the image belongs to, named in any error.

    Raises:
        ImageLoadError: the file is missing, not an image, corrupt, or too large to decode safely; the message names
            the item id (when given) and the source.
    """
    from PIL import Image

    who = f"item {item_id!r}: " if item_id is not None else ""
    try:
        return ref.load()
    except ImageLoadError as err:
        raise ImageLoadError(f"{who}{err}") from err
    except Image.DecompressionBombError as err:
        raise ImageLoadError(f"{who}image {ref.describe()} is too large to decode safely: {err}") from err


def _check(item: Item) -> tuple[str, str] | None:
    if item.image is None:
        return None
    try:
        load_image(item.image, item.id)
    except ImageLoadError as err:
        return item.id, str(err)
    return None


def find_bad_images(items: Iterable[Item], *, progress: bool = True) -> list[tuple[str, str]]:
    """Decode every image of ``items`` and report the ones that fail, before any long job starts.

    Items without an image are skipped. Decoding runs on a few threads (Pillow releases the GIL while decoding).

    Args:
        items: items or queries (a :class:`~lumir.collections.Corpus` works).
        progress: show progress (:mod:`lumir.progress`).

    Returns:
        ``(item_id, reason)`` for each image that cannot be decoded, in input order; empty when all are fine.
    """
    from lumir.progress import track

    with_images = [it for it in items if it.image is not None]
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        checked = pool.map(_check, with_images)
        results = list(track(checked, total=len(with_images), desc="checking images", unit="img", enabled=progress))
    return [r for r in results if r is not None]


def thumbnail_data_uri(ref: ImageRef, size: int = 160) -> str:
    """A base64 JPEG ``data:`` URI of the image shrunk to fit ``size`` x ``size`` (for HTML galleries).

    Raises:
        ImageLoadError: the image cannot be decoded.
    """
    from PIL import Image

    img = load_image(ref).copy()
    img.thumbnail((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
