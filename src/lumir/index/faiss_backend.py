"""FaissIndex: the scalable approximate backend (IVF, HNSW, PQ, ...) behind lumir's ``Index`` protocol.

Requires the ``faiss`` extra (``pip install 'lumir[faiss]'``). Any faiss ``index_factory`` string works
(``"IVF1024,Flat"``, ``"HNSW32"``, ``"IVF256,PQ16"``, ``"OPQ16,IVF256,PQ16"``); indexes that need training are
trained on the vectors of the first :meth:`FaissIndex.add`. Candidate masks become an ``IDSelectorBitmap`` passed
through faiss search parameters, so filtering happens inside the search, not after it (faiss wiki, "Setting
search parameters for one query" / ``SearchParameters.sel``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lumir._deps import require
from lumir.config import atomic_path
from lumir.errors import with_cli_message
from lumir.index.flat import as_float32_matrix, check_mask, empty_results

__all__ = ["FaissIndex"]

logger = logging.getLogger(__name__)

METRICS = ("ip", "l2")
DEFAULT_NPROBE = 32
DEFAULT_EF_SEARCH = 128
_TRAIN_POINTS = re.compile(
    r"Number of training points \((\d+)\) should be at least as large as number of clusters \((\d+)\)"
)


def _faiss() -> Any:
    return require("faiss", extra="faiss", package="faiss-cpu")


class FaissIndex:
    """A faiss index built from a factory string, with lumir's ``(scores, positions)`` search contract.

    Args:
        dim: vector dimension.
        factory: a faiss ``index_factory`` string.
        metric: ``"ip"`` (inner product; scores are similarities) or ``"l2"`` (scores are *negated* squared
            distances, so higher is better as everywhere in lumir).
        nprobe: inverted lists visited per query for IVF indexes (clamped to nlist); recall/speed knob.
        ef_search: candidate-list size for HNSW indexes (at least ``k`` is used); recall/speed knob.

    Example:
        >>> index = FaissIndex(8, "HNSW8")
        >>> index.add(np.eye(8, dtype=np.float32))
        >>> index.search(np.eye(8, dtype=np.float32)[:1], k=1)[1].tolist()
        [[0]]
    """

    def __init__(
        self,
        dim: int,
        factory: str = "IVF1024,Flat",
        *,
        metric: str = "ip",
        nprobe: int = DEFAULT_NPROBE,
        ef_search: int = DEFAULT_EF_SEARCH,
    ) -> None:
        faiss = _faiss()
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        metric_type = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        try:
            index = faiss.index_factory(dim, factory, metric_type)
        except RuntimeError as err:
            raise ValueError(
                f"invalid faiss factory string {factory!r} (e.g. 'IVF1024,Flat', 'HNSW32', 'IVF256,PQ16'): "
                f"{str(err).splitlines()[-1]}"
            ) from err
        self._init(index, factory, nprobe, ef_search)

    def _init(self, index: Any, factory: str, nprobe: int, ef_search: int) -> None:
        faiss = _faiss()
        if nprobe <= 0 or ef_search <= 0:
            raise ValueError(f"nprobe and ef_search must be positive, got {nprobe}, {ef_search}")
        self._index = index
        self.dim = int(index.d)
        self.factory = factory
        self.metric = "ip" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
        self.nprobe = nprobe
        self.ef_search = ef_search
        self._ivf = faiss.try_extract_index_ivf(index)
        self._hnsw = faiss.downcast_index(index) if isinstance(faiss.downcast_index(index), faiss.IndexHNSW) else None

    @property
    def faiss_index(self) -> Any:
        """The wrapped ``faiss.Index`` (for tuning beyond what lumir exposes)."""
        return self._index

    @property
    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings (what ``lumir.json`` records as ``backend_config``)."""
        return {"factory": self.factory, "metric": self.metric, "nprobe": self.nprobe, "ef_search": self.ef_search}

    def spec(self) -> dict[str, Any]:
        """``{"type": "faiss", "dim": ..., **config}``: :func:`lumir.registry.build` makes an empty, untrained twin."""
        return {"type": "faiss", "dim": self.dim, **self.config}

    @property
    def is_trained(self) -> bool:
        """Whether the index is trained (untrained indexes train on the first :meth:`add`)."""
        return bool(self._index.is_trained)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        return f"FaissIndex(dim={self.dim}, factory={self.factory!r}, metric={self.metric!r}, ntotal={len(self)})"

    def _numpy(self, values: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
        t = as_float32_matrix(values, self.dim, what=what)
        return np.ascontiguousarray(t.numpy())

    def train(self, vectors: torch.Tensor | np.ndarray) -> None:
        """Train the index (IVF centroids, PQ codebooks) on ``vectors``; :meth:`add` calls this when needed.

        Raises:
            ValueError: fewer training vectors than the factory needs; the message says how many.
        """
        x = self._numpy(vectors, "training vectors of FaissIndex")
        nlist = int(self._ivf.nlist) if self._ivf is not None else 0
        if x.shape[0] < nlist:
            raise self._too_few_error(x.shape[0], nlist)
        if nlist and x.shape[0] < 39 * nlist:
            logger.warning(
                "training %s on %d vectors; faiss recommends at least 39 x nlist = %d",
                self.factory,
                x.shape[0],
                39 * nlist,
            )
        try:
            self._index.train(x)
        except RuntimeError as err:
            match = _TRAIN_POINTS.search(str(err))
            if match is None:
                raise
            raise self._too_few_error(x.shape[0], int(match.group(2))) from err

    def _too_few_error(self, got: int, needed: int) -> ValueError:
        if self._ivf is not None and needed == int(self._ivf.nlist):
            hint = f"a smaller nlist (e.g. IVF{max(1, got // 39)}, which faiss recommends for {got} vectors)"
        else:  # a codebook (PQ: 2**nbits centroids per sub-vector)
            hint = "a smaller codebook (e.g. PQ<m>x4, which needs 16 vectors)"
        head = f"faiss index {self.factory!r} needs at least {needed} training vectors but got {got}"
        return with_cli_message(
            ValueError(f"{head}; add more vectors in the first add() call, use {hint}, or use the exact FlatIndex"),
            f"{head}; use {hint} in --factory, or the exact index (--backend flat)",
        )

    def add(self, vectors: torch.Tensor | np.ndarray) -> None:
        """Append vectors (positions continue from ``len(self)``); trains on them first if the index is untrained."""
        x = self._numpy(vectors, "vectors added to FaissIndex")
        if x.shape[0] == 0:
            return
        if not self._index.is_trained:
            self.train(x)
        self._index.add(x)

    def copy(self) -> FaissIndex:
        """An independent deep copy (adding to it leaves this index unchanged)."""
        other = FaissIndex.__new__(FaissIndex)
        other._init(_faiss().clone_index(self._index), self.factory, self.nprobe, self.ef_search)
        return other

    def _params(self, k: int, selector: Any) -> Any:
        faiss = _faiss()
        if self._ivf is not None:
            return faiss.SearchParametersIVF(sel=selector, nprobe=min(self.nprobe, int(self._ivf.nlist)))
        if self._hnsw is not None:
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.ef_search, k))
        return faiss.SearchParameters(sel=selector)

    def search(
        self, queries: torch.Tensor | np.ndarray, k: int, *, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k.

        Args:
            queries: (n_queries, dim) vectors.
            k: number of results per query.
            mask: optional boolean (ntotal,) array; positions where it is False are never returned.

        Returns:
            ``(scores, positions)`` of shape (n_queries, k), best first; empty slots hold ``-inf`` / ``-1``. A very
            selective mask can leave slots empty even when k positions are allowed: IVF only visits ``nprobe``
            lists and HNSW only walks the graph around the query (raise ``nprobe`` / ``ef_search``).
        """
        faiss = _faiss()
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        q = self._numpy(queries, "queries of FaissIndex")
        keep = check_mask(mask, len(self))
        if q.shape[0] == 0 or len(self) == 0 or (keep is not None and not keep.any()):
            return empty_results(q.shape[0], k)
        selector, bitmap = None, None
        if keep is not None:
            bitmap = np.packbits(keep, bitorder="little")  # referenced by the selector: must outlive the search
            selector = faiss.IDSelectorBitmap(keep.shape[0], faiss.swig_ptr(bitmap))
        dist, pos = self._index.search(q, k, params=self._params(k, selector))
        scores = np.asarray(dist, dtype=np.float32)
        if self.metric == "l2":
            scores = -scores
        positions = np.asarray(pos, dtype=np.int64)
        scores[positions < 0] = -np.inf
        return scores, positions

    def save(self, path: str | Path) -> None:
        """Write the index with ``faiss.write_index`` (atomically: a reader never sees a torn file)."""
        with atomic_path(path) as tmp:
            _faiss().write_index(self._index, str(tmp))

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        factory: str = "unknown",
        metric: str | None = None,
        nprobe: int = DEFAULT_NPROBE,
        ef_search: int = DEFAULT_EF_SEARCH,
    ) -> FaissIndex:
        """Read an index written by :meth:`save` (``factory`` is descriptive; the file holds the structure).

        Raises:
            FileNotFoundError: no such file.
            IncompatibleIndexError: the file is not a faiss index (truncated or another file), or its metric is not
                ``metric``; the message names the file.
        """
        from lumir.errors import IncompatibleIndexError

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no faiss index file at {path}")
        try:
            raw = _faiss().read_index(str(path))
        except RuntimeError as err:
            raise IncompatibleIndexError(
                f"{path} is not a readable faiss index (truncated or corrupt: {str(err).splitlines()[-1][:200]}); "
                "rebuild the index"
            ) from err
        index = cls.__new__(cls)
        index._init(raw, factory, nprobe, ef_search)
        if metric is not None and metric != index.metric:
            raise IncompatibleIndexError(f"{path} holds a {index.metric!r} index, not {metric!r}")
        return index
