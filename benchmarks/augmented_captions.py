"""Statistics of LLM-rewritten Flickr8k captions: shearing, copies of the raw caption, nouns and lengths.

Reads the records of ``lumir augment captions --mode paraphrase`` (LaCLIP-style rewrites of raw captions by text
LLMs, not image captions) and writes, under ``--output``:

- ``report.md``, ``stats.json``, ``nouns.png``, ``lengths.png`` — :func:`lumir.augment.stats.write_caption_report`
  over the raw source captions and each model's sheared captions (MLLM-augmented captions Figures 3–4);
- ``summary.json`` — per model: shearing shares, the share of rewrites that equal their raw caption (ignoring case,
  spaces and punctuation), and the share of records training uses.

Usage:
    python benchmarks/augmented_captions.py runs/aug/flickr8k-train_4k-paraphrase.jsonl \
        --output benchmarks/results/augmented_captions
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lumir.augment.stats import shearing_summary, write_caption_report
from lumir.config import versions, write_json
from lumir.data.flickr8k import load_flickr8k
from lumir.eval.tasks import default_data_root


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=None, help="folder holding flickr8k/")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/augmented_captions"))
    args = parser.parse_args()
    _, captions = load_flickr8k((args.data or default_data_root()) / "flickr8k", "train_4k")
    raw = {c.id: c.text or "" for c in captions}
    records = [json.loads(line) for path in args.records for line in path.read_text().splitlines() if line.strip()]
    sources = sorted({r["source_id"] for r in records})
    groups: dict[str, list[str]] = {"raw": [raw[s] for s in sources]}
    copies: dict[str, dict[str, Any]] = {}
    for rec in records:
        name = f"{rec['model']} ({rec['kind']})"
        if rec["text"].strip():
            groups.setdefault(name, []).append(rec["text"])
        c = copies.setdefault(name, {"records": 0, "copies": 0, "usable_copies": 0})
        same = _norm(rec["text"]) == _norm(raw[rec["source_id"]])
        c["records"] += 1
        c["copies"] += same
        c["usable_copies"] += same and rec["complete"] and bool(rec["text"].strip())
    write_caption_report(
        groups, args.output, top=20, source={"records": [str(p) for p in args.records]}, records=records
    )
    shearing = shearing_summary(records)
    summary = {
        name: {
            **shearing[name],
            "copy_share": round(c["copies"] / c["records"], 4),
            "usable_copy_share": round(c["usable_copies"] / c["records"], 4),
        }
        for name, c in copies.items()
    }
    write_json(args.output / "summary.json", {"sources": len(sources), "models": summary, "versions": versions()})
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
