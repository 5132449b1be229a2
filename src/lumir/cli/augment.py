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


@augment_app.command("captions")
def captions(
    source: Annotated[Path, typer.Argument(help="A Flickr8k folder, an image folder or a lumir jsonl file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="jsonl to append to (resumes if it exists).")],
    llm: Annotated[
        list[str], typer.Option("--llm", help="A model of the pool (repeatable): hf:VLM_FOLDER, smollm2, ...")
    ],
    mode: Annotated[
        str,
        typer.Option(help="caption (vision models look at the images) or paraphrase (text LLMs rewrite captions)."),
    ] = "caption",
    fmt: Annotated[str, typer.Option("--format", help="auto|jsonl|folder|flickr8k")] = "auto",
    split: Annotated[str, typer.Option(help="Flickr8k split.")] = "train_4k",
    limit: Annotated[int | None, typer.Option(help="Only the first N items.")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", "-T", help="T; default: the raw captions' mean length.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Items per model call.")] = 8,
    llm_cache: Annotated[Path | None, typer.Option(help="SQLite LLM cache.")] = None,
    no_llm_cache: Annotated[bool, typer.Option("--no-llm-cache", help="Do not use the LLM cache.")] = False,
) -> None:
    """Extra captions sheared to human length: MLLM captions of images, or LLM paraphrases of raw captions."""
    from lumir.augment.caption import CaptionParaphraser, MultiViewCaptioner, token_counter
    from lumir.augment.shearing import shearing_budget
    from lumir.data.sources import detect_format, load_corpus
    from lumir.models.chat import CachedChatModel, load_chat_model
    from lumir.rerank.registry import default_llm_cache
    from lumir.types import Item

    try:
        if mode not in ("caption", "paraphrase"):
            raise ValueError(f"--mode must be caption or paraphrase, got {mode!r}")
        if (fmt if fmt != "auto" else detect_format(source)) in ("flickr8k", "flickr8k-captions"):
            from lumir.data.flickr8k import load_flickr8k

            images, texts = load_flickr8k(source, split=split)  # photos to caption, raw captions for T
        else:
            corpus = load_corpus(source, fmt, split=split)
            images = [it for it in corpus if it.image is not None]
            texts = [it for it in corpus if it.text] or [  # image folders keep sidecar captions in meta
                Item(it.id, text=str(it.meta["caption"]), meta={**it.meta, "image": it.image.describe()})
                for it in images
                if it.image is not None and it.meta.get("caption")
            ]
        items = images if mode == "caption" else texts
        if limit is not None:
            items = items[:limit]
        if not items:
            raise ValueError(f"{source} holds no {'images' if mode == 'caption' else 'captions'} to work on")
        pool = {}
        for spec in llm:
            chat = load_chat_model(spec)
            pool[spec] = chat if no_llm_cache else CachedChatModel(chat, llm_cache or default_llm_cache())
        if max_new_tokens is None:
            if not texts:
                raise ValueError("no raw captions to measure T from; pass --max-new-tokens")
            first = pool[llm[0]]
            max_new_tokens = shearing_budget(
                [t.text or "" for t in texts], token_counter(getattr(first, "model", first))
            )
            typer.echo(f"T = {max_new_tokens} tokens (mean raw caption length, {llm[0]}'s tokenizer)", err=True)
        cls = MultiViewCaptioner if mode == "caption" else CaptionParaphraser
        counts = cls(pool, max_new_tokens=max_new_tokens, batch_size=batch_size).run(items, output)
    except (LumirError, OSError, ValueError, ImportError, KeyError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"{counts['done']} {mode}s -> {output} ({counts['cut']} sheared, {counts['incomplete']} incomplete, "
        f"{counts['skipped']} already there)"
    )
