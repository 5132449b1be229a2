"""VectorStore: a self-describing index directory that reloads without code and embeds its own queries.

Layout (documented in ``docs/formats.md``, "Index directory")::

    my-index/
      lumir.json     format, format_version, backend (+ config), embedder spec, dim, count, modalities, stamps
      ids.json       candidate ids in position order
      items.jsonl    the corpus items (lumir jsonl)
      vectors.npy    (backend "flat")  or  faiss.index  (backend "faiss")

The idea follows lancedb's table metadata: because ``lumir.json`` records the embedder spec, an opened index
can embed its own queries. :func:`build_index` is resumable (finished shards live under ``<path>.partial/``)
and atomic (the directory is written to a hidden sibling and renamed into place), after pyserini's and
clip-retrieval's inspectable, restartable corpus-side jobs.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]

from lumir.collections import Corpus, Rankings
from lumir.config import atomic_write_text, lumir_version, read_json, versions, write_json
from lumir.errors import DimensionMismatchError, IncompatibleIndexError
from lumir.index.faiss_backend import FaissIndex
from lumir.index.flat import FlatIndex, save_npy
from lumir.io.jsonl import read_items, write_items
from lumir.protocols import Embedder
from lumir.types import Item, Modality, Query, Role

__all__ = ["FORMAT_VERSION", "VectorStore", "build_index", "open_index"]

logger = logging.getLogger(__name__)

FORMAT = "lumir-index"
FORMAT_VERSION = 1
"""The newest ``format_version`` of ``lumir.json`` this lumir writes and reads."""

CONFIG_FILE, IDS_FILE, ITEMS_FILE = "lumir.json", "ids.json", "items.jsonl"
VECTOR_FILES = {"flat": "vectors.npy", "faiss": "faiss.index"}
_PARTIAL_FORMAT = "lumir-index-partial"

AnyIndex = FlatIndex | FaissIndex


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_storable(items: Sequence[Item]) -> None:
    """Fail before any embedding if an item cannot be written to ``items.jsonl`` (images must be files)."""
    for it in items:
        if it.image is not None and it.image.path is None:
            raise ValueError(
                f"item {it.id!r}: its image is held in memory ({it.image.describe()}); an index directory stores "
                "images by path, so save the image to a file and build the item with that path"
            )


def _vectors(embedder: Embedder, items: Sequence[Item], role: Role, batch_size: int, where: str) -> np.ndarray:
    """Embed ``items`` and check the result is (len(items), embedder.dim) float32."""
    out = embedder.embed(items, role=role, batch_size=batch_size)
    arr = out.detach().to(device="cpu", dtype=torch.float32).numpy()
    if arr.ndim != 2 or arr.shape[0] != len(items):
        raise ValueError(f"embedder {embedder.spec()} returned shape {arr.shape} for {len(items)} items")
    if arr.shape[1] != embedder.dim:
        raise DimensionMismatchError(
            f"embedder {embedder.spec()} declares dim {embedder.dim} but returned vectors of dim {arr.shape[1]} "
            f"({where})"
        )
    return arr


def _auto_factory(n: int) -> str:
    """``IVF<nlist>,Flat`` with nlist ~ 4 sqrt(n), a power of two, and >= 39 training vectors per list.

    faiss wiki, "Guidelines to choose an index": nlist between 4 sqrt(n) and 16 sqrt(n), 39 x nlist training points.
    """
    nlist = max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39))
    return f"IVF{2 ** int(math.log2(nlist))},Flat"


def _new_index(backend: str, dim: int, factory: str | None, n: int) -> AnyIndex:
    if backend == "flat":
        if factory is not None:
            raise ValueError(f"factory={factory!r} applies to backend='faiss' only; the flat index is exact")
        return FlatIndex(dim)
    if backend == "faiss":
        return FaissIndex(dim, factory or _auto_factory(n))
    raise ValueError(f"unknown backend {backend!r}; expected one of {sorted(VECTOR_FILES)}")


def _backend_name(index: AnyIndex) -> str:
    return "flat" if isinstance(index, FlatIndex) else "faiss"


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Rename the finished directory ``tmp`` to ``path``; an existing ``path`` is restored if that fails."""
    if not path.exists():
        tmp.rename(path)
        return
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    path.rename(old)
    try:
        tmp.rename(path)
    except BaseException:
        old.rename(path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp_dir)`` on a hidden sibling of ``path``, then swap it into place (old content kept on error)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write(tmp)
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_directory(
    target: Path, config: dict[str, Any], ids: list[str], items: Sequence[Item], index: AnyIndex
) -> None:
    write_items(target / ITEMS_FILE, items)
    atomic_write_text(target / IDS_FILE, json.dumps(ids, ensure_ascii=False) + "\n")
    index.save(target / VECTOR_FILES[_backend_name(index)])
    write_json(target / CONFIG_FILE, config)  # last: a directory with lumir.json is complete


