"""Modality bias and its cure on lumir-mini: MM-Embed Table 2 in miniature, on the Flickr8k union pool.

MM-Embed (Lin et al. 2024, §4.1.1, §5.2, Table 2) finds that retrievers fine-tuned with random negatives on
instruction-prefixed queries over a pool of texts *and* images often return a relevant text when an image was asked
for (low modality accuracy M.A.@1), and that modality-aware hard negatives (type 1: wrong modality ranked above the
positive; type 2: desired modality ranked below k' = 45) cure it. Here, on lumir-mini (frozen MiniLM + EfficientNet
features, trained linear/MLP heads) and the Flickr8k union task (``flickr8k-union``: 1,000 test photos + 5,000
captions in one pool of 6,000; each query's own item excluded):

- ``a``: the shipped recipe (captions → photos only, no instructions), ``recipes/mini/flickr8k.yaml``;
- ``b``: ``M^rand``: the same heads trained on the union training set of ``train_4k`` (instructed captions asking for
  their photo, photos + instruction asking for each of their captions; candidates of both modalities) with random
  in-batch negatives (``data.union=true``);
- ``c``: ``M^hard``: like ``b`` from scratch, plus type 1 / type 2 negatives mined (:mod:`lumir.train.mining`) from
  the ``b`` model of the same seed's top-50 on the training union pool (``data.hard_negatives=FILE``).

Each run is one process (``run``), so its peak memory is its own; ``report`` aggregates. Test scores go through
lumir's evaluator on the ``flickr8k-union`` tasks (exclusion, M.A.@1) with vectors computed from cached features
exactly as ``MiniEmbedder`` embeds (checked once against ``lumir eval flickr8k-union --embedder mini``).

Usage::

    python benchmarks/mmembed_modality_bias.py run --variant b --seed 0 --holdout 1000 --set train.epochs=10
    python benchmarks/mmembed_modality_bias.py run --variant c --seed 0 [--holdout 1000] [--set ...]
    python benchmarks/mmembed_modality_bias.py report
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

from lumir.collections import Rankings
from lumir.config import versions, write_json
from lumir.data.flickr8k import load_flickr8k, union_image_text_tasks
from lumir.eval import evaluate
from lumir.eval.tasks import default_data_root
from lumir.models.mini import load_mini_heads
from lumir.train.features import cache_image_features, cache_text_features
from lumir.train.mini_union import UnionFeatures, instructed_features, union_embeddings, union_recall
from lumir.train.mining import MiningConfig, compute_rankings, mine_hard_negatives
from lumir.train.recipe import run_recipe
from lumir.types import Item, Modality, Role

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "mini" / "flickr8k.yaml"
CACHE = Path("runs/mini/features")
RUNS = Path("runs/mmembed")
RESULTS = REPO / "benchmarks" / "results" / "mmembed"
TRAIN_VIEWS = "original+mirror+zoom+zoom_mirror"
METRICS = [f"{d}_{m}" for d in ("t2i", "i2t") for m in ("R@1", "R@5", "R@10", "M.A.@1")]


class TableEmbedder:
    """Precomputed vectors by (role, item id): query and candidate with one id (a caption) differ by instruction."""

    modalities = frozenset(Modality)

    def __init__(self, vectors: dict[tuple[str, str], torch.Tensor], dim: int) -> None:
        self.vectors, self.dim = vectors, dim

    def embed(self, items: Sequence[Item], *, role: Role, batch_size: int = 32) -> torch.Tensor:
        if not items:
            return torch.zeros(0, self.dim)
        return torch.stack([self.vectors[(Role(role).value, it.id)] for it in items])

    def spec(self) -> dict[str, Any]:
        return {"type": "table"}


def split_features(split: str, n_photos: int | None = None) -> tuple[UnionFeatures, list[Item], list[Item], int]:
    """Cached union features of a split (optionally its first ``n_photos`` photos), its items, the mirror view."""
    images, captions = load_flickr8k(default_data_root() / "flickr8k", split)
    views = TRAIN_VIEWS if split == "train_4k" else "original+mirror"
    img = cache_image_features(images, CACHE / f"flickr8k-{split}-images-{views}", views=views.split("+"))
    txt = cache_text_features(captions, CACHE / f"flickr8k-{split}-captions")
    instructed, instruction = instructed_features(captions, CACHE, f"flickr8k-{split}-captions")
    position = {name: i for i, name in enumerate(img.ids)}
    feats = UnionFeatures(
        torch.from_numpy(np.array(img.features)),
        torch.from_numpy(np.array(txt.features[:, 0])),
        instructed,
        instruction,
        torch.tensor([position[c.meta["image"]] for c in captions]),
        [it.id for it in images],
        [c.id for c in captions],
    )
    if n_photos is not None:
        feats = feats.subset(n_photos)
        images = images[:n_photos]
        captions = [c for c in captions if position[c.meta["image"]] < n_photos]
    return feats, images, captions, img.views.index("mirror")


def table_embedder(heads: Any, feats: UnionFeatures, mirror_view: int) -> TableEmbedder:
    pool, t2i, i2t = union_embeddings(heads, feats, mirror_view)
    vectors: dict[tuple[str, str], torch.Tensor] = {}
    for i, cid in enumerate([*feats.photo_ids, *feats.caption_ids]):
        vectors[("candidate", cid)] = pool[i]
    for i, cid in enumerate(feats.caption_ids):
        vectors[("query", cid)] = t2i[i]
    for i, pid in enumerate(feats.photo_ids):
        vectors[("query", pid)] = i2t[i]
    return TableEmbedder(vectors, pool.shape[1])


def test_scores(model_dir: Path) -> dict[str, float]:
    """Union-pool test metrics (percent) through lumir's evaluator, plus the cached-feature check."""
    feats, images, captions, mirror = split_features("test_1k")
    heads = load_mini_heads(model_dir)
    tasks = union_image_text_tasks("flickr8k-union", images, captions)
    result = evaluate(table_embedder(heads, feats, mirror), tasks, k=10)
    out: dict[str, float] = {}
    for direction in ("t2i", "i2t"):
        metrics = result.task(f"flickr8k-union/{direction}")["stages"]["first_stage"]["metrics"]
        out.update({f"{direction}_{m}": round(100 * v, 2) for m, v in metrics.items()})
    out["check_union_recall"] = union_recall(heads, feats, mirror)  # type: ignore[assignment]
    return out


