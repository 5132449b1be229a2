"""Evaluation harness: run a retrieval system over tasks and write an ``EvalResult`` JSON.

The result (``format: lumir-eval``) holds, per task and per stage, the metrics (fractions in [0, 1], MedR as a
rank) and wall times, plus the configuration and library versions, so a result file explains itself.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lumir.collections import RetrievalTask
from lumir.config import versions, write_json
from lumir.eval.metrics import compute_metrics, parse_metric, rsum
from lumir.io.trec import check_qrels, write_run
from lumir.pipeline import Pipeline
from lumir.protocols import Embedder, Reranker, Rewriter
from lumir.retrieve import DenseRetriever

__all__ = ["EVAL_FORMAT_VERSION", "evaluate", "evaluate_task"]

logger = logging.getLogger(__name__)
EVAL_FORMAT_VERSION = 1


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _retriever(
    task: RetrievalTask,
    embedder: Embedder,
    *,
    batch_size: int,
    index_cache: Path | None,
    candidate_modality: str | None,
    backend: str,
) -> tuple[DenseRetriever, float]:
    """Embed the task's candidates (or reopen a cached index directory) and return a retriever."""
    t = time.perf_counter()
    if index_cache is None and backend == "flat":
        retriever = DenseRetriever.from_corpus(
            task.corpus, embedder, batch_size=batch_size, candidate_modality=candidate_modality
        )
    else:
        from lumir.index import build_index, open_index

        path = (index_cache or Path(".lumir-cache")) / _slug(task.name)
        store = None
        if (path / "lumir.json").is_file():
            store = open_index(path, embedder=embedder)
            if store.config.get("embedder") != embedder.spec() or store.corpus.ids != task.corpus.ids:
                logger.info("cached index %s was built differently; rebuilding", path)
                store = None
        if store is None:
            store = build_index(task.corpus, embedder, path, backend=backend, batch_size=batch_size, overwrite=True)
        retriever = DenseRetriever(
            embedder, store.index, task.corpus, batch_size=batch_size, candidate_modality=candidate_modality
        )
    return retriever, time.perf_counter() - t


