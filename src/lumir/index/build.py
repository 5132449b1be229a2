"""build_index: embed a corpus into a self-describing index directory, resumably and atomically.

Resumable: finished shards live under ``<path>.partial/`` with a manifest (corpus ids, embedder spec, shard size),
so an interrupted build picks up where it stopped. Atomic: the directory is written to a hidden sibling and
renamed into place. This follows pyserini's and clip-retrieval's inspectable, restartable corpus-side jobs.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lumir.collections import Corpus
from lumir.config import read_json, write_json
from lumir.errors import IncompatibleIndexError, with_cli_message
from lumir.index.flat import save_npy
from lumir.index.store import (
    CONFIG_FILE,
    VectorStore,
    _check_storable,
    _make_config,
    _new_index,
    _vectors,
    _write_atomically,
    _write_directory,
)
from lumir.progress import progress
from lumir.protocols import Embedder
from lumir.types import Role

__all__ = ["build_index"]

logger = logging.getLogger(__name__)

_PARTIAL_FORMAT = "lumir-index-partial"


def _partial_manifest(path: Path, corpus: Corpus, embedder: Embedder, shard_size: int) -> dict[str, Any]:
    return {
        "format": _PARTIAL_FORMAT,
        "target": str(path),
        "embedder": embedder.spec(),
        "dim": embedder.dim,
        "shard_size": shard_size,
        "count": len(corpus),
        "ids": corpus.ids,
    }


def _check_resume(partial: Path, manifest: dict[str, Any]) -> None:
    """Refuse to resume an interrupted build made for another corpus, embedder or shard size."""
    old = read_json(partial / "manifest.json")
    problems = []
    if old.get("format") != _PARTIAL_FORMAT:
        problems.append("it is not a lumir partial build")
    if old.get("embedder") != manifest["embedder"]:
        problems.append(f"it was started with embedder {old.get('embedder')}, not {manifest['embedder']}")
    if old.get("ids") != manifest["ids"]:
        old_ids = old.get("ids") or []
        diff = next((i for i, (a, b) in enumerate(zip(old_ids, manifest["ids"], strict=False)) if a != b), None)
        where = f"first difference at position {diff}" if diff is not None else "different length"
        problems.append(f"it was started for a different corpus ({len(old_ids)} vs {manifest['count']} ids, {where})")
    if old.get("shard_size") != manifest["shard_size"]:
        problems.append(f"it used shard_size={old.get('shard_size')}, not {manifest['shard_size']}")
    if problems:
        raise IncompatibleIndexError(
            f"cannot resume the interrupted build in {partial}: " + "; ".join(problems) + ". "
            f"Resume with the same corpus, embedder and shard_size, or delete {partial} to start over."
        )


def _embed_shards(
    corpus: Corpus, embedder: Embedder, partial: Path, *, batch_size: int, shard_size: int, show_progress: bool
) -> np.ndarray:
    """Embed the corpus shard by shard into ``partial`` (skipping shards already there); return all vectors."""
    n_shards = math.ceil(len(corpus) / shard_size)
    files = [partial / f"shard-{i:05d}.npy" for i in range(n_shards)]
    done = sum(min(shard_size, len(corpus) - i * shard_size) for i, f in enumerate(files) if f.is_file())
    if done:
        logger.info("resuming the build in %s: %d of %d items already embedded", partial, done, len(corpus))
    shards: list[np.ndarray] = []
    desc = f"embedding {partial.name}"
    with progress(total=len(corpus), initial=done, unit="item", desc=desc, enabled=show_progress) as bar:
        for i, file in enumerate(files):
            items = corpus[i * shard_size : (i + 1) * shard_size]
            if file.is_file():
                arr = np.load(file, allow_pickle=False)
                if arr.shape == (len(items), embedder.dim):
                    shards.append(arr)
                    continue
                logger.warning("re-embedding %s: shape %s, expected %s", file, arr.shape, (len(items), embedder.dim))
            arr = _vectors(embedder, items, Role.CANDIDATE, batch_size, f"shard {i} of {partial}")
            save_npy(file, arr)
            shards.append(arr)
            bar.update(len(items))
    return np.concatenate(shards) if shards else np.empty((0, embedder.dim), dtype=np.float32)


def build_index(
    corpus: Corpus,
    embedder: Embedder,
    path: str | Path,
    *,
    backend: str = "flat",
    factory: str | None = None,
    batch_size: int = 64,
    shard_size: int = 2048,
    overwrite: bool = False,
    show_progress: bool = True,
) -> VectorStore:
    """Embed a corpus (role CANDIDATE) and write a self-describing index directory at ``path``.

    Resumable: finished shards are kept in ``<path>.partial/``; calling again after an interruption embeds only
    the missing shards. Atomic: the directory is written to a hidden sibling and renamed into place, so an
    interrupted build never leaves a half-written index and an existing index survives a failed rebuild.

    Args:
        corpus: the candidates.
        embedder: the embedder; its ``spec()`` is recorded so :func:`open_index` can rebuild it.
        path: the index directory to create.
        backend: ``"flat"`` (exact) or ``"faiss"``.
        factory: faiss factory string (backend ``"faiss"`` only); default ``IVF<~4 sqrt(n)>,Flat``.
        batch_size: embedding batch size.
        shard_size: items per resumable shard.
        overwrite: replace an existing index at ``path`` (atomically).
        show_progress: show progress (a bar on a terminal, rare log lines elsewhere; :mod:`lumir.progress`).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False, or it is a non-empty non-index directory.
        IncompatibleIndexError: ``<path>.partial/`` holds a build for another corpus / embedder / shard size.

    Example:
        >>> import tempfile
        >>> from lumir.testing.fakes import HashEmbedder
        >>> from lumir.types import Item, Query
        >>> corpus = Corpus([Item("a", text="red"), Item("b", text="blue")])
        >>> from lumir.retrieve import DenseRetriever
        >>> store = build_index(corpus, HashEmbedder(8), tempfile.mkdtemp() + "/idx", show_progress=False)
        >>> DenseRetriever.from_store(store).retrieve([Query("q", text="blue")], k=1).for_query("q")[0].id
        'b'
    """
    path = Path(path)
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    if path.exists():
        if not overwrite:
            raise with_cli_message(
                FileExistsError(f"{path} already exists; pass overwrite=True to replace it or choose another path"),
                f"{path} already exists; pass --overwrite to replace it, or --add to add items to it",
            )
        if not (path / CONFIG_FILE).is_file() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"{path} exists and is not a lumir index directory; refusing to replace it")
    _check_storable(corpus)
    index = _new_index(backend, embedder.dim, factory, len(corpus))
    partial = path.with_name(path.name + ".partial")
    manifest = _partial_manifest(path, corpus, embedder, shard_size)
    if (partial / "manifest.json").is_file():
        _check_resume(partial, manifest)
    else:
        partial.mkdir(parents=True, exist_ok=True)
        write_json(partial / "manifest.json", manifest)
    vectors = _embed_shards(
        corpus, embedder, partial, batch_size=batch_size, shard_size=shard_size, show_progress=show_progress
    )
    index.add(vectors)
    config = _make_config(index, embedder.spec(), corpus)
    _write_atomically(path, lambda tmp: _write_directory(tmp, config, corpus.ids, corpus, index))
    shutil.rmtree(partial, ignore_errors=True)
    return VectorStore(path, config, index, corpus.ids, embedder=embedder, corpus=corpus)
