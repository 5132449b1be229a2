"""build_index: embed a corpus into a self-describing index directory, resumably and atomically.

Resumable: finished shards live under ``<path>.partial/`` with a manifest (embedder spec, shard size, a digest of the
corpus ids and one content digest per finished shard), so an interrupted build picks up where it stopped: a shard
is reused only when the items at its positions are unchanged (ids, text, image file), any other is embedded again,
and a partial build made with another embedder or shard size is discarded (with a warning) and the build starts
over. Atomic: the
directory is written to a hidden sibling and renamed into place. This follows pyserini's and clip-retrieval's
inspectable, restartable corpus-side jobs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lumir.collections import Corpus
from lumir.config import read_json, write_json
from lumir.errors import DataFormatError, with_cli_message
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
from lumir.io.lock import output_lock
from lumir.progress import progress
from lumir.protocols import Embedder
from lumir.types import Item, Role

__all__ = ["build_index", "shard_digest"]

logger = logging.getLogger(__name__)
progress_log = logging.getLogger("lumir.progress")

_PARTIAL_FORMAT = "lumir-index-partial"
_PARTIAL_VERSION = 2
"""Version 2 records a content digest per finished shard (version 1 recorded only the corpus ids)."""
_SHARD_FILE = re.compile(r"shard-\d{5}\.npy")


def shard_digest(items: Sequence[Item]) -> str:
    """sha256 of what decides the items' vectors, cheaply: id, text, and the image file's path, size and mtime.

    Pixels are not read, so a resumed build checks a shard of 2,048 photos in a few milliseconds; an image file
    rewritten in place with the same size and mtime goes unnoticed.
    """
    h = hashlib.sha256()
    for it in items:
        image: list[Any] | None = None
        if it.image is not None:
            path = it.image.path
            try:
                st = path.stat() if path is not None else None
            except OSError:
                st = None
            image = [str(path), None if st is None else st.st_size, None if st is None else st.st_mtime_ns]
        h.update(json.dumps([it.id, it.text, image], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _ids_digest(ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode("utf-8") + b"\0")
    return h.hexdigest()


def _partial_manifest(path: Path, corpus: Corpus, embedder: Embedder, shard_size: int) -> dict[str, Any]:
    return {
        "format": _PARTIAL_FORMAT,
        "format_version": _PARTIAL_VERSION,
        "target": str(path),
        "embedder": embedder.spec(),
        "dim": embedder.dim,
        "shard_size": shard_size,
        "count": len(corpus),
        "ids_sha256": _ids_digest(corpus.ids),
        "shards": {},
    }


def _mismatches(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why the partial build ``old`` cannot be resumed for ``new`` (empty: it can)."""
    if old.get("format_version") != _PARTIAL_VERSION:
        return [f"it was written by another lumir (partial format_version {old.get('format_version', 1)!r})"]
    problems = []
    if old.get("embedder") != new["embedder"] or old.get("dim") != new["dim"]:
        problems.append(f"it was started with embedder {old.get('embedder')}, not {new['embedder']}")
    if old.get("shard_size") != new["shard_size"]:
        problems.append(f"it used shard_size={old.get('shard_size')}, not {new['shard_size']}")
    if not isinstance(old.get("shards"), dict):
        problems.append("its manifest lists no shards")
    return problems


def _is_partial_folder(partial: Path) -> bool:
    """Whether ``partial`` holds only what a build writes (so it may be deleted): the manifest, shards, temp files."""
    return all(
        p.is_file() and (p.name == "manifest.json" or _SHARD_FILE.fullmatch(p.name) or p.name.startswith("."))
        for p in partial.iterdir()
    )


def _read_manifest(file: Path) -> dict[str, Any] | None:
    """A partial build's manifest, or None when it is missing, unreadable or not lumir's."""
    try:
        old = read_json(file)
    except (DataFormatError, OSError):
        return None
    return old if old.get("format") == _PARTIAL_FORMAT else None


