"""Small helpers for self-describing artifacts: version stamps and atomic JSON/YAML writes."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "atomic_writer",
    "current_umask",
    "lumir_version",
    "read_json",
    "read_yaml_mapping",
    "versions",
    "write_json",
]


def lumir_version() -> str:
    """The installed lumir version (``0+unknown`` when running from an uninstalled tree)."""
    try:
        return metadata.version("lumir")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def versions(*extra: str) -> dict[str, str]:
    """Versions of lumir, Python and the libraries that shape results, for artifact stamps."""
    out = {"lumir": lumir_version(), "python": platform.python_version()}
    for dist in ("torch", "transformers", "numpy", *extra):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write by any means; it replaces ``path`` when the block succeeds.

    Readers see the old content or the complete new one, never a part; on an exception the temporary file is
    removed and ``path`` is untouched. The new file gets the usual permissions (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o666 & ~current_umask())  # mkstemp creates 0600
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[str]]:
    """Open a text file for writing atomically (see :func:`atomic_path`).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_writer(p) as fh:
        ...     _ = fh.write("done\\n")
        >>> p.read_text()
        'done\\n'
    """
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def current_umask() -> int:
    """The process umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically: readers see the old or the new content, never a torn one."""
    with atomic_writer(path) as fh:
        fh.write(text)


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Atomically write pretty JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object, naming the file in any error."""
    from lumir.errors import DataFormatError

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"invalid JSON: {err.msg}", path=path, line=err.lineno) from err
    if not isinstance(data, dict):
        raise DataFormatError("expected a JSON object", path=path)
    return data


def read_yaml_mapping(path: str | Path, *, what: str) -> dict[str, Any]:
    """Read a YAML (or JSON) file holding a mapping, naming the file (and line) in any error.

    Args:
        path: the file.
        what: what the file is, for messages (``"recipe"``, ``"pipeline file"``).

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: invalid YAML, or not a mapping.
    """
    import yaml

    from lumir.errors import DataFormatError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        raise DataFormatError(f"invalid YAML: {err}", path=path, line=line) from err
    if not isinstance(data, dict):
        raise DataFormatError(f"a {what} holds a YAML mapping, got {type(data).__name__}", path=path)
    return data
