"""Text-shearing statistics: T (mean raw-caption length in each generator's tokens) and how often generations get cut.

1. T on Flickr8k (train_4k, test_1k) and on the COCO 5K / Flickr30K 1K Karpathy test captions in
   ``../shared/data/karpathy-captions``, in words and in the tokens of each offline LLM (llama.cpp tokenizers);
2. with ``--paraphrase N``: N Flickr8k train captions paraphrased by each LLM at its own T
   (:class:`~lumir.augment.caption.CaptionParaphraser`, LaCLIP-style — text only, not image captions), and the
   share of outputs that shearing cut, that hit the T cap, and that ended incomplete or empty.

Usage:
    python benchmarks/shearing_stats.py --paraphrase 100 --output benchmarks/results/shearing_stats.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lumir.augment.caption import CaptionParaphraser, token_counter
from lumir.augment.shearing import DEFAULT_SHEAR_RULE, SHEAR_RULES, shearing_budget
from lumir.config import write_json
from lumir.data.flickr8k import load_flickr8k
from lumir.eval.tasks import default_data_root
from lumir.models.chat import CachedChatModel, load_chat_model

LLMS = ("smollm2", "qwen-coder")


def caption_sets() -> dict[str, list[str]]:
    root = default_data_root()
    out = {}
    for split in ("train_4k", "test_1k"):
        _, caps = load_flickr8k(root / "flickr8k", split)
        out[f"flickr8k/{split}"] = [c.text or "" for c in caps]
    for name, file in (
        ("coco/karpathy_test_5k", "coco_karpathy_test_5k.json"),
        ("flickr30k/karpathy_test_1k", "flickr30k_karpathy_test_1k.json"),
    ):
        rows = json.loads((root / "karpathy-captions" / file).read_text())
        out[name] = [c for r in rows for c in (r["caption"] if isinstance(r["caption"], list) else [r["caption"]])]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paraphrase", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path("runs/bench/llm-cache.sqlite"))
    p.add_argument("--output", type=Path)
    p.add_argument(
        "--shear-rule", choices=SHEAR_RULES, default=DEFAULT_SHEAR_RULE, help="§7.1 appendix or §3.4 clause"
    )
    args = p.parse_args()
    sets = caption_sets()
    models = {name: load_chat_model(name, n_ctx=1024) for name in LLMS}
    result: dict[str, Any] = {"T": {}, "paraphrase": {}, "shear_rule": args.shear_rule}
    for set_name, caps in sets.items():
        row = {"captions": len(caps), "words": shearing_budget(caps, lambda s: len(s.split()))}
        row["mean_words"] = round(statistics.mean(len(c.split()) for c in caps), 2)
        for name, model in models.items():
            row[name] = shearing_budget(caps, token_counter(model))
        result["T"][set_name] = row
        print(set_name, row, flush=True)
    if args.paraphrase:
        _, caps = load_flickr8k(default_data_root() / "flickr8k", "train_4k")
        items = caps[: args.paraphrase]
        for name, model in models.items():
            t = result["T"]["flickr8k/train_4k"][name]
            recs = CaptionParaphraser(
                {name: CachedChatModel(model, args.cache)}, max_new_tokens=t, shear_rule=args.shear_rule
            ).records(items, name)
            count = token_counter(model)
            n = len(recs)
            result["paraphrase"][name] = {
                "T": t,
                "n": n,
                "cut_share": round(sum(r["cut"] for r in recs) / n, 3),
                "hit_cap_share": round(sum(count(r["raw"]) >= t for r in recs) / n, 3),
                "incomplete_share": round(sum(not r["complete"] for r in recs) / n, 3),
                "empty_share": round(sum(not r["text"] for r in recs) / n, 3),
                "mean_words_kept": round(statistics.mean(len(r["text"].split()) for r in recs), 2),
                "samples": [
                    {"raw_caption": it.text, "generated": r["raw"], "sheared": r["text"]}
                    for it, r in zip(items[:8], recs[:8], strict=True)
                ],
            }
            print(name, {k: v for k, v in result["paraphrase"][name].items() if k != "samples"}, flush=True)
    if args.output:
        write_json(args.output, result)


if __name__ == "__main__":
    main()
