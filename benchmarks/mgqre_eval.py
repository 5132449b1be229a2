"""MGQRe Table 3 on lumir-mini / Flickr8k: text→image recall with a query rewriter in front of the retriever.

Splits: ``--split holdout`` is the last 500 photos of ``train_4k`` (never used to build pairs or train the
rewriter; every setting is chosen there); ``--split test`` is the official 1K test split, scored once per final
row. Queries: the first caption of each photo (``--captions first``, 1,000 test queries: rewriting all 5,000
with an LLM on 2 CPU cores costs hours per row) or all five (``--captions all``). The image→text task always
uses the standard protocol (each photo against all captions of the split); a rewriter leaves image queries as
they are, so it only moves with retrained heads (``--embedder mini:DIR``).

Writes the lumir-eval JSON (``--out``) plus ``samples``: 20 seeded (original → rewritten) queries with the rank of
their photo before and after, and the rewriter's cost per query.

Usage:
    python benchmarks/mgqre_eval.py --split test --name original --out benchmarks/results/mgqre/eval/test-original.json
    python benchmarks/mgqre_eval.py --split test --rewriter trained:runs/rewriter/sft/model \
        --name sft --out benchmarks/results/mgqre/eval/test-sft.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lumir.collections import RetrievalTask
from lumir.data.flickr8k import image_text_tasks, load_flickr8k
from lumir.embed.factories import load_embedder
from lumir.eval import evaluate
from lumir.eval.tasks import default_data_root
from lumir.pipeline import PipelineSpec
from lumir.retrieve.dense import DenseRetriever
from lumir.types import Query

HOLDOUT_FROM = 3500  # train_4k[3500:] is the holdout (mgqre_pairs.py builds pairs from train_4k[:3500])


def tasks(split: str, captions: str, limit: int | None = None) -> list[RetrievalTask]:
    root = default_data_root() / "flickr8k"
    if split == "test":
        images, caps = load_flickr8k(root, "test_1k")
    else:
        images, caps = load_flickr8k(root, "train_4k")
        images = images[HOLDOUT_FROM:]
        keep = {im.id for im in images}
        caps = [c for c in caps if c.meta["image"] in keep]
    queries = caps
    if captions == "first":
        seen: set[str] = set()
        queries = [c for c in caps if not (c.meta["image"] in seen or seen.add(c.meta["image"]))]  # type: ignore[func-returns-value]
    queries = queries[:limit] if limit else queries
    meta: dict[str, object] = {"source": "flickr8k", "split": split, "captions": captions, "limit": limit}
    t2i = image_text_tasks(f"flickr8k-{split}", images, queries, meta)[0]
    i2t = image_text_tasks(f"flickr8k-{split}", images, caps, meta)[1]
    return [t2i, i2t]


def samples(task: RetrievalTask, rewrites: dict[str, str | None], embedder: Any, n: int, seed: int) -> list[dict]:
    """``n`` seeded rewritten queries with the rank of their photo before and after rewriting."""
    changed = sorted(qid for qid, text in rewrites.items() if text)
    pick = random.Random(seed).sample(changed, min(n, len(changed)))
    retriever = DenseRetriever.from_corpus(task.corpus, embedder, candidate_modality="image")
    by_id = {q.id: q for q in task.queries}
    out = []
    for qid in pick:
        target = next(iter(task.qrels[qid]))
        ranks = []
        for text in (by_id[qid].text, rewrites[qid]):
            ids = [h.id for h in retriever.retrieve([Query("q", text=text)], k=len(task.corpus)).for_query("q")]
            ranks.append(ids.index(target) + 1)
        out.append(
            {
                "id": qid,
                "original": by_id[qid].text,
                "rewritten": rewrites[qid],
                "rank_before": ranks[0],
                "rank_after": ranks[1],
            }
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=["holdout", "test"], required=True)
    p.add_argument("--captions", choices=["first", "all"], default="first")
    p.add_argument("--limit", type=int, default=None, help="score only the first N text→image queries")
    p.add_argument("--rewriter", default=None, help="rewriter spec (llm:..., trained:PATH); none = original queries")
    p.add_argument("--embedder", default="mini")
    p.add_argument("--name", required=True)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    task_list = tasks(args.split, args.captions, args.limit)
    spec = PipelineSpec(embedder=args.embedder, rewriter=args.rewriter, k=100, name=args.name)
    t0 = time.perf_counter()
    result = evaluate(
        spec, task_list, config={"command": "benchmarks/mgqre_eval.py", "args": vars(args) | {"out": str(args.out)}}
    )
    seconds = time.perf_counter() - t0
    data = json.loads(json.dumps(dict(result), default=str))
    t2i = task_list[0]
    report = data["tasks"][t2i.name]
    rewrites = report.get("rewrites", {})
    data["samples"] = samples(t2i, rewrites, load_embedder(args.embedder), args.samples, 0) if rewrites else []
    data["wall_seconds"] = round(seconds, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(json.dumps({t.name: {m: result.score(t.name, m) for m in ("R@1", "R@5", "R@10")} for t in task_list}))


if __name__ == "__main__":
    main()