def evaluate_task(
    task: RetrievalTask,
    pipeline: Pipeline,
    *,
    k: int,
    metrics: Sequence[str] | None = None,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Run ``pipeline`` on one task and score every stage; returns the task's entry of an EvalResult."""
    names = list(metrics or task.metrics)
    cutoff = max((parse_metric(m).k or 0 for m in names), default=0)
    if cutoff > k and k < len(task.corpus):  # ranking every candidate makes any cutoff exact
        raise ValueError(f"metric cutoff {cutoff} exceeds the retrieval depth k={k}; raise k")
    qrels, dropped = check_qrels(task.qrels, [q.id for q in task.queries], task.corpus.ids)
    cand_modalities = {it.id: it.modality.value for it in task.corpus}
    desired = task.candidate_modality.value if task.candidate_modality is not None else None
    if desired is not None and len(set(cand_modalities.values())) > 1 and "M.A.@1" not in names:
        names.append("M.A.@1")
    out = pipeline.run(task.queries, k)
    stages: dict[str, Any] = {}
    for stage, rankings in out.stages.items():
        scores = compute_metrics(
            rankings, qrels, names, candidate_modalities=cand_modalities, desired_modality=desired
        )
        seconds = out.seconds.get(stage, 0.0)
        stages[stage] = {
            "metrics": scores,
            "seconds": round(seconds, 4),
            "ms_per_query": round(1000 * seconds / max(1, len(task.queries)), 3),
        }
        if "rerank" in rankings.meta:  # the reranker's counters: prompts, parse failures, truncations, ...
            stages[stage]["rerank"] = dict(rankings.meta["rerank"])
            stages[stage]["reranker"] = rankings.meta.get("reranker")
        if run_dir is not None:
            write_run(Path(run_dir) / f"{_slug(task.name)}.{stage}.trec", rankings, run_name=f"lumir-{stage}")
    entry: dict[str, Any] = {
        "num_queries": len(task.queries),
        "num_candidates": len(task.corpus),
        "stages": stages,
        "timings": {name: round(s, 4) for name, s in out.seconds.items()},
    }
    if any(dropped.values()):
        entry["qrels_dropped"] = dropped
    return entry


def evaluate(
    tasks: Sequence[RetrievalTask],
    *,
    embedder: Embedder,
    reranker: Reranker | None = None,
    rewriter: Rewriter | None = None,
    k: int = 100,
    rerank_k: int | None = None,
    metrics: Sequence[str] | None = None,
    batch_size: int = 64,
    candidate_modality: str | None = None,
    backend: str = "flat",
    index_cache: str | Path | None = None,
    output: str | Path | None = None,
    run_dir: str | Path | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a dense retriever (plus optional rewriter and reranker) on each task.

    Args:
        tasks: from :func:`lumir.eval.load_tasks` or the loaders in :mod:`lumir.data`.
        embedder: embeds candidates and queries.
        reranker, rewriter: optional later/earlier stages; reported as separate stages.
        k: first-stage depth; rerank_k: how many of those the reranker sees.
        metrics: override each task's metric list.
        candidate_modality: restrict candidates to one modality, or ``"auto"`` (M-BEIR's desired modality).
        backend: ``"flat"`` (exact, default) or ``"faiss"``; index_cache: keep (resumable) index directories
            there so a rerun skips corpus embedding.
        output: write the EvalResult JSON there; run_dir: write one TREC run per task and stage there.
        config: recorded verbatim in the result (e.g. the CLI arguments).

    Returns:
        The EvalResult dict (see the module docstring of :mod:`lumir.eval.report`).
    """
    result: dict[str, Any] = {
        "format": "lumir-eval",
        "format_version": EVAL_FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "config": {"embedder": embedder.spec(), "k": k, "rerank_k": rerank_k, "backend": backend, **(config or {})},
        "tasks": {},
    }
    cache = None if index_cache is None else Path(index_cache)
    for task in tasks:
        logger.info("evaluating %s", task)
        retriever, embed_seconds = _retriever(
            task,
            embedder,
            batch_size=batch_size,
            index_cache=cache,
            candidate_modality=candidate_modality,
            backend=backend,
        )
        pipeline = Pipeline(
            retriever, rewriter=rewriter, reranker=reranker, corpus=task.corpus, k=k, rerank_k=rerank_k
        )
        entry = evaluate_task(task, pipeline, k=k, metrics=metrics, run_dir=None if run_dir is None else Path(run_dir))
        entry["timings"] = {"embed_corpus": round(embed_seconds, 4), **entry["timings"]}
        result["tasks"][task.name] = entry
        result["summary"] = image_text_rsum(result["tasks"])
        if output is not None:  # write after every task so a long run keeps what it finished
            write_json(output, result)
    return result


def image_text_rsum(tasks: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Rsum (fraction units, 6 = perfect) for every ``<name>/t2i`` + ``<name>/i2t`` pair, per shared stage.

    Example:
        >>> m = {"R@1": 0.5, "R@5": 0.5, "R@10": 0.5}
        >>> image_text_rsum({"f/t2i": {"stages": {"first_stage": {"metrics": m}}},
        ...                  "f/i2t": {"stages": {"first_stage": {"metrics": m}}}})
        {'f': {'first_stage': 3.0}}
    """
    out: dict[str, dict[str, float]] = {}
    for name, entry in tasks.items():
        prefix, _, direction = name.rpartition("/")
        other = tasks.get(f"{prefix}/i2t") if direction == "t2i" else None
        if other is None:
            continue
        for stage, body in entry["stages"].items():
            if stage not in other["stages"]:
                continue
            try:
                value = rsum(body["metrics"], other["stages"][stage]["metrics"])
            except ValueError:  # a direction lacks R@1/5/10
                continue
            out.setdefault(prefix, {})[stage] = round(value, 6)
    return out
