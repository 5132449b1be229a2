"""FlatIndex: exact inner-product top-k by chunked matrix multiplication, lumir's embedded default index.

The search follows faiss's ``IndexFlatIP`` contract (``(scores, positions)``, position ``-1`` and score ``-inf`` in
empty slots) but runs on torch: queries are scored in batches of ``query_batch_size`` rows against corpus chunks,
each chunk's top-k is kept and the per-chunk winners are merged with a running top-k. Memory therefore stays
bounded by one score buffer of ``query_batch_size x chunk_size`` floats (32 MiB by default) whatever the corpus
size; smaller query batches get proportionally longer chunks, so one query scans up to 8M rows per matmul. On CPU
the chunked scan is also faster than one large matmul (the score block stays in cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lumir.config import atomic_path
from lumir.errors import DimensionMismatchError, IncompatibleIndexError

__all__ = ["FlatIndex", "as_float32_matrix", "check_mask", "empty_results", "read_npy", "save_npy"]

DEFAULT_CHUNK_SIZE = 8192
"""Corpus rows scored per block (tuned with ``benchmarks/bench_index.py``: 8192 x 1024 queries = 32 MiB)."""

DEFAULT_QUERY_BATCH_SIZE = 1024
_MERGE_EVERY = 16  # per-chunk top-k blocks collected before they are merged into one


def as_float32_matrix(values: torch.Tensor | np.ndarray, dim: int, *, what: str) -> torch.Tensor:
    """Coerce vectors to a 2-D float32 CPU tensor with ``dim`` columns (no copy when already so).

    Args:
        values: a (n, dim) tensor or array.
        dim: the expected number of columns.
        what: a name for messages (e.g. ``"queries of FlatIndex"``).

    Raises:
        ValueError: the input is not 2-D.
        DimensionMismatchError: the number of columns differs from ``dim``.
    """
    if isinstance(values, torch.Tensor):
        t = values
    else:
        arr = np.asarray(values)
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # torch wants writable memory
    if t.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (n, dim) matrix, got shape {tuple(t.shape)}")
    if t.shape[1] != dim:
        raise DimensionMismatchError(f"{what} have dim {t.shape[1]} but the index has dim {dim}")
    return t.detach().to(device="cpu", dtype=torch.float32)


def check_mask(mask: np.ndarray | None, ntotal: int) -> np.ndarray | None:
    """Validate a candidate mask: a boolean vector with one entry per indexed position (True = keep).

    Raises:
        ValueError: wrong dtype or length.
    """
    if mask is None:
        return None
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise ValueError(f"mask must be a boolean array (True = keep the position), got dtype {arr.dtype}")
    if arr.shape != (ntotal,):
        raise ValueError(f"mask must have shape ({ntotal},) (one entry per indexed vector), got {arr.shape}")
    return arr


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` in ``.npy`` format atomically (a temporary sibling renamed into place)."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.save(fh, array, allow_pickle=False)


def read_npy(path: str | Path) -> np.ndarray:
    """Read a ``.npy`` array, turning a truncated or foreign file into an error that names it.

    Raises:
        IncompatibleIndexError: the file is truncated or not a ``.npy`` array.
    """
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise IncompatibleIndexError(
            f"{path} is truncated or not a .npy array ({err}); it was damaged after it was written: rebuild it"
        ) from err


def empty_results(n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, positions)`` of shape (n_queries, k) filled with ``-inf`` / ``-1``."""
    return (
        np.full((n_queries, k), -np.inf, dtype=np.float32),
        np.full((n_queries, k), -1, dtype=np.int64),
    )


