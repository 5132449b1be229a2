"""Load a corpus from a path in any supported layout (jsonl, image folder, Flickr8k, BEIR, M-BEIR pool)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lumir.collections import Corpus
from lumir.io.jsonl import iter_jsonl
from lumir.types import Item

__all__ = [
    "SOURCE_FORMATS",
    "beir_source",
    "detect_format",
    "flickr8k_source",
    "folder_source",
    "jsonl_source",
    "load_corpus",
    "mbeir_source",
]

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


def jsonl_source(path: str | Path) -> Corpus:
    """A lumir jsonl file of items."""
    from lumir.io.jsonl import read_items

    return _named(read_items(path), {"type": "jsonl", "path": str(path)}, path)


def folder_source(path: str | Path, *, recursive: bool = True, captions: str = "meta") -> Corpus:
    """Every image under a folder (``<name>.txt`` sidecars become captions); see :func:`load_image_folder`."""
    from lumir.data.folder import load_image_folder

    items = load_image_folder(path, recursive=recursive, captions=captions)  # type: ignore[arg-type]
    spec = {"type": "folder", "path": str(path), "recursive": recursive, "captions": captions}
    return _named(items, spec, path)


def flickr8k_source(path: str | Path, split: str = "test_1k", *, captions: bool = False) -> Corpus:
    """The photos (or, with ``captions``, the captions) of a Flickr8k split."""
    from lumir.data.flickr8k import load_flickr8k

    images, texts = load_flickr8k(path, split=split)
    kind = "flickr8k-captions" if captions else "flickr8k"
    return _named(texts if captions else images, {"type": kind, "path": str(path), "split": split}, path)


def beir_source(path: str | Path, split: str = "test") -> Corpus:
    """The corpus of a BEIR folder."""
    from lumir.data.beir import load_beir

    corpus = load_beir(path, split=split).corpus
    return _named(list(corpus), {"type": "beir", "path": str(path), "split": split}, path)


def mbeir_source(path: str | Path, root: str | Path | None = None) -> Corpus:
    """An M-BEIR candidate pool jsonl (image paths relative to the M-BEIR ``root``, found above the pool)."""
    from lumir.data.mbeir import load_mbeir_pool

    root = Path(root) if root is not None else _mbeir_root(Path(path))
    corpus = load_mbeir_pool(path, root)
    return Corpus(corpus, source={"type": "mbeir", "path": str(path), "root": str(root)})


def _named(items: list[Item], spec: dict[str, Any], path: str | Path) -> Corpus:
    if not items:
        raise ValueError(f"{path}: no items found (format {spec['type']})")
    return Corpus(items, source=spec)


def load_corpus(
    path: str | Path, fmt: str = "auto", *, split: str | None = None, mbeir_root: Path | None = None
) -> Corpus:
    """Load the items to index from ``path`` in format ``fmt`` (see :data:`SOURCE_FORMATS`), through
    :data:`lumir.registry.SOURCES`; the corpus records its ``source`` spec.

    Raises:
        ValueError: an unknown format, or no items.
        FileNotFoundError: no such path.
    """
    from lumir.registry import SOURCES

    path = Path(path)
    if fmt != "auto" and fmt not in SOURCES:
        raise ValueError(f"unknown format {fmt!r}; choose one of auto, {', '.join(SOURCES.names())}")
    if fmt == "auto":
        fmt = detect_format(path)
    options: dict[str, Any] = {"type": fmt, "path": str(path)}
    if split is not None and fmt in ("flickr8k", "flickr8k-captions", "beir"):
        options["split"] = split
    if mbeir_root is not None and fmt == "mbeir":
        options["root"] = str(mbeir_root)
    corpus: Corpus = SOURCES.build(options)
    return corpus


def _mbeir_root(pool_file: Path) -> Path:
    """The M-BEIR root above ``cand_pool/<local|global>/<file>`` (image paths are relative to it)."""
    for parent in pool_file.resolve().parents:
        if (parent / "cand_pool").is_dir():
            return parent
    return pool_file.parent
