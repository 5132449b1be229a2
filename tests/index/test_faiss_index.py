"""FaissIndex: recall against the exact FlatIndex on clustered data, masks, training errors, persistence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lumir.errors import DimensionMismatchError
from lumir.index import FaissIndex, FlatIndex

faiss = pytest.importorskip("faiss", reason="FaissIndex needs the faiss extra: pip install 'lumir[faiss]'")


@pytest.fixture(autouse=True)
def _one_faiss_thread() -> Iterator[None]:
    """Small data gains nothing from threads, and spinning OpenMP workers slow faiss down on 2-core CI boxes."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(
    n: int, d: int, n_clusters: int, n_queries: int, *, sigma: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """faiss-style synthetic data: unit-normalised Gaussian blobs around random centres (queries alike)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        x = centres[rng.integers(0, n_clusters, m)] + sigma * rng.standard_normal((m, d)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw(n), draw(n_queries)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


@pytest.fixture(scope="module")
def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, q = clustered(20_000, 64, 20, 200, sigma=1.0)
    exact = FlatIndex(64)
    exact.add(x)
    return x, q, exact.search(q, 10)[1]


def test_ivf_recall_at_10_vs_exact(dataset: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, q, truth = dataset
    index = FaissIndex(64, "IVF256,Flat", nprobe=1)
    index.add(x)
    assert index.is_trained and len(index) == 20_000
    low = recall_at(index.search(q, 10)[1], truth)
    index.nprobe = 16
    high = recall_at(index.search(q, 10)[1], truth)
    assert high >= 0.9, high
    assert low < high  # nprobe really reaches faiss


def test_hnsw_recall_at_10_vs_exact(dataset: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, q, truth = dataset
    index = FaissIndex(64, "HNSW32", ef_search=64)
    index.add(x)
    assert recall_at(index.search(q, 10)[1], truth) >= 0.9


def test_flat_factory_with_mask_equals_flat_index() -> None:
    x, q = clustered(3000, 16, 10, 20, sigma=0.5, seed=1)
    mask = np.random.default_rng(2).random(3000) < 0.1
    exact = FlatIndex(16)
    exact.add(x)
    index = FaissIndex(16, "Flat")
    index.add(x)
    s, p = index.search(q, 10, mask=mask)
    want_s, want_p = exact.search(q, 10, mask=mask)
    np.testing.assert_array_equal(p, want_p)
    np.testing.assert_allclose(s, want_s, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factory", ["IVF32,Flat", "HNSW16", "PCA8,IVF32,Flat"])
def test_mask_is_applied_inside_the_search(factory: str) -> None:
    x, q = clustered(3000, 16, 10, 20, sigma=0.5, seed=3)
    index = FaissIndex(16, factory, nprobe=32, ef_search=64)
    index.add(x)
    mask = np.zeros(3000, dtype=bool)
    mask[::7] = True
    s, p = index.search(q, 10, mask=mask)
    assert (p >= 0).all() and mask[p].all()  # 10 results per query, all allowed (not post-filtered away)
    few = np.zeros(3000, dtype=bool)
    few[[5, 6]] = True
    s, p = index.search(q, 4, mask=few)
    assert set(p[p >= 0].ravel()) <= {5, 6}
    if factory.startswith("IVF"):  # nprobe == nlist: exhaustive, so both allowed positions are found
        assert set(p[:, :2].ravel()) == {5, 6}
    assert ((p == -1) == np.isneginf(s)).all()
    assert (p[:, 2:] == -1).all()
    s, p = index.search(q, 3, mask=np.zeros(3000, dtype=bool))
    assert (p == -1).all() and np.isneginf(s).all()


def test_too_few_training_vectors_says_how_many_are_needed() -> None:
    x, _ = clustered(500, 16, 5, 1, sigma=0.5)
    index = FaissIndex(16, "IVF1024,Flat")
    with pytest.raises(ValueError, match=r"needs at least 1024 training vectors but got 500.*IVF12\b"):
        index.add(x)
    assert not index.is_trained and len(index) == 0
    pq = FaissIndex(16, "IVF4,PQ4")
    with pytest.raises(ValueError, match="needs at least 256 training vectors .* smaller codebook"):
        pq.add(x[:100])


def test_small_pq_trains_on_first_add_and_later_adds_reuse_it() -> None:
    x, q = clustered(2000, 16, 8, 10, sigma=0.5)
    index = FaissIndex(16, "IVF4,PQ4x4", nprobe=4)
    index.add(x[:1500])
    index.add(x[1500:])
    assert len(index) == 2000
    s, p = index.search(q, 5)
    assert (p >= 0).all() and (np.diff(s, axis=1) <= 1e-6).all()


def test_l2_metric_scores_are_negated_squared_distances() -> None:
    x, q = clustered(500, 8, 4, 5, sigma=0.5)
    index = FaissIndex(8, "Flat", metric="l2")
    index.add(x)
    s, p = index.search(q, 3)
    d2 = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(p, np.argsort(d2, axis=1)[:, :3])
    np.testing.assert_allclose(s, -np.sort(d2, axis=1)[:, :3], rtol=1e-4, atol=1e-5)


def test_errors() -> None:
    with pytest.raises(ValueError, match="invalid faiss factory string 'IVFxx'"):
        FaissIndex(8, "IVFxx")
    with pytest.raises(ValueError, match="metric"):
        FaissIndex(8, "Flat", metric="cosine")
    index = FaissIndex(8, "Flat")
    with pytest.raises(DimensionMismatchError, match="dim 9 but the index has dim 8"):
        index.add(np.ones((2, 9), dtype=np.float32))
    s, p = index.search(np.ones((2, 8), dtype=np.float32), 3)  # empty index
    assert (p == -1).all() and np.isneginf(s).all()


def test_save_load_and_copy(tmp_path: Path) -> None:
    x, q = clustered(4000, 16, 10, 30, sigma=0.8)
    index = FaissIndex(16, "IVF64,Flat", nprobe=8)
    index.add(x)
    index.save(tmp_path / "faiss.index")
    loaded = FaissIndex.load(tmp_path / "faiss.index", factory="IVF64,Flat", nprobe=8)
    assert len(loaded) == 4000 and loaded.dim == 16 and loaded.metric == "ip"
    assert loaded.config == index.config
    for a, b in zip(index.search(q, 10), loaded.search(q, 10), strict=True):
        np.testing.assert_array_equal(a, b)
    clone = loaded.copy()
    clone.add(x[:10])
    assert len(clone) == 4010 and len(loaded) == 4000
    with pytest.raises(FileNotFoundError):
        FaissIndex.load(tmp_path / "missing.index")


def test_a_truncated_or_foreign_file_is_an_error_naming_it(tmp_path: Path) -> None:
    from lumir.errors import IncompatibleIndexError

    index = FaissIndex(8, "Flat")
    index.add(np.eye(8, dtype=np.float32))
    path = tmp_path / "faiss.index"
    index.save(path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IncompatibleIndexError, match=r"faiss\.index is not a readable faiss index \(truncated"):
        FaissIndex.load(path)
    path.write_text("hello")
    with pytest.raises(IncompatibleIndexError, match=r"faiss\.index .*rebuild the index"):
        FaissIndex.load(path)
