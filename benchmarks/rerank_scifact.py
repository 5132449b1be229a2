"""LLM reranking on BEIR SciFact: all-MiniLM-L6-v2 top-k reranked by the offline LLMs, pointwise and listwise.

For each LLM and reranker the uncached pass is timed (cost per query); every score lands in an LLM cache, so the
fusion sweep (α in 0, 0.25, 0.5, 0.75, 1 with ``none`` and ``minmax`` normalisation) costs no model calls.
α = 1 is the first stage itself, α = 0 the reranker alone.

Usage:
    python benchmarks/rerank_scifact.py --llm smollm2 --queries 300 \
        --output benchmarks/results/rerank_scifact_smollm2.json
    python benchmarks/rerank_scifact.py --llm qwen-coder --queries 100 --rerankers yes-no,listwise
    python benchmarks/rerank_scifact.py --markdown benchmarks/results/rerank_scifact_*.json \
        > benchmarks/results/rerank_scifact.md
    python benchmarks/rerank_scifact.py --baselines --queries 100    # random order, always-"1" listwise
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

from lumir.collections import Rankings
from lumir.config import versions, write_json
from lumir.eval.metrics import compute_metrics
from lumir.eval.tasks import load_tasks
from lumir.models.chat import CachedChatModel, load_chat_model
from lumir.pipeline import PipelineSpec, build_pipeline
from lumir.rerank import FusionConfig, load_reranker

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def first_stage(n_queries: int, index_dir: Path) -> tuple[Any, list[Any], Rankings]:
    """MiniLM top-100 for the first ``n_queries`` judged test queries, through the same pipeline spec ``lumir eval``
    builds (the corpus index is kept in ``index_dir`` and reused)."""
    task = load_tasks("scifact")[0]
    queries = sorted((q for q in task.queries if q.id in task.qrels), key=lambda q: int(q.id))[:n_queries]
    spec = PipelineSpec(embedder="minilm", k=100, index_cache=str(index_dir.parent))
    pipeline = build_pipeline(spec, corpus=task.corpus, cache_name=index_dir.name)
    return task, queries, pipeline.run(queries).stages["first_stage"]


def random_rerank_ndcg10(first: Rankings, qrels: dict[str, dict[str, int]], k: int, seeds: int = 20) -> float:
    """nDCG@10 of a uniformly random order of each query's top-k (mean over seeds): the no-information baseline."""
    rng = np.random.default_rng(0)
    values = []
    for _ in range(seeds):
        rows = []
        for _qid, hits in first:
            head = [h.id for h in hits[:k]]
            perm = rng.permutation(len(head))
            rows.append([(head[j], float(len(head) - r)) for r, j in enumerate(perm)])
        values.append(ndcg10(Rankings.from_hits(first.query_ids, rows, k), qrels))
    return float(np.mean(values))


def ndcg10(rankings: Rankings, qrels: dict[str, dict[str, int]]) -> float:
    return 100 * compute_metrics(rankings, qrels, ["nDCG@10"])["nDCG@10"]


def always_first_ndcg10(
    task: Any, queries: list[Any], first: Rankings, qrels: dict[str, dict[str, int]], args: argparse.Namespace
) -> float:
    """nDCG@10 of the listwise reranker over a model that always answers "1": the pure position-bias baseline."""
    from lumir.testing.fakes import ScriptedChatModel

    always1 = ScriptedChatModel(score_fn=lambda text, toks: [0.0] + [-30.0] * (len(toks) - 1))
    reranker = load_reranker(
        "listwise", always1, k=args.k, window=args.window, max_words=args.listwise_words, fusion=FusionConfig(0.0)
    )
    return ndcg10(reranker.rerank(queries, first, task.corpus), qrels)


