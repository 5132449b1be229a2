"""An exclusive, non-blocking lock on an output file, so two jobs never append to the same file at once.

Two ``lumir augment`` jobs appending to one jsonl would each skip only the records that were there when they
started, and the file would end up with every record twice. :func:`output_lock` makes the second job refuse at
once instead, naming the file and the process that holds it.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "captions.jsonl"
    >>> with output_lock(out):
    ...     with output_lock(out):  # doctest: +ELLIPSIS
    ...         pass
    Traceback (most recent call last):
    ...
    lumir.errors.OutputLockedError: ...captions.jsonl is being written by another job (process ...)...
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from lumir.errors import OutputLockedError

__all__ = ["lock_path", "output_lock"]

logger = logging.getLogger(__name__)


def lock_path(path: str | Path) -> Path:
    """The lock file of ``path``: ``<path>.lock`` beside it (it exists only while a job holds the lock)."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextmanager
def output_lock(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``<path>.lock`` (``fcntl.flock``, never waiting) while writing ``path``.

    The lock belongs to the open file, so it is released when the job ends, even by a crash; the lock file is
    removed on a clean exit. Another process, or another ``output_lock`` of the same file in this process, is
    refused. Where ``fcntl`` does not exist (Windows) nothing is locked.

    Yields:
        The lock file's path.

    Raises:
        OutputLockedError: another job holds the lock; the message names ``path`` and the other process id.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        logger.debug("no fcntl: %s is written without a lock", path)
        yield lock_path(path)
        return
    path = Path(path)
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = lock.open("a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise OutputLockedError(
                f"{path} is being written by another job (process {holder}, which holds {lock}): wait for it to "
                "finish, or write to another file"
            ) from None
        try:
            same = os.fstat(fh.fileno()).st_ino == lock.stat().st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()  # the previous holder removed the file between our open and our lock: take the new one
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield lock
    finally:
        with suppress(FileNotFoundError):
            lock.unlink()
        fh.close()
