"""Index benchmarks: FlatIndex vs a plain torch matmul + topk, and FAISS IVF / HNSW vs exact search.

Prints markdown tables (results go in ``benchmarks/results/index.md``). Every measured step runs in a fresh forked
child process so that peak memory can be read per step: the child resets its RSS high-water mark through
``/proc/self/clear_refs`` (Linux) before each step and reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` minus
the RSS at the start of the step ("peak dRSS"), which covers torch, numpy and faiss's C++ allocations alike.
The parent only generates data (no torch/faiss compute), so no OpenMP thread pool crosses a fork.

Usage::

    python benchmarks/bench_index.py                 # full run (~6 min on 2 cores)
    python benchmarks/bench_index.py --quick         # small sizes, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

DATA: dict[str, np.ndarray] = {}  # filled by the parent before forking; children read it copy-on-write


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    p.add_argument("--flat-n", type=int, default=100_000, help="corpus size of the FlatIndex vs torch comparison")
    p.add_argument("--flat-dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=7, help="timed runs of the FlatIndex vs torch comparison (median)")
    p.add_argument("--search-repeats", type=int, default=3, help="timed search runs per ANN / exact row (median)")
    p.add_argument("--ann-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--ann-dim", type=int, default=128)
    p.add_argument("--clusters", type=int, default=1000, help="Gaussian clusters of the synthetic ANN data")
    p.add_argument("--sigma", type=float, default=1.0, help="per-coordinate std of points around their centre")
    p.add_argument(
        "--latent-dim", type=int, default=32, help="intrinsic dimension of the ANN data (0: isotropic in all dims)"
    )
    p.add_argument("--skip-flat", action="store_true", help="skip the FlatIndex vs torch comparison")
    p.add_argument("--ivf", default="IVF1024,Flat", help="faiss IVF factory string ('' to skip)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 32])
    p.add_argument("--hnsw", default="HNSW32", help="faiss HNSW factory string ('' to skip)")
    p.add_argument("--ef-search", type=int, nargs="+", default=[32, 128])
    p.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        help="OMP_WAIT_POLICY for torch and faiss ('keep' leaves the environment alone); spinning OpenMP "
        "workers (ACTIVE) slowed faiss several-fold on a 2-vCPU VM",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.flat_n, args.flat_dim, args.queries, args.repeats = 20_000, 64, 200, 3
        args.ann_sizes, args.ann_dim, args.clusters, args.latent_dim = [20_000], 32, 100, 8
        args.ivf = args.ivf.replace("IVF1024", "IVF128")
    return args


# ----------------------------------------------------------------------------------------------------- helpers
def _reset_peak() -> int:
    """Reset the RSS high-water mark (Linux ``clear_refs``); return the current RSS in KiB."""
    with contextlib.suppress(OSError):  # not Linux / not permitted: the delta then includes earlier peaks
        Path("/proc/self/clear_refs").write_text("5")
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_delta_mib(start_kib: int) -> float:
    return max(0.0, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_kib) / 1024)


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _in_child(fn: Callable[..., Any], *args: Any) -> Any:
    ctx = get_context("fork")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def _latency(index: Any, q: np.ndarray, k: int, n: int = 50) -> float:
    """Median seconds of a one-query search (the interactive case), over ``n`` different queries."""
    index.search(q[:1], k)
    times = []
    for i in range(min(n, q.shape[0])):
        t = time.perf_counter()
        index.search(q[i : i + 1], k)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def clustered(
    n: int, d: int, n_clusters: int, sigma: float, rng: np.random.Generator, latent_dim: int = 0
) -> np.ndarray:
    """Synthetic clustered data (float32, unit-normalised): Gaussian blobs around random centres.

    With ``latent_dim`` > 0 the blobs live in a ``latent_dim``-dimensional space that a fixed random matrix
    (drawn from a generator seeded by the shape, so queries and corpus share it) maps to ``d`` dimensions: data
    of low intrinsic dimension, as real embeddings are. With ``latent_dim`` = 0 the blobs are isotropic in all
    ``d`` dimensions: well-separated clusters, an easier case for IVF and HNSW.
    """
    space = np.random.default_rng([d, latent_dim, n_clusters])  # shared by every call with these settings
    dl = latent_dim or d
    centres = space.standard_normal((n_clusters, dl), dtype=np.float32)
    proj = space.standard_normal((dl, d), dtype=np.float32) if latent_dim else None
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 100_000):  # bounded temporaries
        m = min(100_000, n - s)
        block = centres[rng.integers(0, n_clusters, m)] + sigma * rng.standard_normal((m, dl), dtype=np.float32)
        if proj is not None:
            block = block @ proj
        out[s : s + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


# ---------------------------------------------------------------------------------- part 1: flat vs torch
def flat_vs_torch(k: int, repeats: int) -> dict[str, Any]:
    """Median top-k times of plain torch, FlatIndex (default, single chunk) and FlatIndex with a 50% mask."""
    import torch

    from lumir.index import FlatIndex

    x, q = torch.from_numpy(DATA["flat_x"]), torch.from_numpy(DATA["flat_q"])
    default = FlatIndex(x.shape[1])
    default.add(x)
    single = FlatIndex(x.shape[1], chunk_size=x.shape[0], query_batch_size=q.shape[0])
    single.add(x)
    mask = np.random.default_rng(1).random(x.shape[0]) < 0.5
    n_single = min(20, q.shape[0])
    singles = [q[i : i + 1] for i in range(n_single)]
    batch = f"{q.shape[0]} queries at once"
    one = f"1 query (mean of {n_single} one-query calls)"
    variants: dict[tuple[str, str], Callable[[], Any]] = {
        (batch, "torch.topk(q @ X.T)"): lambda: torch.topk(q @ x.T, k, dim=1),
        (batch, f"FlatIndex (default: {default.chunk_size} rows x {default.query_batch_size} queries per block)"): (
            lambda: default.search(q, k)
        ),
        (batch, "FlatIndex (one chunk: the plain path)"): lambda: single.search(q, k),
        (batch, "FlatIndex (default, 50% mask)"): lambda: default.search(q, k, mask=mask),
        (one, "torch.topk(q @ X.T)"): lambda: [torch.topk(s @ x.T, k, dim=1) for s in singles],
        (one, "FlatIndex (default)"): lambda: [default.search(s, k) for s in singles],
    }
    for fn in variants.values():
        fn()  # warm-up
    times: dict[tuple[str, str], list[float]] = {key: [] for key in variants}
    for _ in range(repeats):  # interleaved so drift hits every variant alike
        for key, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t) / (n_single if key[0] == one else 1))
    out = {key: statistics.median(ts) for key, ts in times.items()}
    ref = default.search(q[:50], k)[1]
    want = torch.topk(q[:50] @ x.T, k, dim=1).indices.numpy()
    return {"times": out, "agree": float((ref == want).mean()), "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------- part 2: faiss vs exact
def exact_run(n: int, k: int, repeats: int) -> dict[str, Any]:
    """Exact FlatIndex: build, search time, memory; also returns the ground truth."""
    from lumir.index import FlatIndex

    x, q = DATA[f"x{n}"], DATA["ann_q"]
    start = _reset_peak()
    t = time.perf_counter()
    index = FlatIndex(x.shape[1])
    index.add(x)
    build = time.perf_counter() - t
    build_mem = _peak_delta_mib(start)
    start = _reset_peak()
    search = _median_time(lambda: index.search(q, k), repeats)
    search_mem = _peak_delta_mib(start)
    _, truth = index.search(q, k)
    rows = [{"method": "FlatIndex (exact)", "params": "", "build": build, "build_mem": build_mem, "search": search}]
    rows[0].update(search_mem=search_mem, size=x.nbytes / 2**20, recall=1.0, latency=_latency(index, q, k))
    return {"rows": rows, "truth": truth}


def faiss_run(n: int, factory: str, knob: str, values: list[int], k: int, repeats: int) -> list[dict[str, Any]]:
    """Build one faiss index and search it at each knob value (nprobe / ef_search)."""
    import faiss

    from lumir.index import FaissIndex

    x, q, truth = DATA[f"x{n}"], DATA["ann_q"], DATA[f"truth{n}"]
    start = _reset_peak()
    t = time.perf_counter()
    index = FaissIndex(x.shape[1], factory)
    index.add(x)
    build = time.perf_counter() - t
    build_mem = _peak_delta_mib(start)
    size = faiss.serialize_index(index.faiss_index).nbytes / 2**20
    rows = []
    for value in values:
        setattr(index, knob, value)
        start = _reset_peak()
        search = _median_time(lambda: index.search(q, k), repeats)
        search_mem = _peak_delta_mib(start)
        found = index.search(q, k)[1]
        recall = float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))
        rows.append(
            {"method": f"FaissIndex {factory!r}", "params": f"{knob}={value}", "build": build, "build_mem": build_mem}
        )
        rows[-1].update(search=search, search_mem=search_mem, size=size, recall=recall, latency=_latency(index, q, k))
    return rows


# --------------------------------------------------------------------------------------------------- output
def _flat_table(res: dict[str, Any], args: argparse.Namespace) -> str:
    base = {group: sec for (group, name), sec in res["times"].items() if name.startswith("torch")}
    lines = [
        f"FlatIndex vs plain torch: corpus {args.flat_n} x {args.flat_dim} "
        f"(float32, unit-normalised clustered Gaussian), {args.queries} queries, k={args.k}, "
        f"median of {args.repeats} interleaved runs, "
        f"torch threads={res['threads']}; top-k positions agree with torch.topk on {res['agree']:.1%} of slots.",
        "",
        "| queries | method | median time (ms) | ratio vs torch.topk(q @ X.T) on the same queries |",
        "|---|---|---:|---:|",
    ]
    for (group, name), sec in res["times"].items():
        lines.append(f"| {group} | {name} | {sec * 1e3:.2f} | {sec / base[group]:.2f}x |")
    return "\n".join(lines)


def _ann_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    shape = f"latent dim {args.latent_dim} randomly projected" if args.latent_dim else "isotropic in all dims"
    lines = [
        f"FAISS vs exact: clustered synthetic data (dim {args.ann_dim}, {args.clusters} Gaussian clusters, "
        f"sigma={args.sigma}, {shape}, unit-normalised, inner product), {args.queries} queries from the same "
        f"distribution, k={args.k}; search time = median of {args.search_repeats} runs over all queries at once, "
        "1-query latency = median over 50 queries searched one at a time; "
        f"recall@{args.k} vs the exact FlatIndex top-k; peak dRSS = rise of the process's max RSS "
        "(getrusage ru_maxrss, high-water mark reset via /proc/self/clear_refs) during the step.",
        "",
        f"| n | method | params | build (s) | search, {args.queries} queries (s) | QPS | speedup vs exact "
        f"| 1-query latency (ms) | latency speedup | recall@{args.k} "
        "| build peak dRSS (MiB) | search peak dRSS (MiB) | index size (MiB) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    exact = {r["n"]: r for r in rows if r["method"].startswith("FlatIndex")}
    for r in rows:
        ref = exact[r["n"]]
        lines.append(
            f"| {r['n']:,} | {r['method']} | {r['params']} | {r['build']:.2f} | {r['search']:.3f} | "
            f"{args.queries / r['search']:,.0f} | {ref['search'] / r['search']:.1f}x | {r['latency'] * 1e3:.2f} | "
            f"{ref['latency'] / r['latency']:.1f}x | {r['recall']:.3f} | "
            f"{r['build_mem']:.0f} | {r['search_mem']:.0f} | {r['size']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run both benchmarks and print markdown tables."""
    args = parse_args(argv)
    if args.omp_wait_policy != "keep":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy  # read when torch / faiss load OpenMP, in the children
    t0 = time.perf_counter()
    print(
        f"# lumir index benchmark\n\n{platform.platform()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}\n"
    )
    if not args.skip_flat:
        rng = np.random.default_rng(0)
        DATA["flat_x"] = clustered(args.flat_n, args.flat_dim, args.clusters, args.sigma, rng)
        DATA["flat_q"] = clustered(args.queries, args.flat_dim, args.clusters, args.sigma, rng)
        flat = _in_child(flat_vs_torch, args.k, args.repeats)
        del DATA["flat_x"], DATA["flat_q"]
        print(_flat_table(flat, args) + "\n", flush=True)

    rows: list[dict[str, Any]] = []
    for n in args.ann_sizes:
        rng = np.random.default_rng(n)
        DATA[f"x{n}"] = clustered(n, args.ann_dim, args.clusters, args.sigma, rng, args.latent_dim)
        DATA["ann_q"] = clustered(args.queries, args.ann_dim, args.clusters, args.sigma, rng, args.latent_dim)
        exact = _in_child(exact_run, n, args.k, args.search_repeats)
        DATA[f"truth{n}"] = exact["truth"]
        rows += [{"n": n, **r} for r in exact["rows"]]
        if args.ivf:
            rows += [
                {"n": n, **r}
                for r in _in_child(faiss_run, n, args.ivf, "nprobe", args.nprobe, args.k, args.search_repeats)
            ]
        if args.hnsw:
            hnsw = _in_child(faiss_run, n, args.hnsw, "ef_search", args.ef_search, args.k, args.search_repeats)
            rows += [{"n": n, **r} for r in hnsw]
        del DATA[f"x{n}"]
    print(_ann_table(rows, args) + "\n")
    print(f"total wall time: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
