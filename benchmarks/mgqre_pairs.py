"""MGQRe §3.1 on Flickr8k: challenge–response pairs from lumir-mini's weaknesses, built by an offline LLM.

Training data only. ``train_4k`` is split into a construction pool (its first 3,500 photos, 17,500 captions) and
a holdout (the last 500 photos, never used here; the rewriter benchmarks choose settings on it). A seeded sample
of ``--queries`` captions of the pool is ranked by lumir-mini against the 3,500 pool photos; top-1 is high quality.
The agent (default Qwen2.5-Coder-0.5B) sees photos in caption-proxy mode: the ground truth as two of its *other*
captions, each wrong candidate as two of its captions. Records are appended per query (resumable: rerun the same
command); ``--export`` writes D_SFT/D_PRO and statistics.

Usage (one strategy per run; Table 2 runs the three on the same queries):
    python benchmarks/mgqre_pairs.py --strategy challenge --queries 300 --out benchmarks/results/mgqre/pairs
    python benchmarks/mgqre_pairs.py --strategy feedback --queries 300 --limit 100 --out benchmarks/results/mgqre/pairs
    python benchmarks/mgqre_pairs.py --strategy challenge --out benchmarks/results/mgqre/pairs --export
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lumir.collections import Corpus
from lumir.config import versions
from lumir.data.flickr8k import load_flickr8k
from lumir.embed.factories import load_embedder
from lumir.eval.tasks import default_data_root
from lumir.models.chat.cache import default_llm_cache, resolve_chat_model
from lumir.retrieve.dense import DenseRetriever
from lumir.rewrite.construct import ConstructionConfig, PairBuilder, config_dict, export_datasets
from lumir.types import Query, Role

POOL_PHOTOS = 3500  # train_4k[:3500] builds pairs; train_4k[3500:] is the holdout


def pool(seed: int, n: int) -> tuple[Corpus, list[Query], dict[str, str], dict[str, list[str]]]:
    images, captions = load_flickr8k(default_data_root() / "flickr8k", "train_4k")
    photos = images[:POOL_PHOTOS]
    keep = {p.id for p in photos}
    caps = [c for c in captions if c.meta["image"] in keep]
    by_image: dict[str, list[str]] = {}
    for c in caps:
        by_image.setdefault(c.meta["image"], []).append(c.text or "")
    sample = random.Random(seed).sample(caps, n)
    queries = [Query(c.id, text=c.text) for c in sample]
    return Corpus(photos), queries, {c.id: c.meta["image"] for c in sample}, by_image


def pool_retriever(corpus: Corpus, cache: Path) -> DenseRetriever:
    """lumir-mini over the pool photos; the photo vectors are cached in ``cache`` (a .pt file) across runs."""
    import torch

    from lumir.index import FlatIndex

    embedder = load_embedder("mini")
    if cache.is_file():
        vectors = torch.load(cache)
    else:
        vectors = embedder.embed(list(corpus), role=Role.CANDIDATE, batch_size=64)
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(vectors, cache)
    index = FlatIndex(embedder.dim)
    index.add(vectors)
    return DenseRetriever(embedder, index, corpus, candidate_modality="image")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategy", default="challenge", choices=["challenge", "feedback", "direct"])
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--limit", type=int, default=None, help="use only the first N of the --queries sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--llm", default="qwen-coder")
    p.add_argument("--max-turns", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/mgqre/pairs"))
    p.add_argument("--export", action="store_true", help="only export D_SFT/D_PRO + stats from the records")
    args = p.parse_args()
    tag = args.strategy + (f"-first{args.limit}" if args.limit else "")
    records = args.out / f"{tag}.records.jsonl"
    if args.export:
        stats = export_datasets(records, args.out / tag)
        print(json.dumps(stats, indent=2))
        return
    corpus, queries, targets, by_image = pool(args.seed, args.queries)
    queries = queries[: args.limit] if args.limit else queries
    t0 = time.perf_counter()
    retriever = pool_retriever(corpus, Path("benchmarks/results/mgqre/cache/pool_mini_vectors.pt"))
    embedder = retriever.embedder
    print(f"indexed {len(corpus)} pool photos in {time.perf_counter() - t0:.0f} s", flush=True)
    chat = resolve_chat_model(args.llm, default_llm_cache())
    config = ConstructionConfig(strategy=args.strategy, image_mode="caption", max_turns=args.max_turns)
    builder = PairBuilder(retriever, chat, corpus, config, similarity=load_embedder("minilm"), captions=by_image)
    manifest = {
        "config": config_dict(config),
        "llm": chat.spec(),
        "queries": len(queries),
        "seed": args.seed,
        "sample": args.queries,
        "limit": args.limit,
        "pool_photos": POOL_PHOTOS,
        "retriever": embedder.spec(),
        "versions": versions("llama_cpp_python"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{tag}.manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    counts = builder.run(queries, targets, records)
    print(json.dumps(counts), f"{time.perf_counter() - t0:.0f} s", flush=True)
    print(json.dumps(export_datasets(records, args.out / tag), indent=2))


if __name__ == "__main__":
    main()
