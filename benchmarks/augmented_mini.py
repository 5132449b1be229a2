"""lumir-mini retrained on raw + LLM-rewritten captions (epochs scaled by 1/k) versus raw only, same seeds.

MLLM-augmented captions §4: train on the raw captions plus the sheared generated ones, with the epoch count scaled
by 1/k so that training costs what the raw baseline costs. Here the extra captions are LLM *paraphrases* of raw
captions (``lumir augment captions --mode paraphrase``; no captioning MLLM exists offline), so this measures the
LaCLIP-style sibling, not the paper's image captions.

For each seed both variants train from ``recipes/mini/flickr8k.yaml`` (``train.seed=S``; the augmented variant adds
``data.augmented=FILES``) and are scored on the Flickr8k official 1K test split with the standard protocol from
cached test features (the same frozen towers and heads that ``lumir eval flickr8k --embedder mini:DIR`` runs; the
seed-0 raw model is the shipped one, whose ``lumir eval`` figures are in BENCHMARKS.md).

Usage (each ``--variant NAME=FILE[,FILE...]`` adds the records of those files; each ``--control
NAME=KEY=VALUE[;...]`` trains on raw captions with recipe overrides; ``raw`` is always trained):
    python benchmarks/augmented_mini.py --variant raw+smollm2=runs/aug/smollm2.jsonl \
        --variant raw+smollm2+qwen=runs/aug/smollm2.jsonl,runs/aug/qwen.jsonl --seeds 0,1,2
    python benchmarks/augmented_mini.py --control raw-18ep=train.epochs=18 --control raw-16ep=train.epochs=16 \
        --output benchmarks/results/augmented_mini_controls.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

from lumir.config import versions, write_json
from lumir.data.flickr8k import load_flickr8k
from lumir.eval.tasks import default_data_root
from lumir.models.mini import load_mini_heads
from lumir.train.features import cache_image_features, cache_text_features
from lumir.train.mini import embed_cached_features, image_text_recall
from lumir.train.recipe import run_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "mini" / "flickr8k.yaml"
METRICS = ("t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10", "rsum")


def test_features(data: Path, cache_dir: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, captions = load_flickr8k(data / "flickr8k", "test_1k")
    img = cache_image_features(
        images, cache_dir / "flickr8k-test_1k-images-original+mirror", views=["original", "mirror"]
    )
    txt = cache_text_features(captions, cache_dir / "flickr8k-test_1k-captions")
    position = {name: i for i, name in enumerate(img.ids)}
    positives = torch.tensor([position[c.meta["image"]] for c in captions])
    return torch.from_numpy(np.array(img.features)), torch.from_numpy(np.array(txt.features[:, 0])), positives


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=FILE[,FILE...] (repeatable)")
    parser.add_argument(
        "--control",
        action="append",
        default=[],
        help="NAME=KEY=VALUE[;KEY=VALUE...]: raw captions with recipe overrides, e.g. raw-18ep=train.epochs=18",
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", type=Path, default=None, help="folder holding flickr8k/")
    parser.add_argument("--runs", type=Path, default=Path("runs/mini/augmented"))
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "augmented_mini.json")
    args = parser.parse_args()
    data = args.data or default_data_root()
    imgs, txts, positives = test_features(data, Path("runs/mini/features"))
    variants: dict[str, list[str]] = {"raw": []}
    for spec in args.variant:
        name, sep, files = spec.partition("=")
        if not sep or not files:
            parser.error(f"--variant {spec!r} must look like NAME=FILE[,FILE...]")
        variants[name] = [f"data.augmented=[{files}]"]
    for spec in args.control:
        name, sep, sets = spec.partition("=")
        if not sep or "=" not in sets:
            parser.error(f"--control {spec!r} must look like NAME=KEY=VALUE[;KEY=VALUE...]")
        variants[name] = sets.split(";")
    if len(variants) == 1:
        parser.error("give at least one --variant or --control")
    rows: list[dict[str, Any]] = []
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        for variant, extra in variants.items():
            overrides = [f"train.seed={seed}", f"output_dir={args.runs / f'{variant}-seed{seed}'}", *extra]
            t0 = time.perf_counter()
            result = run_recipe(RECIPE, overrides, data=data, show_progress=False)
            heads = load_mini_heads(result.model_dir)
            img, txt = embed_cached_features(heads, imgs, txts, mirror_view=1)
            aug = heads.meta.get("augmentation", {})
            row = {
                "seed": seed,
                "variant": variant,
                **image_text_recall(img, txt, positives),
                "epochs": result.summary.epochs,
                "steps": result.summary.steps,
                "train_seconds": result.summary.seconds,
                "pairs": aug.get("pairs", aug.get("raw_pairs")),
                "k": aug.get("k", 1.0),
                "by_model": aug.get("by_model", {}),
            }
            rows.append(row)
            print(row, f"({time.perf_counter() - t0:.0f} s)", flush=True)
    summary: dict[str, Any] = {}
    deltas: dict[str, Any] = {}
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant]
        summary[variant] = {
            m: {
                "mean": round(statistics.fmean(r[m] for r in mine), 2),
                "std": round(statistics.stdev(r[m] for r in mine), 2) if len(mine) > 1 else 0.0,
            }
            for m in METRICS
        }
        base = [r for r in rows if r["variant"] == "raw"]
        if variant != "raw":
            deltas[variant] = {m: [round(b[m] - a[m], 2) for a, b in zip(base, mine, strict=True)] for m in METRICS}
    write_json(
        args.output,
        {
            "variants": variants,
            "seeds": seeds,
            "rows": rows,
            "summary": summary,
            "per_seed_delta": deltas,
            "versions": versions(),
        },
    )
    print(summary, deltas)


if __name__ == "__main__":
    main()
