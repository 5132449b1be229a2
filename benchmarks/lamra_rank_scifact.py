"""LamRA-Rank on BEIR SciFact: a SmolLM2-135M LoRA trained on MiniLM top-100 hard negatives, then used to rerank.

Steps (each resumable; heavy ones meant to run under ``flock /tmp/lumir-heavy.lock``):

1. ``prepare``: MiniLM top-100 for every SciFact *train* query; ``--alpha-holdout`` of them (the lowest sha256 of
   their id) are kept out for choosing the fusion weight α; the rest become training rows
   (:func:`lumir.train.reranker_data.rerank_rows`, false-negative guard on).
2. train: ``lumir train reranker --config recipes/reranker/lamra_rank.yaml --profile cpu -o runs/lamra_rank/run``.
3. ``eval --llm hf:runs/lamra_rank/run/model``: for the ``yes-no`` and ``listwise`` rerankers, rerank the MiniLM
   top-20 of the α-holdout queries, choose α (and the normalisation) there, then rerank the first ``--queries``
   judged *test* queries by id (the queries of the zero-shot rows in BENCHMARKS.md) and report the chosen setting;
   the whole α sweep on test is recorded as a diagnostic. Every LLM score lands in ``--cache``, so reruns and
   sweeps are free.
4. ``markdown RESULT.json ...``: the table.

Usage:
    python benchmarks/lamra_rank_scifact.py prepare --out runs/lamra_rank/scifact
    python benchmarks/lamra_rank_scifact.py eval --llm hf:runs/lamra_rank/run/model --label trained \
        --output benchmarks/results/lamra_rank/trained.json
    python benchmarks/lamra_rank_scifact.py markdown benchmarks/results/lamra_rank/*.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from lumir.collections import Rankings
from lumir.config import versions, write_json
from lumir.eval.metrics import compute_metrics
from lumir.eval.tasks import load_tasks
from lumir.models.chat import CachedChatModel, load_chat_model
from lumir.pipeline import PipelineSpec, build_pipeline
from lumir.rerank import FusionConfig, load_reranker
from lumir.train.reranker_data import rerank_rows, write_rerank_rows

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
NORMALIZATIONS = ("none", "minmax")
INDEX = Path("runs/lamra_rank/index")


def first_stage(split: str, queries: list[Any], task: Any, k: int) -> Rankings:
    """MiniLM top-``k`` through the pipeline ``lumir eval`` builds; the corpus index is built once (or copied from
    ``runs/scifact`` when that folder holds the same MiniLM index) and reused."""
    target = INDEX / "scifact-minilm"
    if not target.exists() and Path("runs/scifact/lumir.json").is_file():
        INDEX.mkdir(parents=True, exist_ok=True)
        shutil.copytree("runs/scifact", target)
    spec = PipelineSpec(embedder="minilm", k=k, index_cache=str(INDEX))
    pipeline = build_pipeline(spec, corpus=task.corpus, cache_name="scifact-minilm")
    rankings: Rankings = pipeline.run(queries).stages["first_stage"]
    return rankings


def alpha_holdout(queries: list[Any], n: int) -> tuple[list[Any], list[Any]]:
    """``(train, holdout)``: the ``n`` queries with the lowest sha256 of their id are held out (seed-independent)."""
    order = sorted(queries, key=lambda q: hashlib.sha256(q.id.encode()).hexdigest())
    held = {q.id for q in order[:n]}
    return [q for q in queries if q.id not in held], [q for q in queries if q.id in held]


def prepare(args: argparse.Namespace) -> None:
    task = load_tasks("scifact:train")[0]
    queries = sorted(task.queries, key=lambda q: int(q.id))
    train, held = alpha_holdout(queries, args.alpha_holdout)
    t0 = time.perf_counter()
    rankings = first_stage("train", train, task, args.top)
    rows, counts = rerank_rows(train, rankings, task.qrels, top=args.top)
    out = Path(args.out)
    write_rerank_rows(out / "rows_train.jsonl", rows)
    info = {
        "train_queries": len(train),
        "alpha_holdout_queries": len(held),
        "alpha_holdout_ids": [q.id for q in held],
        "top": args.top,
        "counts": counts,
        "first_stage_seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(out / "prepare.json", info)
    print(json.dumps({k: v for k, v in info.items() if k != "alpha_holdout_ids"}))


def ndcg10(rankings: Rankings, qrels: dict[str, dict[str, int]]) -> float:
    return 100 * compute_metrics(rankings, qrels, ["nDCG@10"])["nDCG@10"]


def sweep(
    name: str, chat: Any, options: dict[str, Any], queries: list[Any], first: Rankings, corpus: Any, qrels: Any
) -> tuple[dict[str, float], dict[str, Any]]:
    """nDCG@10 for every (normalisation, α); the first pass scores (timed), the others come from the cache."""
    chat.hits = chat.misses = 0
    t0 = time.perf_counter()
    base = load_reranker(name, chat, **options, fusion=FusionConfig(alpha=0.0)).rerank(queries, first, corpus)
    seconds = time.perf_counter() - t0
    cost = {
        "seconds": round(seconds, 1),
        "cache_misses": chat.misses,
        "seconds_per_query": round(seconds / len(queries), 3) if chat.misses else None,
        "stats": base.meta["rerank"],
    }
    table = {}
    for normalize in NORMALIZATIONS:
        for alpha in ALPHAS:
            fusion = FusionConfig(alpha=alpha, normalize=normalize)
            reranked = load_reranker(name, chat, **options, fusion=fusion).rerank(queries, first, corpus)
            table[f"{normalize}/{alpha}"] = round(ndcg10(reranked, qrels), 2)
    return table, cost


def choose(table: dict[str, float]) -> str:
    """The best setting on the holdout; ties go to the larger α (closer to the first stage), then to "none"."""
    return max(table, key=lambda key: (table[key], float(key.split("/")[1]), key.startswith("none")))


def evaluate(args: argparse.Namespace) -> None:
    prep = json.loads((Path(args.prepared) / "prepare.json").read_text())
    train_task = load_tasks("scifact:train")[0]
    held_ids = set(prep["alpha_holdout_ids"][: args.holdout_queries])
    held = [q for q in train_task.queries if q.id in held_ids]
    test_task = load_tasks("scifact")[0]
    tests = sorted((q for q in test_task.queries if q.id in test_task.qrels), key=lambda q: int(q.id))[: args.queries]
    held_first = first_stage("train", held, train_task, args.k)
    test_first = first_stage("test", tests, test_task, args.k)
    held_qrels = {q.id: train_task.qrels[q.id] for q in held}
    test_qrels = {q.id: test_task.qrels[q.id] for q in tests}
    chat = CachedChatModel(load_chat_model(args.llm, batch_size=args.batch_size), args.cache)
    out: dict[str, Any] = {
        "label": args.label,
        "llm": args.llm,
        "chat": chat.spec(),
        "k": args.k,
        "holdout_queries": len(held),
        "test_queries": len(tests),
        "holdout_first_stage_ndcg10": round(ndcg10(held_first, held_qrels), 2),
        "test_first_stage_ndcg10": round(ndcg10(test_first, test_qrels), 2),
        "versions": versions("transformers", "peft", "torch"),
        "rerankers": {},
    }
    manifest = Path(args.llm.removeprefix("hf:")) / "lumir_reranker.json"
    if manifest.is_file():
        out["training"] = json.loads(manifest.read_text())["metrics"]
    print(json.dumps({k: v for k, v in out.items() if k not in ("chat", "versions")}), flush=True)
    for name in args.rerankers.split(","):
        options: dict[str, Any] = {"k": args.k, "max_words": args.max_words, "progress": True}
        if name == "listwise":
            options.update(window=args.window, max_words=args.listwise_words)
        held_table, held_cost = sweep(name, chat, options, held, held_first, train_task.corpus, held_qrels)
        chosen = choose(held_table)
        test_table, test_cost = sweep(name, chat, options, tests, test_first, test_task.corpus, test_qrels)
        entry = {
            "options": {k: v for k, v in options.items() if k != "progress"},
            "chosen_on_holdout": chosen,
            "holdout": {"fusion": held_table, "cost": held_cost},
            "test_at_chosen": test_table[chosen],
            "test": {"fusion": test_table, "cost": test_cost},
        }
        out["rerankers"][name] = entry
        print(name, json.dumps({"chosen": chosen, "holdout": held_table, "test": test_table}), flush=True)
        if args.output:
            write_json(args.output, out)


def paired(args: argparse.Namespace) -> None:
    """Per-query nDCG@10 on test, first stage vs the setting chosen on the holdout: wins / ties / losses and a
    paired bootstrap 95% interval of the mean difference. Scores come from the LLM cache (no model calls when the
    ``eval`` step ran)."""
    import numpy as np

    from lumir.eval.metrics import ndcg_at_k

    result = json.loads(args.result.read_text())
    test_task = load_tasks("scifact")[0]
    tests = sorted((q for q in test_task.queries if q.id in test_task.qrels), key=lambda q: int(q.id))
    tests = tests[: result["test_queries"]]
    first = first_stage("test", tests, test_task, result["k"])
    qrels = {q.id: test_task.qrels[q.id] for q in tests}
    chat = CachedChatModel(load_chat_model(result["llm"], batch_size=8), args.cache)
    out = {}
    for name, entry in result["rerankers"].items():
        normalize, alpha = entry["chosen_on_holdout"].split("/")
        fusion = FusionConfig(alpha=float(alpha), normalize=normalize)
        chat.misses = 0
        reranked = load_reranker(name, chat, **entry["options"], fusion=fusion).rerank(tests, first, test_task.corpus)
        a, b = ndcg_at_k(first, qrels, 10), ndcg_at_k(reranked, qrels, 10)
        diff = np.array([100 * (b[q.id] - a[q.id]) for q in tests])
        rng = np.random.default_rng(0)
        boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(10_000)]
        out[name] = {
            "chosen": entry["chosen_on_holdout"],
            "mean_difference": round(float(diff.mean()), 2),
            "bootstrap_95": [round(float(np.percentile(boot, 2.5)), 2), round(float(np.percentile(boot, 97.5)), 2)],
            "wins": int((diff > 1e-9).sum()),
            "ties": int((abs(diff) <= 1e-9).sum()),
            "losses": int((diff < -1e-9).sum()),
            "model_calls": chat.misses,
        }
        print(name, json.dumps(out[name]), flush=True)
    target = args.output or args.result.with_name(args.result.stem + "_paired.json")
    write_json(target, {"result": str(args.result), "paired_vs_first_stage": out})


def markdown(paths: list[Path]) -> str:
    lines = [
        "| LLM | reranker | α chosen on holdout | holdout nDCG@10 (first stage → chosen) | test nDCG@10 at chosen α | "
        "test first stage | test α=0 (rerank only) | test α=0.5 | s/query (test) |",
        "|:---|:---|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for path in paths:
        r = json.loads(path.read_text())
        for name, e in r.get("rerankers", {}).items():  # *_paired.json files hold no table rows
            f = e["test"]["fusion"]
            h = e["holdout"]["fusion"]
            cost = e["test"]["cost"]["seconds_per_query"]
            lines.append(
                f"| {r['label']} | {name} | {e['chosen_on_holdout']} | "
                f"{r['holdout_first_stage_ndcg10']:.1f} → {h[e['chosen_on_holdout']]:.1f} | "
                f"**{e['test_at_chosen']:.1f}** | {r['test_first_stage_ndcg10']:.1f} | {f['none/0.0']:.1f} | "
                f"{f['none/0.5']:.1f} | {cost if cost is not None else '-'} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="MiniLM top-100 training rows + the α holdout")
    prep.add_argument("--out", default="runs/lamra_rank/scifact")
    prep.add_argument("--top", type=int, default=100)
    prep.add_argument("--alpha-holdout", type=int, default=60)
    ev = sub.add_parser("eval", help="rerank holdout (choose α) and test")
    ev.add_argument("--llm", required=True)
    ev.add_argument("--label", required=True)
    ev.add_argument("--prepared", default="runs/lamra_rank/scifact")
    ev.add_argument("--rerankers", default="yes-no,listwise")
    ev.add_argument("--queries", type=int, default=100, help="first N judged test queries by id")
    ev.add_argument("--holdout-queries", type=int, default=60, help="first N of the α-holdout train queries")
    ev.add_argument("--k", type=int, default=20)
    ev.add_argument("--window", type=int, default=5)
    ev.add_argument("--max-words", type=int, default=64)
    ev.add_argument("--listwise-words", type=int, default=40)
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--cache", type=Path, default=Path("runs/lamra_rank/llm-cache.sqlite"))
    ev.add_argument("--output", type=Path)
    pa = sub.add_parser("paired", help="per-query wins/losses vs the first stage, bootstrap CI (cache only)")
    pa.add_argument("result", type=Path)
    pa.add_argument("--cache", type=Path, default=Path("runs/lamra_rank/llm-cache.sqlite"))
    pa.add_argument("--output", type=Path, help="default: RESULT_paired.json")
    md = sub.add_parser("markdown", help="the results table")
    md.add_argument("paths", type=Path, nargs="+")
    args = p.parse_args()
    if args.cmd == "prepare":
        prepare(args)
    elif args.cmd == "eval":
        evaluate(args)
    elif args.cmd == "paired":
        paired(args)
    else:
        print(markdown(args.paths))


if __name__ == "__main__":
    main()