def mine_with(model_dir: Path, n_photos: int, output: Path, config: MiningConfig) -> dict[str, Any]:
    """Type 1 / type 2 negatives from ``model_dir``'s top-50 on the training union pool (first ``n_photos``)."""
    t0 = time.perf_counter()
    feats, images, captions, mirror = split_features("train_4k", n_photos)
    t2i, i2t = union_image_text_tasks("train-union", images, captions)
    embedder = table_embedder(load_mini_heads(model_dir), feats, mirror)
    queries, qrels, exclude = [*t2i.queries, *i2t.queries], {**t2i.qrels, **i2t.qrels}, {**t2i.exclude, **i2t.exclude}
    rankings, positive_scores = compute_rankings(
        embedder, queries, t2i.corpus, k=config.depth, exclude=exclude, qrels=qrels, chunk_size=4096
    )
    desired = {q.id: "image" for q in t2i.queries} | {q.id: "text" for q in i2t.queries}
    modalities = {it.id: it.modality for it in t2i.corpus}
    records = mine_hard_negatives(rankings, qrels, modalities, desired, config, output=output, exclude=exclude,
                                  positive_scores=positive_scores)  # fmt: skip
    stats: dict[str, Any] = {"queries": len(records), "seconds": round(time.perf_counter() - t0, 1)}
    for direction, task in (("t2i", t2i), ("i2t", i2t)):
        ids = {q.id for q in task.queries}
        mine = [r for r in records if r["query_id"] in ids]
        stats[direction] = {
            "mean_type1": round(statistics.fmean(r["candidates"]["type1"] for r in mine), 2),
            "mean_type2": round(statistics.fmean(r["candidates"]["type2"] for r in mine), 2),
            "no_type1": sum(1 for r in mine if not r["candidates"]["type1"]),
            "top1_wrong_modality": _top1_wrong(rankings.select(sorted(ids)), modalities, desired),
        }
    return stats


def _top1_wrong(rankings: Rankings, modalities: dict[str, Modality], desired: dict[str, str]) -> float:
    wrong = [modalities[hits[0].id].value != desired[qid] for qid, hits in rankings if hits]
    return round(100 * sum(wrong) / max(1, len(wrong)), 2)


