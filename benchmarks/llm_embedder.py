"""An LLM becomes an embedder (LamRA Table 5 in miniature): score an embedder on SciFact and Flickr8k caption→caption.

Tasks:

- ``scifact``: BEIR SciFact, nDCG@10 (and R@10) on the test qrels (300 queries, 5,183 abstracts), or on a holdout of
  the *train* queries (``--split holdout``: the last 100 train queries; a training source keeps them out with
  ``holdout: 100``);
- ``f8k-captions``: Flickr8k caption→caption retrieval on ``test_1k`` (or ``train_4k`` for a holdout): the first
  caption of each photo is a query, the other four captions of every photo are the pool (4,000 for test_1k), and
  the query photo's four other captions are its positives (R@1/5/10, nDCG@10).

Usage (results JSON under benchmarks/results/llm_embedder/)::

    python benchmarks/llm_embedder.py --embedder minilm --task scifact -o OUT.json
    python benchmarks/llm_embedder.py --embedder mllm:runs/embedder/f8k/model --task f8k-captions -o OUT.json

(the full commands of the BENCHMARKS.md rows are in ``benchmarks/llm_embedder.sh``).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path
from typing import Any

from lumir.collections import Corpus, RetrievalTask
from lumir.data.beir import load_beir
from lumir.data.flickr8k import load_flickr8k
from lumir.embed.factories import load_embedder
from lumir.eval import evaluate
from lumir.eval.tasks import default_data_root
from lumir.types import Query


def caption_task(split: str = "test_1k", limit: int | None = None) -> RetrievalTask:
    """Flickr8k caption→caption: caption #0 of each photo queries the other captions (#1–#4) of all photos."""
    _, captions = load_flickr8k(default_data_root() / "flickr8k", split)
    by_photo: dict[str, list[Any]] = {}
    for cap in captions:
        by_photo.setdefault(str(cap.meta["image"]), []).append(cap)
    photos = list(by_photo)[:limit] if limit else list(by_photo)
    queries, pool, qrels = [], [], {}
    for photo in photos:
        first, *rest = sorted(by_photo[photo], key=lambda c: c.id)
        queries.append(Query(first.id, text=first.text))
        pool.extend(rest)
        qrels[first.id] = {c.id: 1 for c in rest}
    return RetrievalTask(
        f"flickr8k-captions/{split}", queries, Corpus(pool), qrels, metrics=("R@1", "R@5", "R@10", "nDCG@10")
    )


def scifact_task(split: str, pool: int | None = None, seed: int = 0) -> RetrievalTask:
    """SciFact test, or a holdout of the last 100 train queries (``holdout``); with ``pool`` the corpus is cut to
    every abstract judged for the queries plus random others (seeded) up to ``pool`` abstracts — the same pool for
    every embedder, so rows compare, but an easier task than the full 5,183 abstracts."""
    root = default_data_root() / "beir-scifact"
    if split == "test":
        task = load_beir(root, "test")
    else:
        train = load_beir(root, "train")
        held = train.queries[-100:]
        task = RetrievalTask("beir/scifact-holdout", held, train.corpus, {q.id: train.qrels[q.id] for q in held})
    corpus, name = task.corpus, task.name
    if pool:
        judged = sorted({d for rel in task.qrels.values() for d in rel if d in task.corpus})
        others = [d for d in task.corpus.ids if d not in set(judged)]
        extra = random.Random(seed).sample(others, max(0, pool - len(judged)))
        keep = set(judged) | set(extra)
        corpus = Corpus([it for it in task.corpus if it.id in keep])
        name = f"{name}-pool{len(corpus)}"
    return RetrievalTask(name, task.queries, corpus, task.qrels, metrics=("nDCG@10", "R@10"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedder", required=True, help="embedder spec, e.g. minilm or mllm:PATH")
    parser.add_argument("--task", choices=["scifact", "f8k-captions"], required=True)
    parser.add_argument("--split", default="test", help="scifact: test|holdout; f8k-captions: test_1k|train_4k")
    parser.add_argument("--limit", type=int, default=None, help="f8k-captions: first N photos only")
    parser.add_argument("--pool", type=int, default=None, help="scifact: cut the corpus to N abstracts (see above)")
    parser.add_argument("--max-length", type=int, default=None, help="prompt-token limit of an mllm embedder")
    parser.add_argument("--chat", choices=["auto", "on", "off"], default="auto", help="mllm: chat template")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()

    if args.task == "scifact":
        task = scifact_task("test" if args.split == "test" else "holdout", args.pool)
    else:
        task = caption_task("test_1k" if args.split == "test" else args.split, args.limit)
    overrides: dict[str, Any] = {}
    if args.max_length and args.embedder.startswith("mllm"):
        overrides["max_length"] = args.max_length
    if args.chat != "auto" and args.embedder.startswith("mllm"):
        overrides["chat_template"] = args.chat == "on"
    embedder = load_embedder(args.embedder, **overrides)
    start = time.perf_counter()
    result = evaluate(embedder, [task], k=100)
    seconds = time.perf_counter() - start
    entry = dict(result)
    out = {
        "embedder": args.embedder,
        "embedder_spec": embedder.spec() if hasattr(embedder, "spec") else None,
        "task": task.name,
        "num_queries": len(task.queries),
        "num_candidates": len(task.corpus),
        "max_length": args.max_length,
        "chat": args.chat,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "result": entry,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    stages = entry["tasks"][task.name]["stages"]
    metrics = next(iter(stages.values()))["metrics"]  # the first (only) stage
    print(json.dumps({"task": task.name, "embedder": args.embedder, "metrics": metrics, "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
