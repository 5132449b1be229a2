"""What the CLI commands share: one error path, logging and quiet mode, queries from options, printing rankings."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import typer

from lumir.collections import Corpus, Rankings
from lumir.errors import LumirError
from lumir.types import ImageRef, Query

__all__ = ["CLI_ERRORS", "build_queries", "cli_errors", "configure_output", "fail", "print_rankings"]

CLI_ERRORS: tuple[type[BaseException], ...] = (LumirError, OSError, ValueError, ImportError, KeyError, TypeError)
"""What a command reports as ``error: ...`` with exit status 2 (anything else is a bug and keeps its traceback)."""


def message(err: BaseException) -> str:
    """The text to show for an error: its CLI wording when it has one (flags, not Python keyword arguments)."""
    cli = getattr(err, "cli_message", None)
    if cli:
        return str(cli)
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    return str(err)


def fail(err: BaseException | str) -> NoReturn:
    """Print ``error: ...`` on stderr and exit with status 2."""
    typer.secho(f"error: {err if isinstance(err, str) else message(err)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """The one error path of every command: expected errors become ``error: ...`` and exit status 2."""
    try:
        yield
    except CLI_ERRORS as err:
        fail(err)


class _Notice(logging.Formatter):
    """``warning: ...`` for lumir's warnings, plain lines for progress, ``LEVEL name: ...`` with ``--verbose``."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if self.verbose:
            return f"{record.levelname} {record.name}: {text}"
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def configure_output(*, verbose: bool, quiet: bool) -> None:
    """Logging for a command: warnings always, progress lines unless ``quiet``, details with ``verbose``."""
    from lumir.progress import set_quiet

    set_quiet(quiet)
    handler = logging.StreamHandler()
    handler.setFormatter(_Notice(verbose))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("lumir.progress").setLevel(logging.WARNING if quiet else logging.INFO)
    _silence_library_bars()


def _silence_library_bars() -> None:
    """transformers' own bars ("Loading weights") and info chatter stay out of lumir's output."""
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def build_queries(
    texts: Sequence[str], image: Path | None, queries_file: Path | None, instruction: str | None
) -> list[Query]:
    """Queries from ``--text`` (one each), ``--image`` (alone, or composed with a single ``--text``), or a file.

    Raises:
        ImageLoadError: the ``--image`` file cannot be decoded (checked before any model loads).
    """
    if queries_file is not None:
        from lumir.io.jsonl import read_queries

        return read_queries(queries_file)
    if image is not None:
        from lumir.io.images import load_image

        if not image.is_file():
            raise FileNotFoundError(f"query image not found: {image}")
        if len(texts) > 1:
            raise ValueError("a composed query takes one --text with --image")
        ref = ImageRef(image)
        load_image(ref, "--image")  # a corrupt or oversized image is refused now, not after loading the model
        return [Query("q1", text=texts[0] if texts else None, image=ref, instruction=instruction)]
    if not texts:
        raise ValueError("give a query: --text, --image, --text with --image, or --queries FILE")
    return [Query(f"q{i + 1}", text=t, instruction=instruction) for i, t in enumerate(texts)]


def print_rankings(queries: Sequence[Query], rankings: Rankings, corpus: Corpus, *, as_json: bool = False) -> None:
    """Print ranked results, one block per query (or JSON lines)."""
    by_id = {q.id: q for q in queries}
    for qid, hits in rankings:
        q = by_id[qid]
        if as_json:
            row: dict[str, object] = {"query": qid, "hits": [h._asdict() for h in hits]}
            if q.meta.get("rewrite"):
                row["rewritten"] = q.text
            typer.echo(json.dumps(row))
            continue
        label = " + ".join(p for p in (q.image.describe() if q.image else None, q.text) if p)
        typer.echo(f"\n{qid}: {label}")
        for h in hits:
            item = corpus.get(h.id)
            text = "" if item is None else (item.text or str(item.meta.get("caption", "")))
            where = "" if item is None or item.image is None else f" [{item.image.describe()}]"
            snippet = text if len(text) <= 90 else text[:87] + "..."
            typer.echo(f"  {h.rank:>3}. {h.score:7.4f}  {h.id}{where}  {snippet}")