def run(args: argparse.Namespace) -> None:
    name = f"{args.variant}-s{args.seed}" + (f"-h{args.holdout}" if args.holdout else "") + (args.tag or "")
    out_dir = RUNS / name
    overrides = [f"train.seed={args.seed}", f"output_dir={out_dir}", f"data.holdout={args.holdout}", *args.set]
    record: dict[str, Any] = {"name": name, "variant": args.variant, "seed": args.seed, "holdout": args.holdout}
    if args.variant in ("b", "c"):
        overrides.append("data.union=true")
    if args.variant == "c":
        base = RUNS / (f"b-s{args.seed}" + (f"-h{args.holdout}" if args.holdout else "") + (args.base_tag or ""))
        if not (base / "model" / "config.json").is_file():
            raise SystemExit(f"train the b model first: {base}")
        config = MiningConfig(n=args.negatives, seed=args.seed)
        negatives = base / f"negatives-n{args.negatives}.jsonl"
        record["mining"] = {"from": str(base), "config": config.to_dict(),
                            **mine_with(base / "model", 4000 - args.holdout, negatives, config)}  # fmt: skip
        overrides.append(f"data.hard_negatives={negatives}")
    record["overrides"] = overrides
    result = run_recipe(RECIPE, overrides, resume=False, show_progress=False)
    s = result.summary
    record["training"] = {
        "steps": s.steps,
        "epochs": s.epochs,
        "seconds": s.seconds,
        "s_per_step": round(s.seconds / max(1, s.steps), 4),
        "final_loss": s.final_loss,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.holdout:
        record["validation"] = result.validation
        if args.variant == "a":  # the plain recipe validates caption→photo only: add the union view
            feats, _, _, mirror = split_features("train_4k")
            held = feats.subset(4000 - args.holdout, first=False)
            union = union_recall(load_mini_heads(result.model_dir), held, mirror)
            record["validation"].update({f"val_{k}": v for k, v in union.items()})
    else:
        record["test"] = test_scores(result.model_dir)
    record["versions"] = versions()
    write_json(RESULTS / f"{name}.json", record)
    print(json.dumps({k: v for k, v in record.items() if k != "versions"}, indent=1))


def report(args: argparse.Namespace) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*-s[0-9].json"))]
    summary: dict[str, Any] = {}
    lines = ["| model | seeds | " + " | ".join(METRICS) + " | s/step | steps | peak RSS MiB |",
             "|:---|---:|" + "---:|" * (len(METRICS) + 3)]  # fmt: skip
    for variant in ("a", "b", "c"):
        mine = [r for r in rows if r["variant"] == variant and "test" in r]
        if not mine:
            continue
        values = {m: [r["test"][m] for r in mine] for m in METRICS}
        stats = {m: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for m, v in values.items()}
        cost = {k: statistics.fmean(r["training"][k] for r in mine) for k in ("s_per_step", "steps", "peak_rss_mib")}
        summary[variant] = {"seeds": [r["seed"] for r in mine], "metrics": stats, "cost": cost,
                            "per_seed": {r["seed"]: r["test"] for r in mine}}  # fmt: skip
        cells = " | ".join(f"{m:.1f} ± {sd:.1f}" for m, sd in stats.values())
        lines.append(f"| {variant} | {len(mine)} | {cells} | {cost['s_per_step']:.3f} | {cost['steps']:.0f} | "
                     f"{cost['peak_rss_mib']:.0f} |")  # fmt: skip
    write_json(RESULTS / "summary.json", {"summary": summary, "versions": versions()})
    print("\n".join(lines))


def main() -> None:
    torch.set_num_threads(int(os.environ.get("LUMIR_THREADS", "2")))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train (and for c: mine) one model, then score it")
    r.add_argument("--variant", choices=["a", "b", "c"], required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--holdout", type=int, default=0, help="photos of train_4k kept out (validation instead of test)")
    r.add_argument("--negatives", type=int, default=4, help="mined negatives per query (c)")
    r.add_argument("--set", action="append", default=[], help="recipe override, e.g. train.epochs=10")
    r.add_argument("--tag", default="", help="suffix of the run name (settings searched on the holdout)")
    r.add_argument("--base-tag", default="", help="tag of the b run that c mines with")
    sub.add_parser("report", help="aggregate the test rows into a table and summary.json")
    args = parser.parse_args()
    run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
