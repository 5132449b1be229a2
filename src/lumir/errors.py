"""Exceptions raised by lumir. Every message says what went wrong and what to do about it."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

E = TypeVar("E", bound=BaseException)


def with_cli_message(err: E, message: str) -> E:
    """Attach the command-line wording of an error (naming CLI flags, not Python keyword arguments).

    The library raises ``err`` with its Python wording; the ``lumir`` CLI prints ``message`` instead.
    """
    err.cli_message = message  # type: ignore[attr-defined]
    return err


class LumirError(Exception):
    """Base class of every error lumir raises on purpose."""


class DataFormatError(LumirError, ValueError):
    """A data file is malformed; the message names the file and, where known, the line."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
        self.path = None if path is None else Path(path)
        self.line = line


class ImageLoadError(LumirError, OSError):
    """An image could not be read or decoded; the message names the item and the source."""


class LLMCacheError(DataFormatError):
    """The on-disk LLM cache is not a lumir cache, is damaged or cannot be used; the message names the file and
    what to do (move it away, use another cache file, or run without the cache)."""


class OutputLockedError(LumirError, OSError):
    """Another job is writing to the same output file; the message names the file and its lock."""


class ModalityError(LumirError, ValueError):
    """A component was given a modality it cannot handle."""


class DimensionMismatchError(LumirError, ValueError):
    """Vectors of one dimension were given to something built for another."""


class IncompatibleIndexError(LumirError, ValueError):
    """An index directory was written by an incompatible lumir version or is incomplete."""


class ModelNotFoundError(LumirError, OSError):
    """A model could not be found locally (lumir never downloads at run time)."""


class ChatModelError(LumirError, RuntimeError):
    """A language model call failed; the message says which model and why."""


class ChatEndpointError(ChatModelError):
    """An HTTP model server could not be reached or kept failing; the message names the endpoint."""

    def __init__(self, message: str, *, endpoint: str) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint


class PromptTooLongError(ChatModelError, ValueError):
    """A rendered prompt does not fit the model's context window."""

    def __init__(self, message: str, *, tokens: int | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.tokens = tokens
        self.limit = limit