def _open_partial(partial: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest to continue with: the previous run's shard digests (same embedder and shard size), else none.

    A previous partial build that does not match is deleted with a warning; a folder holding anything lumir does
    not write there is never deleted (FileExistsError). When the corpus changed, a warning says so: only shards
    whose items are unchanged will be reused.
    """
    file = partial / "manifest.json"
    foreign = FileExistsError(
        f"{partial} exists and holds files a lumir build does not write; move it away (build_index keeps its "
        "resumable shards there)"
    )
    if partial.is_dir() and any(partial.iterdir()):
        old = _read_manifest(file)
        problems = ["its manifest is missing or unreadable"] if old is None else _mismatches(old, manifest)
        if old is not None and not problems:
            if old.get("ids_sha256") != manifest["ids_sha256"]:
                logger.warning(
                    "the corpus changed since the interrupted build in %s was started (%s items then, %d now): only "
                    "shards whose items are unchanged are reused",
                    partial,
                    old.get("count"),
                    manifest["count"],
                )
                manifest = {**manifest, "corpus_changed": True}
            return {**manifest, "shards": dict(old["shards"])}
        if not _is_partial_folder(partial):
            raise foreign
        logger.warning("discarding the interrupted build in %s and starting over: %s", partial, "; ".join(problems))
        shutil.rmtree(partial)
    elif partial.exists() and not partial.is_dir():
        raise foreign
    partial.mkdir(parents=True, exist_ok=True)
    write_json(file, manifest)
    return manifest


def _load_shard(file: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """A finished shard's vectors, or None (with a warning) when the file is damaged or has the wrong shape."""
    try:
        arr = np.load(file, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        logger.warning("re-embedding %s: the file is damaged (%s)", file, err)
        return None
    if arr.shape != shape:
        logger.warning("re-embedding %s: shape %s, expected %s", file, arr.shape, shape)
        return None
    return np.asarray(arr)


def _embed_shards(
    corpus: Corpus,
    embedder: Embedder,
    partial: Path,
    manifest: dict[str, Any],
    *,
    batch_size: int,
    shard_size: int,
    show_progress: bool,
) -> np.ndarray:
    """Embed the corpus shard by shard into ``partial``, reusing finished shards whose content is unchanged."""
    n_shards = math.ceil(len(corpus) / shard_size)
    recorded: dict[str, str] = manifest["shards"]
    corpus_changed = manifest.pop("corpus_changed", False)  # already reported by _open_partial
    shards: list[np.ndarray | None] = [None] * n_shards
    changed: list[int] = []
    for i in range(n_shards):
        file = partial / f"shard-{i:05d}.npy"
        if str(i) not in recorded or not file.is_file():
            continue
        items = corpus[i * shard_size : (i + 1) * shard_size]
        if recorded[str(i)] != shard_digest(items):
            changed.append(i)
            continue
        shards[i] = _load_shard(file, (len(items), embedder.dim))
    done = sum(len(a) for a in shards if a is not None)
    if done:
        progress_log.info("resuming the build in %s: %d of %d items already embedded", partial, done, len(corpus))
    if changed and not corpus_changed:
        first = corpus[changed[0] * shard_size : (changed[0] + 1) * shard_size]
        logger.warning(
            "%d shard(s) of the interrupted build in %s (%d items) changed since they were embedded (first: shard %d, "
            "items %r to %r); embedding them again",
            len(changed),
            partial,
            sum(len(corpus[i * shard_size : (i + 1) * shard_size]) for i in changed),
            changed[0],
            first[0].id,
            first[-1].id,
        )
    desc = f"embedding {partial.name}"
    with progress(total=len(corpus), initial=done, unit="item", desc=desc, enabled=show_progress) as bar:
        for i in range(n_shards):
            if shards[i] is not None:
                continue
            items = corpus[i * shard_size : (i + 1) * shard_size]
            if recorded.pop(str(i), None) is not None:  # forget the old digest before the file changes
                write_json(partial / "manifest.json", manifest)
            digest = shard_digest(items)  # before embedding: a file changed meanwhile is caught on the next resume
            arr = _vectors(embedder, items, Role.CANDIDATE, batch_size, f"shard {i} of {partial}")
            save_npy(partial / f"shard-{i:05d}.npy", arr)
            recorded[str(i)] = digest
            write_json(partial / "manifest.json", manifest)
            shards[i] = arr
            bar.update(len(items))
    full = [a for a in shards if a is not None]
    return np.concatenate(full) if full else np.empty((0, embedder.dim), dtype=np.float32)


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
    the missing shards and the shards whose items changed since (ids, text, image path/size/mtime), and logs
    "resuming the build in DIR: N of M items already embedded" (``lumir.progress`` logger, INFO). A partial build
    for another corpus, embedder or shard size is discarded with a warning and the build starts over. Atomic: the
    directory is written to a hidden sibling and renamed into place, so an interrupted build never leaves a
    half-written index and an existing index survives a failed rebuild.

    Args:
        corpus: the candidates.
        embedder: the embedder; its ``spec()`` is recorded so :func:`open_index` can rebuild it.
        path: the index directory to create.
        backend: ``"flat"`` (exact) or ``"faiss"``.
        factory: faiss factory string (backend ``"faiss"`` only); default ``IVF<~4 sqrt(n)>,Flat``.
        batch_size: embedding batch size.
        shard_size: items per resumable shard (what an interruption can lose at most).
        overwrite: replace an existing index at ``path`` (atomically).
        show_progress: show progress (a bar on a terminal, rare log lines elsewhere; :mod:`lumir.progress`).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False, or it is a non-empty non-index directory.
        FileExistsError: ``<path>.partial`` exists and was not written by lumir (it is never deleted).
        OutputLockedError: another build of ``path`` is running (it holds ``<path>.partial.lock``).

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
    with output_lock(partial):  # one build per target at a time: a second one refuses (OutputLockedError)
        manifest = _open_partial(partial, _partial_manifest(path, corpus, embedder, shard_size))
        vectors = _embed_shards(
            corpus,
            embedder,
            partial,
            manifest,
            batch_size=batch_size,
            shard_size=shard_size,
            show_progress=show_progress,
        )
        index.add(vectors)
        config = _make_config(index, embedder.spec(), corpus)
        _write_atomically(path, lambda tmp: _write_directory(tmp, config, corpus.ids, corpus, index))
        shutil.rmtree(partial, ignore_errors=True)
    return VectorStore(path, config, index, corpus.ids, embedder=embedder, corpus=corpus)
