"""VectorStore: a self-describing index directory that reloads without code and embeds its own queries.

Layout (documented in ``docs/formats.md``, "Index directory")::

    my-index/
      lumir.json     format, format_version, backend (+ config), embedder spec, dim, count, modalities, stamps
      ids.json       candidate ids in position order
      items.jsonl    the corpus items (lumir jsonl)
      vectors.npy    (backend "flat")  or  faiss.index  (backend "faiss")

The idea follows lancedb's table metadata: because ``lumir.json`` records the embedder spec, an opened index
can embed its own queries. :func:`lumir.index.build.build_index` writes one, resumably and atomically.
"""

from __future__ import annotations

import json
import logging
import math
import re
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

from lumir.collections import Corpus
from lumir.config import atomic_write_text, current_umask, lumir_version, read_json, versions, write_json
from lumir.errors import DimensionMismatchError, IncompatibleIndexError
from lumir.index.faiss_backend import FaissIndex
from lumir.index.flat import FlatIndex
from lumir.io.jsonl import read_items, write_items
from lumir.protocols import Embedder
from lumir.types import Item, Role

__all__ = ["FORMAT_VERSION", "VectorStore", "open_index"]

logger = logging.getLogger(__name__)

FORMAT = "lumir-index"
FORMAT_VERSION = 1
"""The newest ``format_version`` of ``lumir.json`` this lumir writes and reads."""

CONFIG_FILE, IDS_FILE, ITEMS_FILE = "lumir.json", "ids.json", "items.jsonl"
VECTOR_FILES = {"flat": "vectors.npy", "faiss": "faiss.index"}
INFO_KEYS = (
    "format",
    "format_version",
    "backend",
    "backend_config",
    "embedder",
    "dim",
    "count",
    "modalities",
    "created",
    "updated",
    "versions",
)
"""The ``lumir.json`` keys :meth:`VectorStore.describe` (``lumir info``) reports, under the same names."""

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
    """An empty index of ``backend`` through :data:`lumir.registry.INDEXES` (faiss: ``factory`` or a default)."""
    from lumir.registry import INDEXES

    if backend not in VECTOR_FILES:
        raise ValueError(f"unknown backend {backend!r}; expected one of {sorted(VECTOR_FILES)}")
    if backend == "flat":
        if factory is not None:
            raise ValueError(f"factory={factory!r} applies to backend='faiss' only; the flat index is exact")
        index: AnyIndex = INDEXES.build({"type": "flat", "dim": dim})
        return index
    chosen = factory or _auto_factory(n)
    check_factory_fits(chosen, n)
    index = INDEXES.build({"type": "faiss", "dim": dim, "factory": chosen})
    return index


def check_factory_fits(factory: str, n: int) -> None:
    """Refuse, before any embedding, an IVF factory with more inverted lists than the corpus has vectors.

    Raises:
        ValueError: ``IVF<nlist>`` with nlist > n, naming a size that fits.
    """
    match = re.search(r"IVF(\d+)", factory)
    if match is not None and n > 0 and int(match.group(1)) > n:
        fits = _auto_factory(n)
        raise ValueError(
            f"faiss factory {factory!r} has {match.group(1)} inverted lists but the corpus has only {n} items "
            f"(each list needs training vectors); use a smaller IVF such as {fits!r}, or the exact flat backend"
        )


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
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp creates 0700
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
        """A summary of the directory for ``lumir info``: format, backend, embedder, counts, stamps, file sizes.

        Every file is read, so a damaged directory raises here instead of being reported healthy.

        Raises:
            DataFormatError: ``items.jsonl`` is truncated or malformed (naming the line).
            IncompatibleIndexError: its ids differ from ``ids.json``.
        """
        _ = self.corpus  # parses items.jsonl and checks it against ids.json
        files = {p.name: p.stat().st_size for p in sorted(self.path.iterdir()) if p.is_file()}
        return {
            "path": str(self.path),
            **{key: self.config.get(key) for key in INFO_KEYS},
            "files": files,
            "size_bytes": sum(files.values()),
        }


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
    """The saved vectors, reopened by the index class the registry names for ``backend``."""
    from lumir.registry import INDEXES

    file = path / VECTOR_FILES[config["backend"]]
    bc = dict(config.get("backend_config") or {})
    if config["backend"] == "flat":
        options: dict[str, Any] = {k: int(bc[k]) for k in ("chunk_size", "query_batch_size") if k in bc}
    else:
        options = {k: int(bc[k]) for k in ("nprobe", "ef_search") if k in bc}
        options["factory"] = str(bc.get("factory", "unknown"))
    index_class: Any = INDEXES.load(config["backend"])
    index: AnyIndex = index_class.load(file, **options)
    return index


def _read_ids(path: Path) -> list[str]:
    file = path / IDS_FILE
    try:
        ids = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IncompatibleIndexError(
            f"{file} is truncated or not JSON ({err}); the index directory was damaged: rebuild it"
        ) from err
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise IncompatibleIndexError(f"{file} must be a JSON list of candidate id strings")
    return ids


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
    ids = _read_ids(path)
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
