"""``lumir rewrite``: rewrite a file of queries with any rewriter spec and write what each became."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lumir.cli.run import cli_errors
from lumir.types import Query


def read_query_file(path: Path) -> list[Query]:
    """Queries from a lumir jsonl file, or from a ``.txt`` file with one query per line (ids ``q1``, ``q2``, ...;
    blank lines skipped)."""
    if path.suffix.lower() == ".txt":
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        return [Query(f"q{i + 1}", text=t) for i, t in enumerate(t for t in lines if t)]
    from lumir.io.jsonl import read_queries

    return read_queries(path)


def rewrite(
    queries: Annotated[Path, typer.Argument(help="Queries: a lumir jsonl file, or a .txt file with one per line.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="jsonl to write: id, text, original, fallback.")],
    rewriter: Annotated[
        str,
        typer.Option(
            "--rewriter",
            "-r",
            help="Rewriter spec: llm:smollm2, llm:qwen-coder, trained:RUN_DIR, 'template:a photo of {text}' "
            "(`lumir list rewriter`).",
        ),
    ],
    batch_size: Annotated[int | None, typer.Option(help="Queries per model call.", min=1)] = None,
    llm_cache: Annotated[
        Path | None,
        typer.Option("--llm-cache", help="SQLite cache of LLM calls (default $LUMIR_HOME/llm-cache.sqlite)."),
    ] = None,
    no_llm_cache: Annotated[bool, typer.Option("--no-llm-cache", help="Do not read or write the LLM cache.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Rewrite queries (MGQRe's rewriting stage alone) and write each query's new text beside the original."""
    from lumir.config import atomic_write_text
    from lumir.pipeline import PipelineSpec, load_stages
    from lumir.registry import REWRITERS

    with cli_errors():
        if llm_cache is not None and no_llm_cache:
            raise ValueError("give --llm-cache PATH or --no-llm-cache, not both")
        if output.exists() and not overwrite:
            raise FileExistsError(f"{output} already exists; pass --overwrite to replace it")
        if not queries.is_file():
            raise FileNotFoundError(f"queries file not found: {queries}")
        spec: dict[str, Any] = REWRITERS.normalize(rewriter)  # a typo fails before anything loads
        if batch_size is not None:
            spec["batch_size"] = batch_size
        qs = read_query_file(queries)
        cache = "none" if no_llm_cache else ("default" if llm_cache is None else str(llm_cache))
        stage = load_stages(PipelineSpec(rewriter=spec, llm_cache=cache)).rewriter
        assert stage is not None
        start = time.perf_counter()
        out = stage.rewrite(qs)
        seconds = time.perf_counter() - start
        if [q.id for q in out] != [q.id for q in qs]:
            raise ValueError("the rewriter must return one query per input query, with the same ids, in order")
        rows = []
        for before, after in zip(qs, out, strict=True):
            record = after.meta.get("rewrite") or {}
            rows.append({"id": after.id, "text": after.text, "original": before.text,
                         "fallback": record.get("fallback")})  # fmt: skip
        atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    fallbacks: dict[str, int] = {}
    for r in rows:
        if r["fallback"]:
            fallbacks[r["fallback"]] = fallbacks.get(r["fallback"], 0) + 1
    changed = sum(1 for r in rows if r["text"] != r["original"])
    typer.echo(f"{len(rows)} queries -> {output}: {changed} rewritten, {sum(fallbacks.values())} kept the original")
    if fallbacks:
        typer.echo("fallbacks: " + ", ".join(f"{k} {v}" for k, v in sorted(fallbacks.items())))
    line = f"{1000 * seconds / max(1, len(rows)):.1f} ms per query"
    from lumir.rewrite.base import LLMRewriter

    if isinstance(stage, LLMRewriter):
        line += f"; {stage.last_stats.model_calls} model calls"
    typer.echo(line)
