"""TREC qrels and run files: read, write, and reconcile qrels with the queries and candidates at hand.

Formats (columns separated by whitespace):

- qrels, TREC: ``qid 0 docid relevance``; M-BEIR adds a fifth column, ``task_id``; BEIR uses a tab-separated file
  with the header ``query-id corpus-id score``.
- run: ``qid Q0 docid rank score run_name`` (a seventh column, as UniIR writes, is ignored).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_qrels(d / "qrels.txt", {"q1": {"c1": 1, "c2": 0}})
    >>> read_qrels(d / "qrels.txt")
    {'q1': {'c1': 1, 'c2': 0}}
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from lumir.collections import Rankings
from lumir.config import atomic_writer
from lumir.errors import DataFormatError
from lumir.io.jsonl import iter_lines
from lumir.types import Qrels

__all__ = ["check_qrels", "read_qrels", "read_run", "write_qrels", "write_run"]


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, whitespace-split fields)`` for each non-blank line."""
    for lineno, line in iter_lines(path):
        yield lineno, line.split()


def _int(value: str, what: str, path: Path, lineno: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataFormatError(f"{what} must be an integer, got {value!r}", path=path, line=lineno) from None


def read_qrels(path: str | Path) -> Qrels:
    """Read relevance judgments from a TREC (4-column), M-BEIR (5-column) or BEIR (tsv with header) qrels file.

    Every grade is kept, 0 and negative ones included (metrics decide what counts as relevant).

    Raises:
        DataFormatError: a line with the wrong number of columns, a non-integer grade, a column count that changes
            within the file, or the same judgment twice with different grades; the message names file and line.
    """
    path = Path(path)
    qrels: Qrels = {}
    width: int | None = None
    first = True
    for lineno, fields in _lines(path):
        if first:
            first = False
            if len(fields) == 3 and fields[0].lower() in ("query-id", "query_id", "qid"):
                continue  # the BEIR header
        if len(fields) not in (3, 4, 5):
            raise DataFormatError(
                f"expected 'qid 0 docid rel' (TREC), 'qid 0 docid rel task_id' (M-BEIR) or "
                f"'query-id corpus-id score' (BEIR); got {len(fields)} column(s)",
                path=path,
                line=lineno,
            )
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            raise DataFormatError(f"{len(fields)} columns, but earlier lines have {width}", path=path, line=lineno)
        qid, did, rel = (fields[0], fields[1], fields[2]) if width == 3 else (fields[0], fields[2], fields[3])
        grade = _int(rel, "relevance", path, lineno)
        judged = qrels.setdefault(qid, {})
        if judged.get(did, grade) != grade:
            raise DataFormatError(
                f"query {qid!r} judges candidate {did!r} twice, as {judged[did]} and as {grade}",
                path=path,
                line=lineno,
            )
        judged[did] = grade
    return qrels


def _check_token(value: str, what: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} {value!r} cannot be written to a TREC file (empty or contains whitespace)")
    return value


def write_qrels(path: str | Path, qrels: Mapping[str, Mapping[str, int]]) -> None:
    """Write qrels as a TREC 4-column file (``qid 0 docid relevance``), atomically.

    Raises:
        ValueError: an id is empty or contains whitespace; nothing is written.
    """
    with atomic_writer(path) as fh:
        for qid, judged in qrels.items():
            _check_token(qid, "query id")
            for did, rel in judged.items():
                fh.write(f"{qid} 0 {_check_token(did, 'candidate id')} {int(rel)}\n")


def _format_score(score: float) -> str:
    return str(np.float32(score))  # shortest text that reads back to the same float32


def write_run(path: str | Path, rankings: Rankings, run_name: str = "lumir") -> None:
    """Write rankings as a TREC run file (``qid Q0 docid rank score run_name``), atomically; empty slots are skipped.

    Raises:
        ValueError: an id or the run name is empty or contains whitespace; nothing is written.
    """
    _check_token(run_name, "run name")
    with atomic_writer(path) as fh:
        for qid, hits in rankings:
            _check_token(qid, "query id")
            for hit in hits:
                did = _check_token(hit.id, "candidate id")
                fh.write(f"{qid} Q0 {did} {hit.rank} {_format_score(hit.score)} {run_name}\n")


def read_run(path: str | Path, k: int | None = None) -> Rankings:
    """Read a TREC run file into :class:`~lumir.collections.Rankings`.

    Each query's candidates are ordered by descending score (ties keep the file's rank order) and cut to ``k``.
    Queries appear in the order of their first line.

    Raises:
        DataFormatError: a line without 6 (or 7) columns, a non-numeric rank or score, or a candidate listed twice
            for one query; the message names file and line.
    """
    path = Path(path)
    rows: dict[str, list[tuple[float, int, str]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for lineno, fields in _lines(path):
        if len(fields) not in (6, 7):
            raise DataFormatError(
                f"expected 'qid Q0 docid rank score run_name', got {len(fields)} column(s)", path=path, line=lineno
            )
        qid, _, did, rank, score = fields[:5]
        if (qid, did) in seen:
            raise DataFormatError(
                f"candidate {did!r} is listed twice for query {qid!r} (first on line {seen[qid, did]})",
                path=path,
                line=lineno,
            )
        seen[qid, did] = lineno
        try:
            value = float(score)
        except ValueError:
            raise DataFormatError(f"score must be a number, got {score!r}", path=path, line=lineno) from None
        if math.isnan(value):
            raise DataFormatError("score is NaN", path=path, line=lineno)
        rows.setdefault(qid, []).append((-value, _int(rank, "rank", path, lineno), did))
    ranked = [[(did, -neg) for neg, _, did in sorted(row)] for row in rows.values()]
    width = k if k is not None else max((len(r) for r in ranked), default=0)
    return Rankings.from_hits(list(rows), ranked, width)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def check_qrels(
    qrels: Mapping[str, Mapping[str, int]], query_ids: Iterable[str], candidate_ids: Iterable[str]
) -> tuple[Qrels, dict[str, int]]:
    """Drop judgments naming a query or candidate that is not there, with one warning that gives the counts.

    Args:
        qrels: the judgments.
        query_ids: ids of the queries that will be run.
        candidate_ids: ids of the candidates that can be retrieved (``corpus.ids``).

    Returns:
        The cleaned qrels (queries left without any judgment are removed) and the counts
        ``{"unknown_query_ids", "unknown_candidate_ids", "dropped_judgments"}``; unknown candidate ids are counted
        among the judgments of known queries only.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     clean, counts = check_qrels({"q1": {"a": 1, "zz": 1}, "q9": {"a": 1}}, ["q1"], ["a"])
        >>> clean, counts
        ({'q1': {'a': 1}}, {'unknown_query_ids': 1, 'unknown_candidate_ids': 1, 'dropped_judgments': 2})
        >>> str(caught[0].message)
        'qrels name 1 unknown candidate id and 1 unknown query id; they were ignored (2 judgments dropped)'
    """
    queries = set(query_ids)
    candidates = set(candidate_ids)
    clean: Qrels = {}
    unknown_queries: set[str] = set()
    unknown_candidates: set[str] = set()
    dropped = 0
    for qid, judged in qrels.items():
        if qid not in queries:
            unknown_queries.add(qid)
            dropped += len(judged)
            continue
        kept = {did: int(rel) for did, rel in judged.items() if did in candidates}
        if len(kept) < len(judged):
            unknown_candidates.update(did for did in judged if did not in candidates)
            dropped += len(judged) - len(kept)
        if kept:
            clean[qid] = kept
    counts = {
        "unknown_query_ids": len(unknown_queries),
        "unknown_candidate_ids": len(unknown_candidates),
        "dropped_judgments": dropped,
    }
    if dropped:
        parts = []
        if unknown_candidates:
            parts.append(_plural(len(unknown_candidates), "unknown candidate id"))
        if unknown_queries:
            parts.append(_plural(len(unknown_queries), "unknown query id"))
        warnings.warn(
            f"qrels name {' and '.join(parts)}; they were ignored ({_plural(dropped, 'judgment')} dropped)",
            UserWarning,
            stacklevel=2,
        )
    return clean, counts
