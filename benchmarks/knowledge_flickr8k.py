"""Action knowledge on Flickr8k training captions with an offline LLM: format-check pass rate, throughput, samples.

Takes the first caption of each of the first N train_4k images (N = ``--captions``), runs
:class:`~lumir.augment.knowledge.KnowledgeExtractor` (greedy, then up to ``--max-retries`` sampled retries per prompt)
and reports the share of captions whose triplets *and* states passed the format check, before and after retries,
captions/s, and ``--samples`` outputs verbatim so a reader can judge quality.

Usage:
    python benchmarks/knowledge_flickr8k.py --llm smollm2 --captions 200 \
        --output benchmarks/results/knowledge_smollm2.json
    python benchmarks/knowledge_flickr8k.py --llm qwen-coder --mode joint --captions 200 \
        --cache runs/bench/llm-cache-joint.sqlite --output benchmarks/results/knowledge_qwen_joint.json
    python benchmarks/knowledge_flickr8k.py --markdown benchmarks/results/knowledge_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lumir.augment.knowledge import KnowledgeExtractor
from lumir.config import versions, write_json
from lumir.data.flickr8k import load_flickr8k
from lumir.eval.tasks import default_data_root
from lumir.models.chat import CachedChatModel, load_chat_model


def captions(n: int, offset: int = 0) -> list[tuple[str, str]]:
    _, caps = load_flickr8k(default_data_root() / "flickr8k", "train_4k")
    out, seen = [], set()
    for c in caps:
        image = c.meta.get("image")
        if image in seen or not c.text:
            continue
        seen.add(image)
        out.append((c.id, c.text))
        if len(out) == offset + n:
            break
    return out[offset:]


def run(args: argparse.Namespace) -> dict[str, Any]:
    items = captions(args.captions, args.offset)
    chat = None if args.mode == "rules" else CachedChatModel(load_chat_model(args.llm, n_ctx=2048), args.cache)
    extractor = KnowledgeExtractor(chat, mode=args.mode, max_retries=args.max_retries)
    t0 = time.perf_counter()
    results: list[Any] = []
    for start in range(0, len(items), 8):
        results += extractor.extract(items[start : start + 8])
        print(f"{len(results)}/{len(items)} captions, {time.perf_counter() - t0:.0f} s", flush=True)
        if args.output and len(results) < len(items):  # partial results survive an interrupted run
            write_json(args.output, {**summarise(args, chat, results, time.perf_counter() - t0), "partial": True})
    return summarise(args, chat, results, time.perf_counter() - t0)


def summarise(args: argparse.Namespace, chat: Any, results: list[Any], seconds: float) -> dict[str, Any]:
    first_try = sum(1 for k in results if k.valid and not k.errors)
    return {
        "llm": args.llm,
        "mode": args.mode,
        "chat": chat.spec() if chat is not None else None,
        "offset": args.offset,
        "captions": len(results),
        "max_retries": args.max_retries,
        "valid_first_try": first_try,
        "valid_after_retries": sum(1 for k in results if k.valid),
        "q1_failed": sum(1 for k in results if not k.triplets),
        "triplets_per_caption": round(sum(len(k.triplets) for k in results) / max(1, len(results)), 2),
        "model_calls": sum(k.attempts for k in results),
        "seconds": round(seconds, 1),
        "captions_per_second": round(len(results) / seconds, 3) if chat is None or chat.misses else None,
        "cache_misses": chat.misses if chat is not None else None,
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],  # other jobs share the CPU
        "versions": versions("llama_cpp_python"),
        "samples": [json.loads(k.to_json()) for k in results[: args.samples]],
    }


def markdown(path: Path) -> str:
    r = json.loads(path.read_text())
    n = r["captions"]
    lines = [
        f"**{r['llm']}** ({r.get('mode', 'two-step')} mode), {n} Flickr8k train captions, "
        f"up to {r['max_retries']} retries: "
        f"{100 * r['valid_first_try'] / n:.0f} % pass the format check at the first try, "
        f"{100 * r['valid_after_retries'] / n:.0f} % after retries; {r['q1_failed']} captions got no triplet; "
        f"{r['triplets_per_caption']} triplets per caption; {r['model_calls']} model calls in {r['seconds']} s "
        f"({r['captions_per_second']} captions/s).",
        "",
        "| caption | triplets | action states | valid |",
        "|:---|:---|:---|:---:|",
    ]
    for s in r["samples"]:
        trip = "<br>".join(f"({', '.join(t)})" for t in s["triplets"]) or "—"
        states = "<br>".join(x or "✗" for x in s["states"]) or "—"
        lines.append(f"| {s['caption']} | {trip} | {states} | {'✓' if s['valid'] else '✗'} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm", default="smollm2")
    p.add_argument("--captions", type=int, default=200)
    p.add_argument("--offset", type=int, default=0, help="skip the first N captions (a prompt-design slice)")
    p.add_argument("--mode", default="two-step", choices=["two-step", "joint", "rules"], help="extractor mode")
    p.add_argument("--max-retries", type=int, default=2)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--cache", type=Path, default=Path("runs/bench/llm-cache.sqlite"))
    p.add_argument("--output", type=Path)
    p.add_argument("--markdown", type=Path)
    args = p.parse_args()
    if args.markdown:
        print(markdown(args.markdown))
        return
    result = run(args)
    if args.output:
        write_json(args.output, result)


if __name__ == "__main__":
    main()
