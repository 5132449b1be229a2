"""Training examples for embedder training: a query, its positive, optional hard negatives, and where it came from.

A :class:`TrainingExample` is the triplet ``((inst, q), c+, [c-...])`` of MM-Embed §4.1 (Lin et al. 2024) and the
pair ``(q, c)`` of LamRA-Ret §3.3 (Liu et al. 2025). ``positive_ids`` holds *every* labelled positive of the query
(its qrels), so a trainer can keep another query's candidate out of the softmax when it is in fact relevant (a
false negative in the batch).

Builders:

- :func:`examples_from_task`: one example per (query, positive) of a :class:`~lumir.collections.RetrievalTask`
  (BEIR qrels, Flickr8k directions, M-BEIR tasks, a union pool...);
- :func:`caption_pair_examples`: caption → another caption of the same photo (text pairs for LamRA's stage I and
  Flickr8k caption→caption retrieval);
- :func:`attach_negatives`: hard negatives from a :func:`lumir.train.mining.mine_hard_negatives` jsonl file.

On disk (:func:`write_examples` / :func:`read_examples`) one example is one jsonl line::

    {"query": {...lumir query record...}, "positive": {...item...}, "negatives": [{...item...}],
     "positive_ids": ["d1", "d7"], "source": "scifact", "task": "beir/scifact"}

Item records are those of :mod:`lumir.io.jsonl` (``id``, ``text``, ``image``, ``meta``; queries add
``instruction`` and ``task``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lumir.collections import RetrievalTask
from lumir.config import atomic_write_text
from lumir.errors import DataFormatError
from lumir.io.jsonl import item_record, iter_jsonl
from lumir.types import Item, Query

__all__ = [
    "TrainingExample",
    "attach_negatives",
    "caption_pair_examples",
    "examples_from_task",
    "read_examples",
    "write_examples",
]


@dataclass(frozen=True)
class TrainingExample:
    """One training triplet.

    Attributes:
        query: the query (with its instruction, if the task has one).
        positive: the positive candidate.
        negatives: hard negatives (may be empty: in-batch negatives only).
        positive_ids: every labelled positive of the query (defaults to the positive's id).
        source: the data source it came from (mixing and task-homogeneous batches group by it).
        task: the task name (task-homogeneous batches group by it).
    """

    query: Query
    positive: Item
    negatives: tuple[Item, ...] = ()
    positive_ids: frozenset[str] = field(default_factory=frozenset)
    source: str = "default"
    task: str | None = None

    def __post_init__(self) -> None:
        if not self.positive_ids:
            object.__setattr__(self, "positive_ids", frozenset({self.positive.id}))
        bad = [n.id for n in self.negatives if n.id in self.positive_ids]
        if bad:
            raise ValueError(f"query {self.query.id!r}: negatives {bad} are labelled positives")

    def item_ids(self) -> frozenset[str]:
        """Ids of every item in the example; a no-duplicates batch never holds two examples sharing one."""
        return frozenset({f"q:{self.query.id}", self.positive.id, *(n.id for n in self.negatives)})


def examples_from_task(
    task: RetrievalTask,
    *,
    source: str | None = None,
    positives: str = "all",
    limit: int | None = None,
    seed: int = 0,
) -> list[TrainingExample]:
    """Examples from a task's queries and qrels (relevance > 0).

    Args:
        positives: ``"all"`` (one example per (query, positive)) or ``"one"`` (one random positive per query).
        limit: keep the first ``limit`` queries (in the task's order) — for CPU-sized runs.
        seed: seed of the ``"one"`` draw.
    """
    if positives not in ("all", "one"):
        raise ValueError(f"positives must be 'all' or 'one', got {positives!r}")
    rng = random.Random(seed)
    name = source or task.name
    out: list[TrainingExample] = []
    queries = task.queries if limit is None else task.queries[:limit]
    for query in queries:
        rel = sorted(c for c, grade in task.qrels.get(query.id, {}).items() if grade > 0 and c in task.corpus)
        if not rel:
            continue
        chosen = rel if positives == "all" else [rng.choice(rel)]
        for cid in chosen:
            out.append(
                TrainingExample(query, task.corpus[cid], positive_ids=frozenset(rel), source=name, task=task.name)
            )
    return out


def caption_pair_examples(
    photos: Mapping[str, Sequence[Item]], *, source: str = "captions", instruction: str | None = None, seed: int = 0
) -> list[TrainingExample]:
    """Caption → another caption of the same photo, one example per caption (its partner drawn at random).

    ``photos`` maps a photo id to its caption items; every caption of the photo is a labelled positive.
    """
    rng = random.Random(seed)
    out: list[TrainingExample] = []
    for photo, captions in photos.items():
        if len(captions) < 2:
            continue
        ids = frozenset(c.id for c in captions)
        for caption in captions:
            partner = rng.choice([c for c in captions if c.id != caption.id])
            query = Query(caption.id, text=caption.text, instruction=instruction, meta={"photo": photo})
            out.append(TrainingExample(query, partner, positive_ids=ids - {caption.id}, source=source, task=source))
    return out


def attach_negatives(
    examples: Sequence[TrainingExample],
    mined: str | Path,
    candidates: Mapping[str, Item] | Any,
    *,
    per_query: int = 1,
    seed: int = 0,
) -> list[TrainingExample]:
    """Add hard negatives read from a mining jsonl file (one record per query: ``{"query_id": ..., "negatives":
    [{"id": ...}, ...]}``, as :func:`lumir.train.mining.mine_hard_negatives` writes) to each example.

    Up to ``per_query`` negatives are drawn at random (seeded) per example; a negative that is a labelled positive of
    the example's query is dropped (false-negative guard). Queries without a record keep in-batch negatives only.

    Raises:
        DataFormatError: a record without ``query_id`` or ``negatives``, or a negative id missing from
            ``candidates`` (file and line named).
    """
    path = Path(mined)
    rng = random.Random(seed)
    by_query: dict[str, list[str]] = {}
    for lineno, rec in iter_jsonl(path):
        qid, negs = rec.get("query_id"), rec.get("negatives")
        if not isinstance(qid, str) or not isinstance(negs, list):
            raise DataFormatError("a mining record needs 'query_id' and a 'negatives' list", path=path, line=lineno)
        ids = []
        for neg in negs:
            nid = neg.get("id") if isinstance(neg, Mapping) else neg
            if nid not in candidates:
                raise DataFormatError(
                    f"negative {nid!r} of query {qid!r} is not in the candidate pool", path=path, line=lineno
                )
            ids.append(str(nid))
        by_query[qid] = ids
    out = []
    for ex in examples:
        pool = [n for n in by_query.get(ex.query.id, []) if n not in ex.positive_ids]
        drawn = rng.sample(pool, min(per_query, len(pool)))
        out.append(
            TrainingExample(
                ex.query, ex.positive, tuple(candidates[n] for n in drawn), ex.positive_ids, ex.source, ex.task
            )
        )
    return out


def write_examples(path: str | Path, examples: Iterable[TrainingExample]) -> int:
    """Write examples to jsonl atomically (image paths under the file's folder relative to it, others absolute);
    returns how many.

    Raises:
        ValueError: an image held in memory (not a file).
    """
    base = Path(path).absolute().parent
    lines = []
    for ex in examples:
        rec = {
            "query": item_record(ex.query, base),
            "positive": item_record(ex.positive, base),
            "negatives": [item_record(n, base) for n in ex.negatives],
            "positive_ids": sorted(ex.positive_ids),
            "source": ex.source,
            "task": ex.task,
        }
        lines.append(json.dumps(rec, ensure_ascii=False))
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)


def _read_item(obj: Any, path: Path, lineno: int, what: str, *, query: bool = False) -> Any:
    if not isinstance(obj, Mapping) or not isinstance(obj.get("id"), str):
        raise DataFormatError(f"{what} must be an object with a string 'id'", path=path, line=lineno)
    text, image, meta = obj.get("text"), obj.get("image"), obj.get("meta") or {}
    if text is None and image is None:
        raise DataFormatError(f"{what} {obj['id']!r} has no text and no image", path=path, line=lineno)
    if image is not None and not Path(image).is_absolute():
        image = str(path.parent.absolute() / image)
    if query:
        return Query(
            obj["id"], text=text, image=image, meta=meta, instruction=obj.get("instruction"), task=obj.get("task")
        )
    return Item(obj["id"], text=text, image=image, meta=meta)


def read_examples(path: str | Path) -> list[TrainingExample]:
    """Read examples written by :func:`write_examples` (relative image paths resolve against the file's folder).

    Raises:
        DataFormatError: a malformed line (file and line named).
    """
    path = Path(path)
    out = []
    for lineno, rec in iter_jsonl(path):
        query = _read_item(rec.get("query"), path, lineno, "query", query=True)
        positive = _read_item(rec.get("positive"), path, lineno, "positive")
        negs = rec.get("negatives") or []
        if not isinstance(negs, list):
            raise DataFormatError("'negatives' must be a list", path=path, line=lineno)
        negatives = tuple(_read_item(n, path, lineno, "negative") for n in negs)
        try:
            out.append(
                TrainingExample(
                    query,
                    positive,
                    negatives,
                    frozenset(rec.get("positive_ids") or ()),
                    str(rec.get("source") or "default"),
                    rec.get("task"),
                )
            )
        except ValueError as err:
            raise DataFormatError(str(err), path=path, line=lineno) from err
    return out
