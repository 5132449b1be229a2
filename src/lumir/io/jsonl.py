"""lumir jsonl: items and queries, one JSON object per line.

Schema of one line (every key but ``id`` is optional, at least one of ``text`` / ``image`` is required)::

    {"id": "c1", "text": "a red square", "image": "img/c1.png", "meta": {...}, "instruction": "...", "task": "..."}

``image`` is a file path; a relative path resolves against the directory of the jsonl file, and
:func:`write_items` writes paths under that directory relative to it, so a folder of jsonl + images can be moved
as a whole. ``instruction`` and ``task`` belong to queries (:class:`lumir.types.Query`).

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "items.jsonl"
    >>> write_items(path, [Item("a", text="hello"), Item("b", text="world", meta={"lang": "en"})])
    2
    >>> [it.id for it in read_items(path)]
    ['a', 'b']
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lumir.config import atomic_writer
from lumir.errors import DataFormatError
from lumir.io.images import IMAGE_EXTENSIONS
from lumir.types import Item, Query

__all__ = ["atomic_writer", "item_record", "iter_jsonl", "iter_lines", "read_items", "read_queries", "write_items"]

_ITEM_KEYS = frozenset({"id", "text", "image", "meta"})
_QUERY_KEYS = _ITEM_KEYS | {"instruction", "task"}


def iter_lines(path: str | Path, *, what: str = "file") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each non-blank line of a UTF-8 text file (a leading BOM is dropped).

    Raises:
        FileNotFoundError: the file does not exist (the message says which ``what`` was expected).
        DataFormatError: a line is not valid UTF-8; the message names file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(f"not valid UTF-8 ({err.reason})", path=path, line=lineno) from err
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if line.strip():
                yield lineno, line


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a jsonl file (line numbers start at 1).

    Raises:
        FileNotFoundError: the file does not exist.
        DataFormatError: a line is not valid UTF-8 or JSON, or is not a JSON object; the message names file and line.
    """
    path = Path(path)
    for lineno, line in iter_lines(path, what="jsonl file"):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"invalid JSON: {err.msg} (column {err.colno})", path=path, line=lineno) from err
        if not isinstance(obj, dict):
            raise DataFormatError(f"expected a JSON object, got {type(obj).__name__}", path=path, line=lineno)
        yield lineno, obj


def _optional_str(obj: dict[str, Any], key: str, path: Path, lineno: int) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise DataFormatError(f"{key!r} must be a string, got {type(value).__name__}", path=path, line=lineno)
    return value


def _parse(obj: dict[str, Any], path: Path, lineno: int, *, query: bool) -> Item:
    allowed = _QUERY_KEYS if query else _ITEM_KEYS
    unknown = sorted(set(obj) - allowed)
    if unknown:
        hint = " ('instruction' and 'task' belong to queries: use read_queries)" if set(unknown) <= _QUERY_KEYS else ""
        raise DataFormatError(f"unknown field(s) {unknown}; allowed: {sorted(allowed)}{hint}", path=path, line=lineno)
    item_id = obj.get("id")
    if not isinstance(item_id, str) or not item_id:
        raise DataFormatError(f"'id' must be a non-empty string, got {item_id!r}", path=path, line=lineno)
    text = _optional_str(obj, "text", path, lineno)
    image = _optional_str(obj, "image", path, lineno)
    if image is not None:
        if not image.strip():
            raise DataFormatError(f"item {item_id!r}: 'image' is an empty path", path=path, line=lineno)
        suffix = Path(image).suffix.lower()
        if suffix not in IMAGE_EXTENSIONS:
            raise DataFormatError(
                f"item {item_id!r}: unknown image type {suffix or '(no extension)'!r} for {image!r}; "
                f"expected one of {sorted(IMAGE_EXTENSIONS)}",
                path=path,
                line=lineno,
            )
        image = str(path.parent.absolute() / image)  # an absolute `image` stays as it is
    if (text is None or not text.strip()) and image is None:
        raise DataFormatError(f"item {item_id!r} has no text and no image", path=path, line=lineno)
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise DataFormatError(f"item {item_id!r}: 'meta' must be a JSON object", path=path, line=lineno)
    if query:
        return Query(
            item_id,
            text=text,
            image=image,  # type: ignore[arg-type]  # Item coerces a path to an ImageRef
            meta=meta,
            instruction=_optional_str(obj, "instruction", path, lineno),
            task=_optional_str(obj, "task", path, lineno),
        )
    return Item(item_id, text=text, image=image, meta=meta)  # type: ignore[arg-type]


def _read(path: str | Path, *, query: bool) -> list[Any]:
    path = Path(path)
    out: list[Any] = []
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        item = _parse(obj, path, lineno, query=query)
        if item.id in seen:
            raise DataFormatError(f"duplicate id {item.id!r} (first on line {seen[item.id]})", path=path, line=lineno)
        seen[item.id] = lineno
        out.append(item)
    return out


def read_items(path: str | Path) -> list[Item]:
    """Read candidate items from a lumir jsonl file.

    Raises:
        DataFormatError: a malformed line (bad JSON, missing id, no content, unknown field, a non-image path,
            a duplicate id); the message names the file and line.
    """
    return _read(path, query=False)


def read_queries(path: str | Path) -> list[Query]:
    """Read queries (items plus optional ``instruction`` and ``task``) from a lumir jsonl file.

    Raises:
        DataFormatError: as :func:`read_items`.
    """
    return _read(path, query=True)


def _image_field(item: Item, base: Path) -> str | None:
    if item.image is None:
        return None
    img_path = item.image.path
    if img_path is None:
        raise ValueError(
            f"item {item.id!r}: its image is held in memory ({item.image.describe()}); "
            "save it to a file and reference the path to write it to jsonl"
        )
    absolute = Path(os.path.abspath(img_path))  # noqa: PTH100  (normalise '..' without resolving symlinks)
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        return str(absolute)


def item_record(item: Item, base: Path) -> dict[str, Any]:
    """The jsonl record of an item or query; image paths under ``base`` are written relative to it."""
    record: dict[str, Any] = {"id": item.id}
    if item.text is not None:
        record["text"] = item.text
    image = _image_field(item, base)
    if image is not None:
        record["image"] = image
    if item.meta:
        record["meta"] = dict(item.meta)
    if isinstance(item, Query):
        if item.instruction is not None:
            record["instruction"] = item.instruction
        if item.task is not None:
            record["task"] = item.task
    return record


def write_items(path: str | Path, items: Iterable[Item]) -> int:
    """Write items or queries to a lumir jsonl file atomically; return how many were written.

    Image paths under the file's directory are written relative to it, others absolute. An exception while
    writing (a bad item, an interrupt) leaves any existing file at ``path`` as it was.

    Raises:
        ValueError: an item's image is not a file (bytes or an in-memory PIL image) or its meta is not JSON.
    """
    path = Path(path)
    base = Path(os.path.abspath(path.parent))  # noqa: PTH100  (as in _image_field)
    n = 0
    with atomic_writer(path) as fh:
        for item in items:
            record = item_record(item, base)
            try:
                line = json.dumps(record, ensure_ascii=False)
            except (TypeError, ValueError) as err:
                raise ValueError(f"item {item.id!r}: meta is not JSON-serialisable: {err}") from err
            fh.write(line + "\n")
            n += 1
    return n