def baselines(args: argparse.Namespace) -> dict[str, Any]:
    """The no-LLM reference points for a query subset: first stage, random top-k order, always-"1" listwise."""
    task, queries, first = first_stage(args.queries, args.index)
    qrels = {q.id: task.qrels[q.id] for q in queries}
    return {
        "queries": len(queries),
        "k": args.k,
        "first_stage_ndcg10": round(ndcg10(first, qrels), 2),
        "random_top_k_order_ndcg10": round(random_rerank_ndcg10(first, qrels, args.k), 2),
        "listwise_always_first_position_ndcg10": round(always_first_ndcg10(task, queries, first, qrels, args), 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    task, queries, first = first_stage(args.queries, args.index)
    qrels = {q.id: task.qrels[q.id] for q in queries}
    chat_raw = load_chat_model(args.llm, n_ctx=args.n_ctx) if "@" not in args.llm else load_chat_model(args.llm)
    chat = CachedChatModel(chat_raw, args.cache)
    out: dict[str, Any] = {
        "llm": args.llm,
        "chat": chat.spec(),
        "queries": len(queries),
        "k": args.k,
        "max_words": args.max_words,
        "first_stage_ndcg10": round(ndcg10(first, qrels), 2),
        "random_top_k_order_ndcg10": round(random_rerank_ndcg10(first, qrels, args.k), 2),
        "versions": versions("llama_cpp_python"),
        "rerankers": {},
    }
    print(f"first stage nDCG@10 on {len(queries)} queries: {out['first_stage_ndcg10']}", flush=True)
    for name in args.rerankers.split(","):
        options: dict[str, Any] = {"k": args.k, "max_words": args.max_words, "progress": True}
        if name == "listwise":
            options.update(window=args.window, max_words=args.listwise_words)
        chat.hits = chat.misses = 0
        t0 = time.perf_counter()
        base = load_reranker(name, chat, **options, fusion=FusionConfig(alpha=0.0)).rerank(queries, first, task.corpus)
        seconds = time.perf_counter() - t0
        entry: dict[str, Any] = {
            "seconds": round(seconds, 1),
            "cache_misses": chat.misses,
            "seconds_per_query": round(seconds / len(queries), 3) if chat.misses else None,
            "stats": base.meta["rerank"],
            "fusion": {},
        }
        if chat.misses == 0:
            entry["note"] = "all scores came from the cache; cost per query not measured in this run"
        for normalize in ("none", "minmax"):
            for alpha in ALPHAS:
                reranker = load_reranker(name, chat, **options, fusion=FusionConfig(alpha=alpha, normalize=normalize))
                reranked = reranker.rerank(queries, first, task.corpus)
                entry["fusion"][f"{normalize}/{alpha}"] = round(ndcg10(reranked, qrels), 2)
        out["rerankers"][name] = entry
        print(name, json.dumps(entry), flush=True)
    return out


def markdown(paths: list[Path]) -> str:
    lines = [
        "| LLM | reranker | queries | top-k | first stage | random top-k order | α=0 (rerank only) | α=0.25 | α=0.5 | "
        "α=0.75 | α=0.5 minmax | s/query |",
        "|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path in paths:
        r = json.loads(path.read_text())
        for name, e in r["rerankers"].items():
            f = e["fusion"]
            lines.append(
                f"| {r['llm']} | {name} | {r['queries']} | {r['k']} | {r['first_stage_ndcg10']:.1f} | "
                f"{r.get('random_top_k_order_ndcg10', float('nan')):.1f} | "
                f"{f['none/0.0']:.1f} | {f['none/0.25']:.1f} | {f['none/0.5']:.1f} | {f['none/0.75']:.1f} | "
                f"{f['minmax/0.5']:.1f} | {e['seconds_per_query'] if e['seconds_per_query'] is not None else '-'} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm", default="smollm2")
    p.add_argument("--rerankers", default="true-false,yes-no,listwise")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--max-words", type=int, default=160)
    p.add_argument("--listwise-words", type=int, default=60)
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--cache", type=Path, default=Path("runs/bench/llm-cache.sqlite"))
    p.add_argument("--index", type=Path, default=Path("runs/bench/scifact-minilm"), help="first-stage index dir")
    p.add_argument("--output", type=Path)
    p.add_argument("--markdown", type=Path, nargs="*")
    p.add_argument("--baselines", action="store_true", help="only the no-LLM reference points (JSON to stdout)")
    args = p.parse_args()
    if args.baselines:
        print(json.dumps(baselines(args)))
        return
    if args.markdown:
        print(markdown(args.markdown))
        return
    result = run(args)
    if args.output:
        write_json(args.output, result)


if __name__ == "__main__":
    main()
