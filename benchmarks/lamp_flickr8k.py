"""LAMP on lumir-mini (lumir's adaptation): Flickr8k top-20 action-aware re-scoring and the ablations of the
action-aware prompt tuning paper's Tables 2, 3 and 5.

Each variant is the recipe ``recipes/prompt_tuning/lamp_mini.yaml`` with overrides (:data:`VARIANTS`), trained on
``train_4k`` with its last 500 photos held out (one caption per photo: the first with knowledge); settings are
compared on that holdout (the recipe's per-epoch ``val_*`` re-scoring recall). ``test`` scores a trained variant
once on the Flickr8k 1K test split:

- text→image: the first caption of each of the 1,000 test photos as the query, over the 1,000 photos;
- image→text: the 1,000 photos as queries over the captions that have knowledge (``--captions first``: those same
  1,000 first captions; ``all``: all 5,000 when their knowledge exists), a hit if any of the photo's captions is
  within K;
- the first stage (lumir-mini) on exactly the same queries and pool, and the re-scoring cost per query (cached
  backbone inputs; the photos' EfficientNet pass is the first stage's and is cached as for indexing).

Usage::

    python benchmarks/lamp_flickr8k.py train --variant full [--set train.stage1_epochs=2 ...]
    python benchmarks/lamp_flickr8k.py test --variant full --knowledge runs/lamp/knowledge/test_1k_first.jsonl
    python benchmarks/lamp_flickr8k.py report
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from lumir.config import versions, write_json
from lumir.data.flickr8k import load_flickr8k
from lumir.data.knowledge import KnowledgeStore
from lumir.eval.tasks import default_data_root
from lumir.models.action_model import ActionAwareModel
from lumir.train.prompt_tuning_recipe import cache_image_inputs, cache_name, rescored_recall, select_captions
from lumir.train.recipe import apply_overrides, load_recipe, run_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "prompt_tuning" / "lamp_mini.yaml"
RESULTS = REPO / "benchmarks" / "results" / "lamp"
VARIANTS: dict[str, list[str]] = {
    "full": [],
    "no_knowledge": ["model.prompt.use_triplets=false", "model.prompt.use_states=false", "data.knowledge=rules"],
    "triplets_only": ["model.prompt.use_states=false"],
    "states_only": ["model.prompt.use_triplets=false"],
    "handcrafted": ["model.prompt.triplet_source=handcrafted", "model.prompt.use_states=false"],
    "rules": ["data.knowledge=rules", "model.prompt.use_states=false"],
    "cat": ["model.prompt.interaction=cat"],
    "one_stage": ["train.schedule=one-stage"],
    "combined": ["train.schedule=combined"],
}
"""Table 2: triplets only, hand-crafted triplets, states only, both (+Vis = full); Table 3: w/o knowledge, AIM → CAT;
Table 5: one-stage, combined; ``rules``: rule-based triplets, no LLM at all."""
LABELS = {
    "first_stage": "lumir-mini first stage",
    "full": "LAMP-mini: triplets + states + Vis, AIM, two-stage",
    "no_knowledge": "w/o action knowledge (visual prompts only)",
    "triplets_only": "action triplets only",
    "states_only": "action states only",
    "handcrafted": "hand-crafted triplet template only",
    "rules": "rule-based triplets (no LLM)",
    "cat": "AIM replaced by CAT",
    "one_stage": "one-stage training",
    "combined": "combined training",
}


def run_dir(variant: str, tag: str = "") -> Path:
    return Path("runs/lamp") / f"{variant}{tag}"


def train(args: argparse.Namespace) -> None:
    overrides = [*VARIANTS[args.variant], *(args.set or [])]
    recipe = apply_overrides(load_recipe(RECIPE), overrides)
    out = run_dir(args.variant, args.tag)
    result = run_recipe(recipe, output_dir=out, show_progress=True)
    print(json.dumps(result["epochs"][-1]))


def _embed_texts(model: ActionAwareModel, texts: list[str]) -> torch.Tensor:
    return torch.cat([model.caption_embeddings(texts[s : s + 256]) for s in range(0, len(texts), 256)])


def test(args: argparse.Namespace) -> None:
    out = run_dir(args.variant, args.tag)
    model = ActionAwareModel.load(out / "model")
    images, captions = load_flickr8k(default_data_root(None) / "flickr8k", "test_1k")
    rules = model.meta.get("recipe", {}).get("data", {}).get("knowledge") == "rules"
    store = None if rules or not model.config.uses_knowledge else KnowledgeStore(args.knowledge)
    pool = [c for c in captions if c.id.endswith("#0")] if args.captions == "first" else captions
    chosen, knowledge = select_captions(pool, store)
    if len(chosen) < len(pool):
        raise SystemExit(
            f"{len(pool) - len(chosen)} of {len(pool)} test captions have no knowledge in {args.knowledge}"
        )
    inputs = cache_image_inputs(model, images, Path("runs/lamp/cache") / cache_name(model, "test_1k"))
    position = {it.id: i for i, it in enumerate(images)}
    image_of = torch.tensor([position[str(c.meta["image"])] for c in chosen])
    texts = _embed_texts(model, [c.text or "" for c in chosen])
    kb = model.knowledge(knowledge) if model.config.uses_knowledge else None
    # t2i: the first captions as queries over all photos; i2t: the photos over all chosen captions
    q = torch.tensor([c.id.endswith("#0") for c in chosen]).nonzero().flatten()
    q_kb = kb.index(q) if kb is not None else None
    t2i_args = (model, inputs, q_kb, texts[q], image_of[q])
    i2t_args = (model, inputs, kb, texts, image_of)
    base = rescored_recall(*t2i_args, directions=("t2i",), first_stage_only=True)
    base.update(rescored_recall(*i2t_args, directions=("i2t",), first_stage_only=True))
    t0 = time.perf_counter()
    t2i = rescored_recall(*t2i_args, directions=("t2i",))
    t2i_s, t0 = time.perf_counter() - t0, time.perf_counter()
    i2t = rescored_recall(*i2t_args, directions=("i2t",))
    i2t_s = time.perf_counter() - t0
    result = {
        "variant": args.variant,
        "label": LABELS.get(args.variant, args.variant),
        "tag": args.tag,
        "queries": {
            "t2i": int(q.numel()),
            "t2i_query_set": "first caption (#0) of each test_1k photo, over the 1,000 photos",
            "i2t": len(images),
            "i2t_captions": len(chosen),
        },
        "first_stage": {**base, "rsum": round(sum(base.values()), 2)},
        "rescored": {**t2i, **i2t, "rsum": round(sum(t2i.values()) + sum(i2t.values()), 2)},
        "ms_per_query": {"t2i": round(1000 * t2i_s / q.numel(), 2), "i2t": round(1000 * i2t_s / len(images), 2)},
        "k": 20,
        "model": str(out / "model"),
        "train": json.loads((out / "result.json").read_text())["epochs"],
        "knowledge": "rules" if rules else [str(p) for p in args.knowledge] if store is not None else None,
        "versions": versions(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{args.variant}{args.tag}.json", result)
    print(json.dumps({k: result[k] for k in ("first_stage", "rescored", "ms_per_query")}))


def _row(label: str, scores: dict[str, float], keys: list[str], cost: dict[str, float] | None = None) -> str:
    cells = [f"{scores[k]:.1f}" for k in keys] + [f"{scores['rsum']:.1f}"]
    cells += [f"{cost['t2i']:.1f}", f"{cost['i2t']:.1f}"] if cost else ["", ""]
    return f"| {label} | " + " | ".join(cells) + " |"


def report(args: argparse.Namespace) -> None:
    keys = [f"{d}_R@{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)]
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    if not rows:
        raise SystemExit(f"no results under {RESULTS}")
    header = "| model | " + " | ".join(keys) + " | Rsum | ms/query t2i | ms/query i2t |"
    lines = [header, "|:---|" + "---:|" * (len(keys) + 3), _row(LABELS["first_stage"], rows[0]["first_stage"], keys)]
    order = list(VARIANTS)
    for r in sorted(rows, key=lambda r: order.index(r["variant"]) if r["variant"] in order else 99):
        lines.append(_row(r["label"] + r["tag"], r["rescored"], keys, r["ms_per_query"]))
    print("\n".join(lines))
    for r in rows:
        val = [e for e in r["train"] if "val_t2i_R@1" in e]
        if val:
            rsum = sum(val[-1][f"val_{k}"] for k in keys)
            print(f"{r['variant']}{r['tag']}: holdout re-scored Rsum after training {rsum:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--variant", choices=list(VARIANTS), required=True)
    t.add_argument("--set", action="append")
    t.add_argument("--tag", default="")
    e = sub.add_parser("test")
    e.add_argument("--variant", required=True)
    e.add_argument("--tag", default="")
    e.add_argument("--knowledge", nargs="+", type=Path, default=[Path("runs/lamp/knowledge/test_1k_first.jsonl")])
    e.add_argument("--captions", choices=["first", "all"], default="first")
    sub.add_parser("report")
    args = p.parse_args()
    {"train": train, "test": test, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
