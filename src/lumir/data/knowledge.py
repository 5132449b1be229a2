"""Read action-knowledge jsonl files (written by ``KnowledgeExtractor.run`` / ``lumir augment knowledge``) for lookup
by caption id or caption text.

Training and re-scoring never call an LLM for a text whose knowledge is already on disk; texts are matched after
whitespace normalisation (Flickr8k captions carry a space before the final period, queries may not).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lumir.errors import DataFormatError

__all__ = ["KnowledgeStore", "normalize_text"]

Knowledge = tuple[list[tuple[str, str, str]], list[str]]


def normalize_text(text: str) -> str:
    """The lookup key of a caption: lower-cased, whitespace collapsed, spaces before punctuation dropped.

    Example:
        >>> normalize_text("A dog  runs .") == normalize_text("a dog runs.")
        True
    """
    return re.sub(r"\s+([.,!?;:])", r"\1", re.sub(r"\s+", " ", text.strip().lower()))


class KnowledgeStore:
    """Knowledge records by id and by normalised caption text.

    Args:
        paths: knowledge jsonl files. Of several records for one id or one text, the first valid one wins (else the
            first): a rerun that appended a retry never hides a good answer.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path] = ()) -> None:
        self.paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
        self.by_id: dict[str, dict[str, Any]] = {}
        self.by_text: dict[str, dict[str, Any]] = {}
        for path in self.paths:
            self.add(_read(path))

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            for table, key in ((self.by_id, str(r["id"])), (self.by_text, normalize_text(str(r.get("caption", ""))))):
                old = table.get(key)
                if old is None or (r.get("valid") and not old.get("valid")):
                    table[key] = r

    def __len__(self) -> int:
        return len(self.by_id)

    def record(self, *, id: str | None = None, text: str | None = None) -> dict[str, Any] | None:
        """The record of a caption id, else of a caption text; None when neither is known."""
        if id is not None and id in self.by_id:
            return self.by_id[id]
        if text is not None:
            return self.by_text.get(normalize_text(text))
        return None

    @staticmethod
    def knowledge(record: dict[str, Any]) -> Knowledge:
        """``(triplets, states)`` of a record; a triplet whose state failed keeps an empty state."""
        triplets = [(str(t[0]), str(t[1]), str(t[2])) for t in record.get("triplets") or []]
        states = [str(s) for s in record.get("states") or []]
        return triplets, states + [""] * (len(triplets) - len(states))


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"knowledge file not found: {path} (write one with `lumir augment knowledge`)")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "id" not in record or "caption" not in record:
                raise ValueError("needs 'id' and 'caption'")
            triplets = record.get("triplets") or []
            if not isinstance(triplets, list) or any(not isinstance(t, list) or len(t) != 3 for t in triplets):
                raise ValueError("'triplets' must be a list of [subject, action, object]")
        except (json.JSONDecodeError, ValueError, TypeError) as err:
            raise DataFormatError(f"not a knowledge record ({err})", path=path, line=n) from err
        out.append(record)
    return out
