"""Progress reporting that reads well on a terminal and in a log file.

- On a terminal (stderr is a TTY): a tqdm bar.
- Anywhere else (a log file, CI, a pipe): no bar and no cursor codes — a plain line through the ``lumir.progress``
  logger at most every :data:`LOG_EVERY_SECONDS` seconds, and one when the job ends.
- Nested jobs (embedding inside an index build) show only the outermost bar.
- :func:`set_quiet` (the CLI's ``--quiet``, or ``LUMIR_QUIET=1``) turns all of it off.

Example:
    >>> with progress(total=3, desc="demo", enabled=False) as bar:
    ...     for _ in range(3):
    ...         bar.update(1)
    >>> bar.n
    3
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["LOG_EVERY_SECONDS", "Progress", "is_quiet", "progress", "set_quiet", "track"]

logger = logging.getLogger("lumir.progress")

LOG_EVERY_SECONDS = 30.0
"""Without a terminal, a progress line is logged at most this often (plus one at the end)."""

T = TypeVar("T")

_state = {"quiet": os.environ.get("LUMIR_QUIET", "") not in ("", "0"), "depth": 0}


def set_quiet(quiet: bool = True) -> None:
    """Silence (or restore) every progress bar and progress line of this process."""
    _state["quiet"] = bool(quiet)


def is_quiet() -> bool:
    """Whether :func:`set_quiet` is in effect."""
    return bool(_state["quiet"])


def _terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress counter: a tqdm bar on a terminal, rare log lines elsewhere, nothing when disabled or nested.

    Use :func:`progress` to make one.
    """

    def __init__(self, total: int | None, desc: str, unit: str, initial: int, show: bool) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self._outer = _state["depth"] == 0
        self._show = show and self._outer and not is_quiet()
        self._bar: Any = None
        self._last = time.monotonic()
        self._closed = False
        self._postfix = ""
        _state["depth"] += 1
        if self._show and _terminal():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, leave=False)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._show and not self._finished() and time.monotonic() - self._last >= LOG_EVERY_SECONDS:
            self._last = time.monotonic()
            logger.info("%s: %s", self.desc, self._count())

    def _finished(self) -> bool:
        return bool(self.total) and self.n >= int(self.total or 0)  # the closing line will say it

    def set_postfix(self, **values: Any) -> None:
        """Extra values shown after the count (e.g. ``loss``)."""
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def _count(self) -> str:
        done = (
            f"{self.n} {self.unit}"
            if not self.total
            else f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"
        )
        return f"{done}; {self._postfix}" if self._postfix else done

    def close(self) -> None:
        """End the job (logs a final line when no bar was shown)."""
        if self._closed:
            return
        self._closed = True
        _state["depth"] -= 1
        if self._bar is not None:
            self._bar.close()
        elif self._show and self.n:
            logger.info("%s: %s, done", self.desc, self._count())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def progress(
    *, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0, enabled: bool | None = True
) -> Progress:
    """A :class:`Progress` for a job of ``total`` units; ``enabled=False`` counts silently."""
    return Progress(total, desc, unit, initial, enabled is not False)


def track(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
          enabled: bool | None = True) -> Iterator[T]:  # fmt: skip
    """Iterate ``iterable`` while counting it with :func:`progress`."""
    with progress(total=total, desc=desc, unit=unit, enabled=enabled) as bar:
        for item in iterable:
            yield item
            bar.update(1)
