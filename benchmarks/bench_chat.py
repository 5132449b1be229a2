"""ChatModel scoring throughput: batched vs one pair per forward pass, and the LLM cache's hit speedup.

Pairs are (query, candidate) True/False prompts as the pointwise rerankers build them:

1. the tiny LLaVA (``lumir.testing.tiny.build_tiny_llava``) on image candidates: batch 16 vs batch 1;
2. SmolLM2-135M-Instruct (the offline GGUF) on BEIR SciFact claim/abstract pairs (abstracts cut to 64 words):
   through llama.cpp (one sequence per forward pass by construction; with and without KV prefix reuse) and through
   transformers (the GGUF dequantised to float32): batch 8 vs batch 1;
3. a cold vs warm :class:`~lumir.models.chat.cache.CachedChatModel` over the llama.cpp model.

Usage:
    python benchmarks/bench_chat.py --output benchmarks/results/chat_speed.md
    python benchmarks/bench_chat.py --pairs 8            # quick run
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image

from lumir.config import atomic_write_text, versions
from lumir.eval.tasks import load_tasks
from lumir.models.chat import CachedChatModel, load_chat_model
from lumir.models.chat.hf import TransformersChatModel
from lumir.rerank import TrueFalseReranker
from lumir.testing.tiny import build_tiny_llava
from lumir.types import ImageRef, Item, Query

TOKENS = ("False", "True")


def rate(n: int, fn: Callable[[], Any], repeats: int = 1) -> float:
    """Pairs per second of ``fn`` (best of ``repeats``, after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def vlm_pairs(n: int) -> list[Any]:
    rng = np.random.default_rng(0)
    reranker = TrueFalseReranker(object())  # only renders prompts here
    out = []
    for i in range(n):
        img = Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8))
        q = Query(f"q{i}", text="a red dog on the square", task="mscoco_task0")
        out.append(reranker.conversation(q, Item(f"c{i}", image=ImageRef(img))))
    return out


def scifact_pairs(n: int) -> list[Any]:
    task = load_tasks("scifact")[0]
    reranker = TrueFalseReranker(object(), max_words=64)
    queries = sorted(task.queries, key=lambda q: int(q.id))[: max(1, n // 4)]
    out = []
    for q in queries:
        for cid in list(task.qrels.get(q.id, {}))[:1] + task.corpus.ids[:3]:
            out.append(reranker.conversation(q, task.corpus[cid]))
    return out[:n]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--output", type=Path)
    args = p.parse_args()
    torch.set_num_threads(2)
    rows: list[tuple[str, str, float]] = []

    llava = TransformersChatModel(*build_tiny_llava(seed=0))
    convs = vlm_pairs(max(args.pairs, 16))
    for bs in (16, 1):
        rows.append(
            (
                "tiny LLaVA (21k params)",
                f"transformers, batch {bs}",
                rate(len(convs), lambda bs=bs: llava.token_logprobs(convs, TOKENS, batch_size=bs), 3),
            )
        )

    pairs = scifact_pairs(args.pairs)
    for reuse in (True, False):
        gguf = load_chat_model("smollm2", n_ctx=2048, reuse_prefix=reuse)
        label = "llama.cpp, 1 pair per pass" + (", KV prefix reuse" if reuse else "")
        rows.append(
            ("SmolLM2-135M GGUF (Q4_1)", label, rate(len(pairs), lambda g=gguf: g.token_logprobs(pairs, TOKENS)))
        )
    hf = load_chat_model("smollm2@transformers")
    for bs in (8, 1):
        rows.append(
            (
                "SmolLM2-135M GGUF (Q4_1)",
                f"transformers fp32 (dequantised), batch {bs}",
                rate(len(pairs), lambda bs=bs: hf.token_logprobs(pairs, TOKENS, batch_size=bs)),
            )
        )

    gguf = load_chat_model("smollm2", n_ctx=2048)
    with tempfile.TemporaryDirectory() as tmp:
        cached = CachedChatModel(gguf, Path(tmp) / "c.sqlite")
        t0 = time.perf_counter()
        cached.token_logprobs(pairs, TOKENS)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        cached.token_logprobs(pairs, TOKENS)
        warm = time.perf_counter() - t0
    rows.append(("SmolLM2-135M GGUF (Q4_1)", "LLM cache, cold (all misses)", len(pairs) / cold))
    rows.append(
        ("SmolLM2-135M GGUF (Q4_1)", f"LLM cache, warm (all hits): {cold / warm:.0f}x faster", len(pairs) / warm)
    )

    lines = [
        f"Pairs: {len(convs)} tiny-VLM image pairs; {len(pairs)} SciFact claim/abstract pairs (64-word abstracts).",
        f"Machine: {os.cpu_count()} CPU threads; versions: {versions('llama_cpp_python')}.",
        "",
        "| model | how | pairs/s |",
        "|:---|:---|---:|",
        *[f"| {m} | {how} | {r:.2f} |" for m, how, r in rows],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        atomic_write_text(
            args.output,
            "# ChatModel scoring throughput\n\nCommand: `python benchmarks/bench_chat.py"
            f" --pairs {args.pairs} --output {args.output}`\n\n" + text,
        )


if __name__ == "__main__":
    main()
