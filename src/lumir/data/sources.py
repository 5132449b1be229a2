"""Load a corpus from a path in any supported layout (jsonl, image folder, Flickr8k, BEIR, M-BEIR pool)."""

from __future__ import annotations

from pathlib import Path

from lumir.collections import Corpus
from lumir.io.jsonl import iter_jsonl
from lumir.types import Item

__all__ = ["SOURCE_FORMATS", "detect_format", "load_corpus"]

SOURCE_FORMATS = ("auto", "jsonl", "folder", "flickr8k", "flickr8k-captions", "beir", "mbeir")


def detect_format(path: Path) -> str:
    """Guess the format of ``path`` from its layout."""
    if path.is_file() and path.suffix == ".jsonl":
        for _, row in iter_jsonl(path):
            return "mbeir" if "did" in row else "jsonl"
        return "jsonl"
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            return "beir"
        if (path / "Flickr8k.token.txt").is_file():
            return "flickr8k"
        return "folder"
    if path.exists():
        raise ValueError(
            f"{path}: cannot tell its format; expected a .jsonl file (lumir items or an M-BEIR pool) or a folder "
            "(images, Flickr8k or BEIR); pass --format to choose"
        )
    raise FileNotFoundError(f"{path}: no such file or directory")


def load_corpus(path: Path, fmt: str = "auto", *, split: str = "test_1k", mbeir_root: Path | None = None) -> Corpus:
    """Load the items to index from ``path`` in format ``fmt`` (see :data:`SOURCE_FORMATS`)."""
    if fmt not in SOURCE_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(SOURCE_FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(path)
    items: list[Item]
    if fmt == "jsonl":
        from lumir.io.jsonl import read_items

        items = read_items(path)
    elif fmt == "folder":
        from lumir.data.folder import load_image_folder

        items = load_image_folder(path)
    elif fmt in ("flickr8k", "flickr8k-captions"):
        from lumir.data.flickr8k import load_flickr8k

        images, captions = load_flickr8k(path, split=split)
        items = images if fmt == "flickr8k" else captions
    elif fmt == "beir":
        from lumir.data.beir import load_beir

        return load_beir(path).corpus
    else:
        from lumir.data.mbeir import load_mbeir_pool

        return load_mbeir_pool(path, mbeir_root or _mbeir_root(path))
    if not items:
        raise ValueError(f"{path}: no items found (format {fmt})")
    return Corpus(items)


def _mbeir_root(pool_file: Path) -> Path:
    """The M-BEIR root above ``cand_pool/<local|global>/<file>`` (image paths are relative to it)."""
    for parent in pool_file.resolve().parents:
        if (parent / "cand_pool").is_dir():
            return parent
    return pool_file.parent