def _merge(scores: list[torch.Tensor], positions: list[torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over per-chunk top-k blocks laid side by side; (nq, k') with k' <= k."""
    if len(scores) == 1:
        return scores[0], positions[0]
    s_all, p_all = torch.cat(scores, dim=1), torch.cat(positions, dim=1)
    s, j = torch.topk(s_all, min(k, s_all.shape[1]), dim=1)
    return s, torch.gather(p_all, 1, j)


def _pad(scores: torch.Tensor, positions: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad (n, k') results to width k with -inf / -1 and convert to numpy."""
    out_s, out_p = empty_results(scores.shape[0], k)
    width = scores.shape[1]
    out_s[:, :width] = scores.numpy()
    out_p[:, :width] = positions.numpy()
    return out_s, out_p


class FlatIndex:
    """Exact inner-product index over float32 vectors held in memory (torch, CPU).

    Args:
        dim: vector dimension.
        chunk_size: corpus rows scored per block for a full batch of ``query_batch_size`` queries; a batch of
            ``m`` queries gets ``chunk_size * query_batch_size // m`` rows, so the score buffer never holds more
            than ``chunk_size * query_batch_size`` floats.
        query_batch_size: queries scored per block.

    Example:
        >>> index = FlatIndex(2)
        >>> index.add(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
        >>> scores, positions = index.search(torch.tensor([[0.0, 1.0]]), k=2)
        >>> positions.tolist()
        [[1, 2]]
        >>> index.search(torch.tensor([[0.0, 1.0]]), k=2, mask=np.array([True, False, False]))[1].tolist()
        [[0, -1]]
    """

    def __init__(
        self, dim: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE, query_batch_size: int = DEFAULT_QUERY_BATCH_SIZE
    ) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if chunk_size <= 0 or query_batch_size <= 0:
            raise ValueError(f"chunk_size and query_batch_size must be positive, got {chunk_size}, {query_batch_size}")
        self.dim = dim
        self.chunk_size = chunk_size
        self.query_batch_size = query_batch_size
        self._parts: list[torch.Tensor] = []  # appended blocks, concatenated lazily on first read
        self._ntotal = 0

    def __len__(self) -> int:
        return self._ntotal

    def __repr__(self) -> str:
        return f"FlatIndex(dim={self.dim}, ntotal={self._ntotal}, chunk_size={self.chunk_size})"

    @property
    def config(self) -> dict[str, int]:
        """JSON-serialisable settings (what ``lumir.json`` records as ``backend_config``)."""
        return {"chunk_size": self.chunk_size, "query_batch_size": self.query_batch_size}

    def spec(self) -> dict[str, Any]:
        """``{"type": "flat", "dim": ..., **config}``: :func:`lumir.registry.build` makes an empty twin."""
        return {"type": "flat", "dim": self.dim, **self.config}

    @property
    def vectors(self) -> torch.Tensor:
        """All indexed vectors as one (ntotal, dim) float32 tensor; treat it as read-only."""
        if len(self._parts) != 1:
            self._parts = [torch.cat(self._parts) if self._parts else torch.empty(0, self.dim)]
        return self._parts[0]

    def add(self, vectors: torch.Tensor | np.ndarray) -> None:
        """Append vectors; they take positions ``len(self) .. len(self) + n - 1``.

        The vectors are copied, so later changes to the caller's array do not leak into the index.
        """
        v = as_float32_matrix(vectors, self.dim, what="vectors added to FlatIndex")
        if v.shape[0] == 0:
            return
        self._parts.append(v.clone().contiguous())
        self._ntotal += v.shape[0]

    def copy(self) -> FlatIndex:
        """A new index with the same vectors; adding to either one leaves the other unchanged (no data copy)."""
        other = FlatIndex(self.dim, chunk_size=self.chunk_size, query_batch_size=self.query_batch_size)
        other._parts = list(self._parts)
        other._ntotal = self._ntotal
        return other

    def search(
        self, queries: torch.Tensor | np.ndarray, k: int, *, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by inner product.

        Args:
            queries: (n_queries, dim) vectors.
            k: number of results per query.
            mask: optional boolean (ntotal,) array; positions where it is False are never returned.

        Returns:
            ``(scores, positions)``: float32 and int64 arrays of shape (n_queries, k), best first; when fewer than
            ``k`` candidates are allowed, the remaining slots hold score ``-inf`` and position ``-1``.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        q = as_float32_matrix(queries, self.dim, what="queries of FlatIndex")
        keep = check_mask(mask, self._ntotal)
        n_valid = self._ntotal if keep is None else int(keep.sum())
        if q.shape[0] == 0 or n_valid == 0:
            return empty_results(q.shape[0], k)
        x = self.vectors
        n_batch = min(self.query_batch_size, q.shape[0])
        rows = max(self.chunk_size, self.chunk_size * self.query_batch_size // n_batch)  # same buffer budget
        if keep is None and self._ntotal <= rows and q.shape[0] <= self.query_batch_size:
            # Fits in one block: exactly the plain matmul + topk.
            s, p = torch.topk(q @ x.T, min(k, self._ntotal), dim=1)
            return _pad(s, p, k)
        keep_t = None if keep is None else torch.from_numpy(keep)
        out_s, out_p = empty_results(q.shape[0], k)
        buf = torch.empty(n_batch, min(rows, self._ntotal))
        with torch.inference_mode():
            for qs in range(0, q.shape[0], self.query_batch_size):
                qb = q[qs : qs + self.query_batch_size]
                s, p = self._search_block(qb, x, k, keep_t, buf)
                out_s[qs : qs + qb.shape[0], : s.shape[1]] = s.numpy()
                out_p[qs : qs + qb.shape[0], : p.shape[1]] = p.numpy()
        return out_s, out_p

    def _search_block(
        self, qb: torch.Tensor, x: torch.Tensor, k: int, keep: torch.Tensor | None, buf: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k of one query batch over corpus chunks of ``buf.shape[1]`` rows, merged; (nq, k'), k' <= k."""
        best_s: list[torch.Tensor] = []
        best_p: list[torch.Tensor] = []
        chunk = buf.shape[1]
        for cs in range(0, x.shape[0], chunk):
            xc = x[cs : cs + chunk]
            rows: torch.Tensor | None = None  # chunk-relative positions kept by the mask
            if keep is not None:
                kc = keep[cs : cs + xc.shape[0]]
                n_keep = int(kc.sum())
                if n_keep == 0:
                    continue
                if n_keep < xc.shape[0]:
                    rows = torch.nonzero(kc).squeeze(1)
                    xc = xc.index_select(0, rows)
            block = buf[: qb.shape[0], : xc.shape[0]]
            torch.mm(qb, xc.T, out=block)  # (nq, chunk); reusing the buffer avoids page faults per chunk
            s, p = torch.topk(block, min(k, xc.shape[0]), dim=1)
            best_s.append(s)
            best_p.append((p if rows is None else rows[p]) + cs)
            if len(best_s) > _MERGE_EVERY:  # running merge: at most _MERGE_EVERY + 1 top-k blocks are held
                merged_s, merged_p = _merge(best_s, best_p, k)
                best_s, best_p = [merged_s], [merged_p]
        return _merge(best_s, best_p, k)

    def save(self, path: str | Path) -> None:
        """Write the vectors to ``path`` as a ``.npy`` file (atomically: a reader never sees a torn file)."""
        save_npy(path, self.vectors.numpy())

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        query_batch_size: int = DEFAULT_QUERY_BATCH_SIZE,
    ) -> FlatIndex:
        """Read an index written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            IncompatibleIndexError: the file is truncated, not a ``.npy`` file, or not a 2-D float32 matrix (the
                message names it).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no FlatIndex vectors file at {path}")
        arr = read_npy(path)
        if arr.ndim != 2 or arr.dtype != np.float32:
            raise IncompatibleIndexError(
                f"{path} must hold a 2-D float32 matrix, got shape {arr.shape} dtype {arr.dtype}; rebuild the index"
            )
        index = cls(arr.shape[1], chunk_size=chunk_size, query_batch_size=query_batch_size)
        if arr.shape[0]:
            index._parts = [torch.from_numpy(arr)]
            index._ntotal = arr.shape[0]
        return index
