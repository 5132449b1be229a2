"""FlatIndex: chunked exact search against the single-matmul oracle, masks, padding, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lumir.errors import DimensionMismatchError
from lumir.index import FlatIndex


def _data(n: int, d: int, nq: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(nq, d, generator=g)


def _oracle(x: torch.Tensor, q: torch.Tensor, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One full matmul + topk; masked-out positions get -inf and position -1 where selected."""
    scores = q @ x.T
    if mask is not None:
        scores[:, ~torch.from_numpy(mask)] = -torch.inf
    s, p = torch.topk(scores, min(k, x.shape[0]), dim=1)
    s_np = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
    p_np = np.full((q.shape[0], k), -1, dtype=np.int64)
    s_np[:, : s.shape[1]] = s.numpy()
    p_np[:, : p.shape[1]] = p.numpy()
    p_np[np.isneginf(s_np)] = -1
    return s_np, p_np


@pytest.mark.parametrize(
    ("n", "chunk_size", "query_batch_size", "k"),
    [(1000, 4096, 1024, 10), (1000, 128, 7, 10), (1001, 1, 3, 5), (300, 64, 16, 500), (257, 256, 1000, 1)],
)
def test_search_equals_single_matmul_topk(n: int, chunk_size: int, query_batch_size: int, k: int) -> None:
    x, q = _data(n, 24, 33)
    index = FlatIndex(24, chunk_size=chunk_size, query_batch_size=query_batch_size)
    index.add(x[: n // 3])
    index.add(x[n // 3 :])
    scores, positions = index.search(q, k)
    want_s, want_p = _oracle(x, q, k)
    assert scores.shape == positions.shape == (33, k)
    assert scores.dtype == np.float32 and positions.dtype == np.int64
    np.testing.assert_array_equal(positions, want_p)  # random gaussians: no ties
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [7, 50, 100_000])
def test_mask_keeps_only_allowed_positions_and_pads(chunk_size: int) -> None:
    x, q = _data(600, 16, 9, seed=1)
    rng = np.random.default_rng(1)
    mask = rng.random(600) < 0.3
    mask[:50] = False  # one whole chunk masked out
    mask[100:150] = True  # one whole chunk kept
    index = FlatIndex(16, chunk_size=chunk_size)
    index.add(x)
    scores, positions = index.search(q, 20, mask=mask)
    want_s, want_p = _oracle(x, q, 20, mask)
    np.testing.assert_array_equal(positions, want_p)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-5)
    assert mask[positions].all()

    sparse = np.zeros(600, dtype=bool)
    sparse[[3, 77, 512]] = True
    scores, positions = index.search(q, 5, mask=sparse)
    assert set(positions[:, :3].ravel()) <= {3, 77, 512}
    assert (positions[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert np.isfinite(scores[:, :3]).all()
    np.testing.assert_allclose(
        np.sort(scores[:, :3], axis=1), np.sort((q @ x[[3, 77, 512]].T).numpy(), axis=1), rtol=1e-5, atol=1e-5
    )

    scores, positions = index.search(q, 4, mask=np.zeros(600, dtype=bool))
    assert (positions == -1).all() and np.isneginf(scores).all()


def test_k_larger_than_index_pads_and_empty_index_returns_empty_slots() -> None:
    index = FlatIndex(3)
    s, p = index.search(np.ones((2, 3), dtype=np.float32), 4)
    assert (p == -1).all() and np.isneginf(s).all() and s.shape == (2, 4)
    index.add(np.eye(3, dtype=np.float32))
    s, p = index.search(np.array([[0.0, 2.0, 1.0]]), 5)
    assert p.tolist() == [[1, 2, 0, -1, -1]]
    assert s[0, :3].tolist() == [2.0, 1.0, 0.0] and np.isneginf(s[0, 3:]).all()


def test_errors_name_the_problem() -> None:
    index = FlatIndex(4)
    index.add(torch.randn(10, 4))
    with pytest.raises(DimensionMismatchError, match="dim 5 but the index has dim 4"):
        index.search(torch.randn(2, 5), 3)
    with pytest.raises(DimensionMismatchError, match="dim 3"):
        index.add(torch.randn(2, 3))
    with pytest.raises(ValueError, match="shape \\(10,\\)"):
        index.search(torch.randn(2, 4), 3, mask=np.ones(9, dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        index.search(torch.randn(2, 4), 3, mask=np.ones(10, dtype=np.int64))
    with pytest.raises(ValueError, match="k must be positive"):
        index.search(torch.randn(2, 4), 0)
    with pytest.raises(ValueError, match="2-D"):
        index.search(torch.randn(4), 3)


def test_add_copies_input_and_copy_is_independent() -> None:
    x = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    q = x[:2].copy()
    index = FlatIndex(8)
    index.add(x)
    before_s, before_p = index.search(q, 3)
    x[:] = 0.0  # the caller reuses its buffer
    after_s, after_p = index.search(q, 3)
    np.testing.assert_array_equal(after_p, before_p)
    np.testing.assert_array_equal(after_s, before_s)
    clone = index.copy()
    clone.add(10 * np.ones((5, 8), dtype=np.float32))
    assert len(clone) == 25 and len(index) == 20
    assert index.vectors.shape == (20, 8)
    assert index.search(np.ones((1, 8)), 1)[1][0, 0] < 20
    assert clone.search(np.ones((1, 8)), 1)[1][0, 0] >= 20


def test_save_load_round_trip(tmp_path: Path) -> None:
    x, q = _data(500, 12, 6)
    index = FlatIndex(12, chunk_size=64)
    index.add(x)
    index.save(tmp_path / "vectors.npy")
    loaded = FlatIndex.load(tmp_path / "vectors.npy", chunk_size=64)
    assert len(loaded) == 500 and loaded.dim == 12
    for a, b in zip(index.search(q, 7), loaded.search(q, 7), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["vectors.npy"]  # no temp file left behind
    np.save(tmp_path / "bad.npy", np.arange(6))
    with pytest.raises(ValueError, match="2-D float32"):
        FlatIndex.load(tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError):
        FlatIndex.load(tmp_path / "missing.npy")


def test_read_only_arrays_are_accepted_without_warnings(recwarn: pytest.WarningsRecorder) -> None:
    x = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    x.flags.writeable = False
    index = FlatIndex(6)
    index.add(x)
    _, positions = index.search(x[:3], 1)
    assert len(recwarn) == 0
    np.testing.assert_array_equal(positions[:, 0], np.argmax(x[:3] @ x.T, axis=1))


def test_a_truncated_vectors_file_is_an_error_naming_it(tmp_path: Path) -> None:
    from lumir.errors import IncompatibleIndexError

    index = FlatIndex(4)
    index.add(np.eye(4, dtype=np.float32))
    index.save(tmp_path / "vectors.npy")
    data = (tmp_path / "vectors.npy").read_bytes()
    for cut in (len(data) - 5, 20):  # data cut short; header cut short
        (tmp_path / "vectors.npy").write_bytes(data[:cut])
        with pytest.raises(IncompatibleIndexError, match=r"vectors\.npy is truncated or not a \.npy array"):
            FlatIndex.load(tmp_path / "vectors.npy")