def _make_config(index: AnyIndex, embedder_spec: Any, corpus: Corpus, created: str | None = None) -> dict[str, Any]:
    """The content of ``lumir.json`` for ``index`` over ``corpus`` (``created`` kept on rewrites)."""
    now = _now()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backend": _backend_name(index),
        "backend_config": index.config,
        "embedder": embedder_spec,
        "dim": index.dim,
        "count": len(corpus),
        "modalities": dict(sorted(Counter(it.modality.value for it in corpus).items())),
        "created": created or now,
        "updated": now,
        "versions": versions("faiss-cpu"),
    }


class VectorStore:
    """An opened index directory: the index, its candidate ids, its corpus and the embedder that built it.

    Get one from :func:`build_index` or :func:`open_index` rather than constructing it directly.

    Args:
        path: the index directory.
        config: the content of its ``lumir.json``.
        index: the loaded vector index.
        ids: candidate ids in position order.
        embedder: an embedder to use instead of rebuilding the stored spec (must have the index's dim).
        corpus: the corpus when already in memory (else read lazily from ``items.jsonl``).
    """

    def __init__(
        self,
        path: str | Path,
        config: dict[str, Any],
        index: AnyIndex,
        ids: list[str],
        *,
        embedder: Embedder | None = None,
        corpus: Corpus | None = None,
    ) -> None:
        self.path = Path(path)
        self.config = config
        self.index = index
        self.ids = list(ids)
        self._id_array = np.array([*self.ids, ""], dtype=object)  # position -1 -> "" (empty slot)
        self._corpus = corpus
        self._embedder: Embedder | None = None
        if embedder is not None:
            self._check_dim(embedder.dim, f"embedder {embedder.spec()}")
            self._embedder = embedder

    @property
    def dim(self) -> int:
        """Vector dimension of the index."""
        return int(self.config["dim"])

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        backend = self.config["backend"]
        return f"VectorStore({str(self.path)!r}, backend={backend!r}, count={len(self)}, dim={self.dim})"

    def _check_dim(self, dim: int, what: str) -> None:
        if dim != self.dim:
            raise DimensionMismatchError(
                f"{what} has dim {dim} but index {self.path} (built with embedder {self.config['embedder']}) "
                f"has dim {self.dim}; use the embedder the index was built with or rebuild the index"
            )

    @property
    def corpus(self) -> Corpus:
        """The indexed items, read from ``items.jsonl`` on first use."""
        if self._corpus is None:
            corpus = Corpus(read_items(self.path / ITEMS_FILE))
            if corpus.ids != self.ids:
                raise IncompatibleIndexError(
                    f"{self.path / ITEMS_FILE} holds {len(corpus)} items whose ids differ from {IDS_FILE} "
                    f"({len(self.ids)} ids); the directory was edited by hand; rebuild it with build_index"
                )
            self._corpus = corpus
        return self._corpus

    @property
    def embedder(self) -> Embedder:
        """The embedder recorded in ``lumir.json``, rebuilt with :func:`lumir.embed.load_embedder` on first use."""
        if self._embedder is None:
            from lumir.embed import load_embedder

            embedder = load_embedder(self.config["embedder"])
            self._check_dim(embedder.dim, f"embedder {embedder.spec()} (rebuilt from {self.path / CONFIG_FILE})")
            self._embedder = embedder
        return self._embedder

    def modality_mask(self, modality: Modality | str) -> np.ndarray | None:
        """Boolean mask of the positions holding ``modality`` items (None when every position does)."""
        m = Modality.parse(modality)
        n_match = int(self.config["modalities"].get(m.value, 0))
        if n_match == len(self):
            return None
        if n_match == 0:
            return np.zeros(len(self), dtype=bool)
        return self.corpus.modality_mask(m)

    def search(
        self, queries: Sequence[Query], k: int, *, modality: Modality | str | None = None, batch_size: int = 32
    ) -> Rankings:
        """Embed queries with the index's own embedder (role QUERY) and return the top-k candidates.

        Args:
            queries: the queries (their ids become the rankings' query ids).
            k: number of candidates per query.
            modality: keep only candidates of this modality (e.g. ``"image"``).
            batch_size: embedding batch size.
        """
        vecs = _vectors(self.embedder, queries, Role.QUERY, batch_size, f"queries of index {self.path}")
        mask = None if modality is None else self.modality_mask(modality)
        return self.search_vectors(vecs, k, mask=mask, query_ids=[q.id for q in queries])

    def search_vectors(
        self,
        vectors: torch.Tensor | np.ndarray,
        k: int,
        *,
        mask: np.ndarray | None = None,
        query_ids: Sequence[str] | None = None,
    ) -> Rankings:
        """Top-k candidates for already-embedded queries.

        Args:
            vectors: (n_queries, dim) query vectors.
            k: number of candidates per query.
            mask: optional boolean (len(self),) array; False positions are never returned.
            query_ids: ids of the rankings' rows (default ``"0"``, ``"1"``, ...).
        """
        shape = tuple(vectors.shape)
        if len(shape) != 2:
            raise ValueError(f"query vectors must be a 2-D (n, dim) matrix, got shape {shape}")
        self._check_dim(int(shape[1]), "query vectors")
        qids = [str(i) for i in range(shape[0])] if query_ids is None else list(query_ids)
        scores, positions = self.index.search(vectors, k, mask=mask)
        return Rankings(qids, self._id_array[positions], scores)

    def add(self, items: Sequence[Item], *, batch_size: int = 64) -> None:
        """Embed new candidates (role CANDIDATE), append them and rewrite the directory atomically.

        Raises:
            ValueError: an id is already in the index or repeated in ``items`` (the message names them).
            DimensionMismatchError: the embedder's vectors do not have the index's dim.
        """
        items = list(items)
        counts = Counter(it.id for it in items)
        known = set(self.ids)
        dups = sorted(i for i, c in counts.items() if c > 1 or i in known)
        if dups:
            raise ValueError(f"{len(dups)} id(s) already in index {self.path} or repeated: {dups[:10]}")
        _check_storable(items)
        if not items:
            return
        vecs = _vectors(self.embedder, items, Role.CANDIDATE, batch_size, f"new items for index {self.path}")
        self._check_dim(vecs.shape[1], "new item vectors")
        index = self.index.copy()
        index.add(vecs)
        corpus = self.corpus.extend(items)
        ids = [*self.ids, *(it.id for it in items)]
        config = _make_config(index, self.config["embedder"], corpus, created=self.config.get("created"))
        _write_atomically(self.path, lambda tmp: _write_directory(tmp, config, ids, corpus, index))
        self.index, self.ids, self.config, self._corpus = index, ids, config, corpus
        self._id_array = np.array([*ids, ""], dtype=object)

    def describe(self) -> dict[str, Any]:
        """A summary of the directory for ``lumir info``: format, backend, embedder, counts, stamps, file sizes."""
        files = {p.name: p.stat().st_size for p in sorted(self.path.iterdir()) if p.is_file()}
        keys = ("format_version", "backend", "backend_config", "embedder", "dim", "count", "modalities", "created")
        return {
            "path": str(self.path),
            **{key: self.config.get(key) for key in keys},
            "updated": self.config.get("updated"),
            "written_by": self.config.get("versions", {}),
            "files": files,
            "size_bytes": sum(files.values()),
        }


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
    with tqdm(total=len(corpus), initial=done, unit="item", desc=desc, disable=not show_progress) as bar:
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
        show_progress: show a tqdm progress bar.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False, or it is a non-empty non-index directory.
        IncompatibleIndexError: ``<path>.partial/`` holds a build for another corpus / embedder / shard size.

    Example:
        >>> import tempfile
        >>> from lumir.testing.fakes import HashEmbedder
        >>> corpus = Corpus([Item("a", text="red"), Item("b", text="blue")])
        >>> store = build_index(corpus, HashEmbedder(8), tempfile.mkdtemp() + "/idx", show_progress=False)
        >>> store.search([Query("q", text="blue")], k=1).for_query("q")[0].id
        'b'
    """
    path = Path(path)
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it or choose another path")
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


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        hint = f"; an interrupted build left {partial}: run build_index again to resume it" if partial.is_dir() else ""
        raise FileNotFoundError(f"no index directory at {path}{hint}; create one with lumir.index.build_index")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not an index directory")
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a lumir index directory: it has no {CONFIG_FILE}")
    config = read_json(path / CONFIG_FILE)
    if config.get("format") != FORMAT:
        raise IncompatibleIndexError(
            f"{path / CONFIG_FILE} is not a lumir index (format={config.get('format')!r}, expected {FORMAT!r})"
        )
    version = config.get("format_version")
    writer = config.get("versions", {}).get("lumir", "an unknown version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise IncompatibleIndexError(
            f"{path} has index format_version {version!r}, written by lumir {writer}; this lumir "
            f"({lumir_version()}) reads format_version 1 to {FORMAT_VERSION}. Upgrade lumir or rebuild the index."
        )
    if config.get("backend") not in VECTOR_FILES:
        raise IncompatibleIndexError(
            f"{path / CONFIG_FILE}: unknown backend {config.get('backend')!r} (written by lumir {writer}); "
            f"this lumir supports {sorted(VECTOR_FILES)}"
        )
    return config


def _load_index(path: Path, config: dict[str, Any]) -> AnyIndex:
    file = path / VECTOR_FILES[config["backend"]]
    bc = dict(config.get("backend_config") or {})
    if config["backend"] == "flat":
        return FlatIndex.load(file, **{k: int(bc[k]) for k in ("chunk_size", "query_batch_size") if k in bc})
    kwargs = {k: int(bc[k]) for k in ("nprobe", "ef_search") if k in bc}
    return FaissIndex.load(file, factory=str(bc.get("factory", "unknown")), **kwargs)


def open_index(path: str | Path, embedder: Embedder | None = None) -> VectorStore:
    """Open an index directory written by :func:`build_index`.

    Args:
        path: the index directory.
        embedder: use this embedder for queries instead of rebuilding the spec in ``lumir.json``.

    Raises:
        FileNotFoundError: no directory, or no ``lumir.json`` in it.
        IncompatibleIndexError: not a lumir index, a newer format_version, missing files, or counts that disagree.
        DimensionMismatchError: ``embedder`` does not produce vectors of the index's dim.
    """
    path = Path(path)
    config = _read_config(path)
    needed = [CONFIG_FILE, IDS_FILE, ITEMS_FILE, VECTOR_FILES[config["backend"]]]
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        raise IncompatibleIndexError(
            f"index directory {path} is incomplete: missing {missing}; rebuild it with build_index"
        )
    ids = json.loads((path / IDS_FILE).read_text(encoding="utf-8"))
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise IncompatibleIndexError(f"{path / IDS_FILE} must be a JSON list of candidate id strings")
    index = _load_index(path, config)
    if len(index) != len(ids) or config.get("count") != len(ids):
        raise IncompatibleIndexError(
            f"index directory {path} is inconsistent: {len(index)} vectors in {VECTOR_FILES[config['backend']]}, "
            f"{len(ids)} ids in {IDS_FILE}, count {config.get('count')} in {CONFIG_FILE}; rebuild it with build_index"
        )
    if index.dim != config.get("dim"):
        raise IncompatibleIndexError(
            f"index directory {path}: vectors have dim {index.dim} but {CONFIG_FILE} says dim {config.get('dim')}"
        )
    return VectorStore(path, config, index, ids, embedder=embedder)
