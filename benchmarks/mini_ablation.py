"""lumir-mini design ablations on a training-split holdout (the test split is never read).

Each variant is the shipped recipe (``recipes/mini/flickr8k.yaml``) with some ``--set``-style overrides, trained on
the first 3,000 photos of ``train_4k`` and scored on the last 1,000 (5,000 captions), which mimics the size of the
1K test protocol. Frozen features are cached once under ``runs/mini/features`` and shared by all variants.

Usage:
    python benchmarks/mini_ablation.py --output benchmarks/results/mini_ablation.md
    python benchmarks/mini_ablation.py --only base,linear_head
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from lumir.config import versions
from lumir.train.recipe import run_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "mini" / "flickr8k.yaml"

VARIANTS: dict[str, list[str]] = {
    "base": [],
    "no_zoom_views": ["features.views=[original,mirror]"],
    "linear_image_head": ["model.image_head.kind=linear"],
    "head_features_only": ["model.image_head.parts=[head]"],
    "all_stages": ["model.image_head.parts=[head,stage0,stage1,stage2,stage3,stage4,stage5,stage6]"],
    "image_dropout_0.5": ["model.image_head.input_dropout=0.5"],
    "image_dropout_0.8": ["model.image_head.input_dropout=0.8"],
    "text_dropout_0.3": ["model.text_head.input_dropout=0.3"],
    "no_mirror": ["model.mirror=false", "features.views=[original]"],
    "fixed_tau_0.07": ["train.temperature=0.07", "train.learnable_temperature=false"],
    "mlp_text_head": ["model.text_head.kind=mlp"],
    "dim_512": ["model.dim=512"],
    "hidden_1024": ["model.image_head.hidden=1024"],
    "epochs_15": ["train.epochs=15"],
    "epochs_20": ["train.epochs=20"],
    "epochs_60": ["train.epochs=60"],
    "batch_512": ["train.batch_size=512"],
    "batch_2048": ["train.batch_size=2048"],
    "weight_decay_0.3": ["train.weight_decay=0.3"],
    "lr_0.002": ["train.lr=0.002"],
    "dim_128": ["model.dim=128"],
    "gem_and_max_features": [
        "model.image_head.parts=[head,stage3,stage4,stage5,stage6,head_gem,stage5_max,stage6_max]"
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="write the markdown table here too")
    parser.add_argument("--only", default=None, help="comma-separated variant names")
    parser.add_argument("--holdout", type=int, default=1000)
    parser.add_argument("--data", type=Path, default=None, help="folder holding flickr8k/")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(VARIANTS)
    rows = []
    for name in names:
        overrides = [f"data.holdout={args.holdout}", f"output_dir=runs/mini/ablation/{name}", *VARIANTS[name]]
        t0 = time.perf_counter()
        result = run_recipe(RECIPE, overrides, data=args.data, resume=False, show_progress=False)
        v = result.validation
        rows.append(
            f"| {name} | `{' '.join(VARIANTS[name]) or '-'}` | {v['val_t2i_R@1']:.1f} | {v['val_t2i_R@5']:.1f} | "
            f"{v['val_i2t_R@1']:.1f} | {v['val_i2t_R@5']:.1f} | **{v['val_rsum']:.1f}** | "
            f"{result.summary.seconds:.0f} |"
        )
        print(rows[-1], f"({time.perf_counter() - t0:.0f} s with feature loading)", flush=True)
    table = "\n".join(
        [
            f"holdout: last {args.holdout} photos of train_4k; versions: {versions()}",
            "",
            "| variant | overrides | T→I R@1 | T→I R@5 | I→T R@1 | I→T R@5 | Rsum | train s |",
            "|:---|:---|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    print(table)
    if args.output:
        args.output.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
