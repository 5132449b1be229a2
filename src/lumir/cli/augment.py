"""``lumir augment ...``: LLM data augmentation jobs (action knowledge; captioning is still to come)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lumir.errors import LumirError

augment_app = typer.Typer(help="Enrich training data with LLMs (resumable, cached).", no_args_is_help=True)


@augment_app.command("knowledge")
def knowledge(
    source: Annotated[Path, typer.Argument(help="Captions: a lumir jsonl file or a Flickr8k folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="jsonl to append to (resumes if it exists).")],
    fmt: Annotated[str, typer.Option("--format", help="auto|jsonl|flickr8k-captions")] = "auto",
    split: Annotated[str, typer.Option(help="Flickr8k split (train_4k or test_1k).")] = "train_4k",
    limit: Annotated[int | None, typer.Option(help="Only the first N captions.")] = None,
    llm: Annotated[
        str, typer.Option("--llm", help="Chat model spec (smollm2, qwen-coder, gguf:PATH, ...).")
    ] = "smollm2",
    max_retries: Annotated[int, typer.Option(help="Sampled retries after a failed format check.")] = 2,
    batch_size: Annotated[int, typer.Option(help="Captions per batch (one append per batch).")] = 16,
    llm_cache: Annotated[
        Path | None, typer.Option(help="SQLite LLM cache (default $LUMIR_HOME/llm-cache.sqlite).")
    ] = None,
    no_llm_cache: Annotated[bool, typer.Option("--no-llm-cache", help="Do not use the LLM cache.")] = False,
) -> None:
    """Action triplets and action-state descriptions for each caption (action-aware prompt tuning §3.2)."""
    from lumir.augment.knowledge import KnowledgeExtractor
    from lumir.data.sources import load_corpus
    from lumir.models.chat import CachedChatModel, load_chat_model
    from lumir.rerank.registry import default_llm_cache

    try:
        if fmt == "auto" and source.is_dir():
            fmt = "flickr8k-captions"
        corpus = load_corpus(source, fmt, split=split)
        items = [(it.id, it.text) for it in corpus if it.text]
        if limit is not None:
            items = items[:limit]
        chat = load_chat_model(llm)
        if not no_llm_cache:
            chat = CachedChatModel(chat, llm_cache or default_llm_cache())
        counts = KnowledgeExtractor(chat, max_retries=max_retries).run(items, output, batch_size=batch_size)
    except (LumirError, OSError, ValueError, ImportError, KeyError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"{counts['done']} captions -> {output} ({counts['valid']} passed the format check; "
        f"{counts['skipped']} already there)"
    )
