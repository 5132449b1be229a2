"""``lumir augment ...``: LLM data augmentation jobs (extra captions, action knowledge) and caption statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lumir.cli.run import CLI_ERRORS, fail
from lumir.types import Item


def _chat_model(spec: str, cache: Path | None, no_cache: bool) -> Any:
    """Load a ChatModel by spec, wrapped in the on-disk LLM cache unless ``no_cache``."""
    from lumir.models.chat.cache import default_llm_cache, resolve_chat_model

    return resolve_chat_model(spec, None if no_cache else cache or default_llm_cache())


def first_per_image(captions: list[Item], n: int) -> list[Item]:
    """The first ``n`` captions of each photo (``meta["image"]``), in input order."""
    if n < 1:
        raise ValueError(f"--per-image must be >= 1, got {n}")
    seen: dict[str, int] = {}
    out = []
    for it in captions:
        photo = str(it.meta.get("image", it.id))
        seen[photo] = seen.get(photo, 0) + 1
        if seen[photo] <= n:
            out.append(it)
    return out


def _decoding_option(values: list[str], llms: list[str]) -> dict[str, str]:
    """``--decoding`` values (``PRESET`` for every model, ``LLM=PRESET`` for one) -> model spec -> preset name."""
    out: dict[str, str] = {}
    for value in values:
        spec, sep, preset = value.rpartition("=")
        if not sep:
            out.update(dict.fromkeys(llms, value))
        elif spec not in llms:
            raise ValueError(f"--decoding {value!r} names {spec!r}, which is not one of the --llm models {llms}")
        else:
            out[spec] = preset
    return out


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
    mode: Annotated[
        str,
        typer.Option(
            help="two-step (Q1, then one Q2 call per triplet), joint (one call per caption for triplets and states; "
            "faster) or rules (no LLM: word-rule triplets, no states; Table 2's hand-crafted ablation)."
        ),
    ] = "two-step",
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

    try:
        if fmt == "auto" and source.is_dir():
            fmt = "flickr8k-captions"
        corpus = load_corpus(source, fmt, split=split)
        items = [(it.id, it.text) for it in corpus if it.text]
        if limit is not None:
            items = items[:limit]
        from lumir.augment.knowledge import MODES

        if mode not in MODES:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
        chat = None if mode == "rules" else _chat_model(llm, llm_cache, no_llm_cache)
        extractor = KnowledgeExtractor(chat, mode=mode, max_retries=max_retries)
        counts = extractor.run(items, output, batch_size=batch_size, progress=mode != "rules")
    except CLI_ERRORS as err:
        fail(err)
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
    per_image: Annotated[
        int | None, typer.Option("--per-image", help="paraphrase mode: only the first N raw captions of each photo.")
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", "-T", help="One cap for every model (overrides --budget).")
    ] = None,
    budget: Annotated[
        str,
        typer.Option(
            help="T: each model's cap is the raw captions' mean length in its own tokens (§3.4); "
            "paper: the fixed 30 new tokens of §4.1 / Table 10."
        ),
    ] = "T",
    decoding: Annotated[
        list[str] | None,
        typer.Option(
            help="Decoding (repeatable): PRESET for every model or LLM=PRESET for one; presets: greedy (default), "
            "minigpt4, otter, qwen-vl, llava-1.5 (MLLM-augmented captions Table 10)."
        ),
    ] = None,
    shear_rule: Annotated[
        str, typer.Option(help="appendix (§7.1: first substring over 5 characters ending with a period) or clause.")
    ] = "appendix",
    batch_size: Annotated[int, typer.Option(help="Items per model call.")] = 8,
    llm_cache: Annotated[Path | None, typer.Option(help="SQLite LLM cache.")] = None,
    no_llm_cache: Annotated[bool, typer.Option("--no-llm-cache", help="Do not use the LLM cache.")] = False,
) -> None:
    """Extra captions sheared to human length: MLLM captions of images, or LLM paraphrases of raw captions."""
    from lumir.augment.caption import CaptionParaphraser, MultiViewCaptioner, caption_budgets
    from lumir.augment.decoding import PAPER_MAX_NEW_TOKENS
    from lumir.data.sources import detect_format, load_corpus

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
        if per_image is not None and mode == "paraphrase":
            items = first_per_image(items, per_image)
        if limit is not None:
            items = items[:limit]
        if not items:
            raise ValueError(f"{source} holds no {'images' if mode == 'caption' else 'captions'} to work on")
        if budget not in ("T", "paper"):
            raise ValueError(f"--budget must be T or paper, got {budget!r}")
        pool = {spec: _chat_model(spec, llm_cache, no_llm_cache) for spec in llm}
        caps: int | dict[str, int]
        if max_new_tokens is not None:
            caps = max_new_tokens
        elif budget == "paper":
            caps = PAPER_MAX_NEW_TOKENS
            typer.echo(f"T = {caps} tokens for every model (MLLM-augmented captions §4.1, Table 10)", err=True)
        else:
            if not texts:
                raise ValueError("no raw captions to measure T from; pass --max-new-tokens or --budget paper")
            caps = caption_budgets(pool, [t.text or "" for t in texts])
            for spec, cap in caps.items():
                typer.echo(f"T = {cap} tokens for {spec} (mean raw caption length in its own tokens)", err=True)
        cls = MultiViewCaptioner if mode == "caption" else CaptionParaphraser
        counts = cls(
            pool,
            max_new_tokens=caps,
            batch_size=batch_size,
            decoding=_decoding_option(decoding or [], llm),
            shear_rule=shear_rule,
        ).run(items, output)
    except CLI_ERRORS as err:
        fail(err)
    typer.echo(
        f"{counts['done']} {mode}s -> {output} ({counts['cut']} sheared, {counts['incomplete']} incomplete, "
        f"{counts['skipped']} already there)"
    )


@augment_app.command("stats")
def stats(
    records: Annotated[list[Path], typer.Argument(help="Caption jsonl files from `lumir augment captions`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for report.md, stats.json and PNGs.")],
    raw: Annotated[
        Path | None, typer.Option(help="A Flickr8k folder or lumir jsonl whose captions form the 'raw' group.")
    ] = None,
    split: Annotated[str, typer.Option(help="Flickr8k split of --raw.")] = "train_4k",
    field: Annotated[str, typer.Option(help="text (sheared captions) or raw (generations before shearing).")] = "text",
    top: Annotated[int, typer.Option(help="Nouns per source.")] = 20,
) -> None:
    """Frequent nouns and caption lengths per captioning model and for the raw captions (paper Figures 3-4)."""
    import json

    from lumir.augment.stats import groups_from_records, write_caption_report
    from lumir.data.sources import load_corpus
    from lumir.errors import DataFormatError

    try:
        if field not in ("text", "raw"):
            raise ValueError(f"--field must be text or raw, got {field!r}")
        groups: dict[str, list[str]] = {}
        all_records: list[dict[str, Any]] = []
        if raw is not None:
            fmt = "flickr8k-captions" if raw.is_dir() else "auto"
            groups["raw"] = [str(it.text) for it in load_corpus(raw, fmt, split=split) if it.text]
        for path in records:
            lines = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    try:
                        lines.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise DataFormatError(f"not JSON ({err})", path=path, line=n) from err
            all_records.extend(lines)
            for name, texts in groups_from_records(lines, field_name=field, path=path).items():
                groups.setdefault(name, []).extend(texts)
        if not groups:
            raise ValueError("no captions: give caption jsonl files and/or --raw")
        result = write_caption_report(
            groups,
            output,
            top=top,
            source={"records": [str(p) for p in records], "raw": str(raw), "field": field},
            records=all_records,
        )
    except CLI_ERRORS as err:
        fail(err)
    for s in result.values():
        typer.echo(
            f"{s.name}: {s.captions} captions, mean {s.mean_length} words, top nouns "
            + ", ".join(w for w, _ in s.top_nouns[:5])
        )
    typer.echo(f"report -> {output / 'report.md'}")
