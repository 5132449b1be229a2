"""BEIR text-retrieval folders (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) as a RetrievalTask.

Candidate text is ``(title + " " + text).strip()``, exactly what MTEB and BEIR's sentence-transformers evaluation
embed, so scores are comparable with the published ones.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from lumir.collections import Corpus, RetrievalTask
from lumir.errors import DataFormatError
from lumir.io.jsonl import iter_jsonl
from lumir.io.trec import check_qrels, read_qrels
from lumir.types import Item, Modality, Query

__all__ = ["BEIR_METRICS", "load_beir"]

BEIR_METRICS: tuple[str, ...] = ("nDCG@10", "R@100", "MRR@10", "mAP@100")
"""The metrics reported for BEIR tasks by default (nDCG@10 is the headline number)."""


def _field(obj: dict[str, object], key: str, path: Path, lineno: int, *, required: bool) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DataFormatError(f"{key!r} must be a string, got {value!r}", path=path, line=lineno)
    return value


def _read_corpus(path: Path) -> Corpus:
    items: list[Item] = []
    empty: list[str] = []
    for lineno, obj in iter_jsonl(path):
        cid = _field(obj, "_id", path, lineno, required=True)
        title = _field(obj, "title", path, lineno, required=False)
        text = (title + " " + _field(obj, "text", path, lineno, required=True)).strip()
        if not text:
            empty.append(cid)
            continue
        items.append(Item(cid, text=text, meta={"title": title} if title else {}))
    if empty:
        warnings.warn(
            f"{path}: {len(empty)} candidate(s) have neither title nor text and were skipped (first: {empty[:3]})",
            UserWarning,
            stacklevel=3,
        )
    try:
        return Corpus(items)
    except ValueError as err:
        raise DataFormatError(str(err), path=path) from err


def _read_queries(path: Path, wanted: set[str], task: str) -> list[Query]:
    out: list[Query] = []
    for lineno, obj in iter_jsonl(path):
        qid = _field(obj, "_id", path, lineno, required=True)
        if qid not in wanted:
            continue
        text = _field(obj, "text", path, lineno, required=True)
        if not text.strip():
            raise DataFormatError(f"query {qid!r} has empty text", path=path, line=lineno)
        out.append(Query(qid, text=text, task=task))
    return out


def load_beir(root: str | Path, split: str = "test", name: str | None = None) -> RetrievalTask:
    """Load a BEIR dataset folder as a text -> text :class:`~lumir.collections.RetrievalTask`.

    Args:
        root: the folder holding ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.
        split: which qrels file to use; only queries judged in it are kept (as BEIR and MTEB do).
        name: the task name (default: ``beir/<folder name>`` without a leading ``beir-``, e.g. ``beir/scifact``).

    Raises:
        FileNotFoundError: a file of the layout is missing; the message lists what is expected.
        DataFormatError: a malformed line (file and line named).
    """
    root = Path(root)
    name = name or f"beir/{root.name.removeprefix('beir-')}"
    corpus_path, queries_path, qrels_path = (
        root / "corpus.jsonl",
        root / "queries.jsonl",
        root / "qrels" / f"{split}.tsv",
    )
    missing = [str(p) for p in (corpus_path, queries_path, qrels_path) if not p.is_file()]
    if missing:
        splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise FileNotFoundError(
            f"not a BEIR folder for split {split!r}: missing {missing}; expected corpus.jsonl, queries.jsonl and "
            f"qrels/{split}.tsv under {root}" + (f" (qrels splits found: {splits})" if splits else "")
        )
    qrels = read_qrels(qrels_path)
    corpus = _read_corpus(corpus_path)
    queries = _read_queries(queries_path, set(qrels), name)
    qrels, _ = check_qrels(qrels, [q.id for q in queries], corpus.ids)
    queries = [q for q in queries if q.id in qrels]  # a query whose judgments were all dropped has nothing to find
    return RetrievalTask(
        name,
        queries,
        corpus,
        qrels,
        query_modality=Modality.TEXT,
        candidate_modality=Modality.TEXT,
        metrics=BEIR_METRICS,
        meta={"source": "beir", "root": str(root), "split": split},
    )
