"""Evaluation harness: run a retrieval system over tasks and write an ``EvalResult`` JSON.

The result (``format: lumir-eval``) holds, per task and per stage, the metrics (fractions in [0, 1], MedR as a
rank) and wall times, plus the configuration and library versions, so a result file explains itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lumir.collections import RetrievalTask
from lumir.config import versions, write_json
from lumir.embed.memo import MemoEmbedder
from lumir.eval.metrics import compute_metrics, parse_metric, rsum
from lumir.eval.result import EvalResult
from lumir.eval.tasks import load_tasks
from lumir.io.trec import check_qrels, write_run
from lumir.pipeline import Pipeline, PipelineSpec, Stages, build_pipeline, load_stages
from lumir.pipeline.core import REWRITE, PipelineOutput
from lumir.pipeline.spec import slug
from lumir.protocols import Embedder, Retriever, Rewriter

__all__ = ["EVAL_FORMAT_VERSION", "System", "evaluate", "evaluate_task", "rewrite_stats"]

logger = logging.getLogger(__name__)
EVAL_FORMAT_VERSION = 1


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
    out = pipeline.run(task.queries, k, exclude=task.exclude or None)
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
        if rankings.meta.get("short_rankings"):  # an approximate index returned fewer than k hits
            stages[stage]["short_rankings"] = int(rankings.meta["short_rankings"])
        if run_dir is not None:
            write_run(Path(run_dir) / f"{slug(task.name)}.{stage}.trec", rankings, run_name=f"lumir-{stage}")
    entry: dict[str, Any] = {
        "num_queries": len(task.queries),
        "num_candidates": len(task.corpus),
        **({"excluded_per_query": task.max_excluded()} if task.exclude else {}),
        "stages": stages,
        "timings": {name: round(s, 4) for name, s in out.seconds.items()},
    }
    if REWRITE in out.seconds:  # the rewrite stage's cost and counters (fallbacks by reason, model calls)
        entry["rewrite_ms_per_query"] = round(1000 * out.seconds[REWRITE] / max(1, len(task.queries)), 3)
        entry["rewrite_stats"] = rewrite_stats(out, pipeline.rewriter)
    if out.rewrites:  # what each rewritten query became (the rewrite stage's output)
        entry["rewrites"] = out.rewrites
    if any(dropped.values()):
        entry["qrels_dropped"] = dropped
    return entry


def rewrite_stats(out: PipelineOutput, rewriter: Rewriter | None) -> dict[str, Any]:
    """Counters of one run's rewrite stage: queries, rewritten, fallbacks by reason (from each query's
    ``meta["rewrite"]``, so any rewriter that records ``fallback`` is counted) and, for an LLM rewriter, its own
    counters of that run (model calls, cache hits, ...).

    Example:
        >>> from lumir.types import Query
        >>> q = Query("q1", text="a dog", meta={"rewrite": {"original": "a dog", "fallback": "echo"}})
        >>> rewrite_stats(PipelineOutput([q], {}, {}, [q]), None)
        {'queries': 1, 'rewritten': 0, 'fallbacks': {'echo': 1}}
    """
    from collections import Counter

    from lumir.rewrite.base import LLMRewriter

    reasons = Counter(
        str(q.meta["rewrite"]["fallback"])
        for q in out.queries
        if isinstance(q.meta.get("rewrite"), Mapping) and q.meta["rewrite"].get("fallback")
    )
    stats: dict[str, Any] = {"queries": len(out.queries), "rewritten": len(out.rewrites), "fallbacks": dict(reasons)}
    if isinstance(rewriter, LLMRewriter):
        stats.update(rewriter.last_stats.to_dict())
    return stats


System = PipelineSpec | Mapping[str, Any] | str | Path | Embedder | Retriever
"""What :func:`evaluate` scores: a pipeline spec (or its file), an embedder (spec or object), or a ready retriever."""


def _as_spec(system: Any) -> tuple[PipelineSpec | None, Embedder | None, Retriever | None]:
    """(spec to build per task, embedder object to use, or a fixed retriever) from what the caller gave."""
    if isinstance(system, PipelineSpec):
        return system, None, None
    if isinstance(system, Mapping):
        if "type" in system:  # an embedder spec
            return PipelineSpec(embedder=dict(system)), None, None
        return PipelineSpec.from_dict(system), None, None
    if isinstance(system, (str, Path)):
        path = Path(system)
        if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
            return PipelineSpec.from_file(path), None, None
        return PipelineSpec(embedder=str(system)), None, None
    if isinstance(system, Embedder):
        return PipelineSpec(), system, None
    if hasattr(system, "retrieve"):
        return None, None, system
    raise TypeError(
        f"cannot evaluate a {type(system).__name__}: give a PipelineSpec (or its file), an embedder or its spec, "
        "or a retriever/Pipeline"
    )


def _load_task_list(tasks: Any, data: str | Path | None) -> list[RetrievalTask]:
    if isinstance(tasks, RetrievalTask):
        return [tasks]
    if isinstance(tasks, (str, Mapping)):
        return load_tasks(tasks, data=data)
    out: list[RetrievalTask] = []
    for t in tasks:
        out.extend([t] if isinstance(t, RetrievalTask) else load_tasks(t, data=data))
    return out


def evaluate(
    system: System,
    tasks: Sequence[RetrievalTask | str | Mapping[str, Any]] | RetrievalTask | str | Mapping[str, Any],
    *,
    k: int | None = None,
    metrics: Sequence[str] | None = None,
    embedder: Embedder | None = None,
    data: str | Path | None = None,
    output: str | Path | None = None,
    run_dir: str | Path | None = None,
    config: Mapping[str, Any] | None = None,
) -> EvalResult:
    """Score every stage of a retrieval system on each task.

    Args:
        system: what to evaluate —

            - a :class:`~lumir.pipeline.PipelineSpec`, its mapping or its YAML/JSON file: its components (embedder,
              rewriter, reranker) are loaded once and a pipeline is built over each task's candidates;
            - an embedder, or an embedder spec (``"minilm"``, ``{"type": "clip", ...}``): a dense retriever;
            - a :class:`~lumir.pipeline.Pipeline` or any retriever: used as is for every task (its candidates must
              hold the tasks' relevant ids, e.g. an index built over the task's corpus).
        tasks: :class:`~lumir.collections.RetrievalTask` s or task specs (``"scifact"``, ``"flickr8k"``, ...).
        k: first-stage depth (default: the spec's ``k``, 100).
        metrics: override each task's metric list.
        embedder: an embedder object to use with a spec (instead of the spec's ``embedder``).
        data: data root for task specs (default ``$LUMIR_DATA`` or ``../shared/data``).
        output: write the EvalResult JSON there (after every task, so a long run keeps what it finished).
        run_dir: write one TREC run per task and stage there.
        config: recorded verbatim in the result (e.g. the CLI command).

    Paired tasks over the same items (Flickr8k t2i + i2t) embed each item once: the embedder is wrapped in a
    :class:`~lumir.embed.memo.MemoEmbedder` shared by every task of the call.

    Example:
        >>> result = evaluate("color", "toy", k=8)
        >>> result.score("toy/t2i", "R@1")
        1.0
    """
    task_list = _load_task_list(tasks, data)
    spec, given, fixed = _as_spec(system)
    embedder = embedder or given
    if spec is not None and k is not None:
        spec = spec.replace(k=k)
    record: dict[str, Any] = {"k": k if spec is None else spec.k}
    stages = None
    memo: MemoEmbedder | None = None
    pipe: Pipeline | None = None
    if spec is not None:
        instructions = next((t.meta["instructions_path"] for t in task_list if "instructions_path" in t.meta), None)
        stages = load_stages(spec, instructions=instructions)
        chosen = embedder or stages.embedder
        if chosen is None:
            raise ValueError("nothing to evaluate: the pipeline spec names no embedder (embedder: or --embedder)")
        memo = MemoEmbedder(chosen)
        stages = Stages(memo, stages.rewriter, stages.reranker)
        record.update(pipeline=spec.to_dict(), embedder=chosen.spec())
    else:
        assert fixed is not None
        pipe = fixed if isinstance(fixed, Pipeline) else Pipeline(fixed, k=k or 100)
        record.update(pipeline=dict(pipe.describe()), k=pipe.k if k is None else k)
    result: dict[str, Any] = {
        "format": "lumir-eval",
        "format_version": EVAL_FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "config": {**record, "tasks": [t.name for t in task_list], **(config or {})},
        "tasks": {},
    }
    for task in task_list:
        logger.info("evaluating %s", task)
        t = time.perf_counter()
        before = (memo.hits, memo.misses) if memo is not None else (0, 0)
        if spec is not None:
            assert stages is not None
            pipeline = build_pipeline(spec, corpus=task.corpus, stages=stages, cache_name=task.name)
        else:
            assert pipe is not None
            pipeline = pipe
        embed_seconds = time.perf_counter() - t
        entry = evaluate_task(
            task, pipeline, k=pipeline.k, metrics=metrics, run_dir=None if run_dir is None else Path(run_dir)
        )
        entry["timings"] = {"embed_corpus": round(embed_seconds, 4), **entry["timings"]}
        if memo is not None:
            entry["embedding"] = {"embedded": memo.misses - before[1], "reused": memo.hits - before[0]}
        result["tasks"][task.name] = entry
        result["summary"] = image_text_rsum(result["tasks"])
        if output is not None:
            write_json(output, result)
    return EvalResult(result)


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
