"""LamRA-Rank training data (LamRA §3.4): a retriever's top-100 as hard negatives, and the two kinds of example.

**Rows.** One jsonl object per training query (:func:`rerank_rows` builds them from a first-stage ranking)::

    {"id": "q1", "query": "query text", "positives": ["c7"], "negatives": ["c3", "c9", ...]}

``negatives`` are the retriever's top-``top`` candidates (LamRA: the top 100 of LamRA-Ret) in rank order, with
the **false-negative guard** applied: a candidate judged relevant in the qrels is never a negative. Optional keys
``query_image`` (an image path), ``instruction`` and ``task`` are kept on the :class:`~lumir.types.Query`.
Candidate contents come from a corpus (items jsonl or a BEIR folder), looked up by id.

**Examples.** Each time a row is drawn, :func:`sample_example` makes

- a *pointwise* pair: one positive and one negative drawn uniformly from the row's negatives (targets YES / NO);
- a *listwise* list: M negatives, M uniform in ``[2, 5]`` (capped by the negatives there are), with the positive
  inserted at a uniformly random position; the target is that 1-based position.

:class:`RerankCollator` renders them with the inference rerankers' own ``conversation()`` methods
(:class:`~lumir.rerank.pointwise.YesNoReranker`, :class:`~lumir.rerank.listwise.ListwiseReranker`: the same
prompts, truncation and chat template) and encodes them with the chat model's
:meth:`~lumir.models.chat.hf.TransformersChatModel.model_inputs`, so training sees byte for byte what reranking
sends. Targets are the ids :meth:`~lumir.models.chat.hf.TransformersChatModel.answer_token_ids` scores: ``"YES"``
and ``"NO"`` as the YES/NO reranker reads them, ``"1"``..``"n"`` as the listwise reranker reads a window of n.

Sampling is seeded per (seed, epoch, query id), so a resumed run draws what the interrupted one would have.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lumir.collections import Rankings
from lumir.config import atomic_writer
from lumir.errors import DataFormatError
from lumir.types import Item, Query

__all__ = [
    "RerankCollator",
    "RerankSample",
    "load_corpus",
    "read_rerank_rows",
    "rerank_rows",
    "row_query",
    "sample_example",
    "write_rerank_rows",
]

LIST_NEGATIVES = (2, 5)
"""LamRA §3.4: M, the number of negatives in a listwise example, is drawn uniformly from 2..5."""


def rerank_rows(
    queries: Sequence[Query],
    rankings: Rankings,
    qrels: Mapping[str, Mapping[str, int]],
    *,
    top: int = 100,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Training rows from a first-stage ranking: each query's qrels positives and its top-``top`` hard negatives.

    Args:
        queries: the training queries (their text and image go into the rows).
        rankings: the retriever's ranking of each query (at least ``top`` deep for LamRA's setting).
        qrels: relevance judgements; a candidate with relevance > 0 is a positive and never a negative.
        top: how deep in the ranking negatives are taken (LamRA §3.4: 100).

    Returns:
        ``(rows, counts)``; counts are ``queries``, ``rows``, ``no_positive`` and ``no_negative`` (queries
        dropped), and ``guarded`` (ranked candidates kept out of the negatives because they are positives).

    Example:
        >>> r = Rankings.from_hits(["q"], [[("a", 0.9), ("b", 0.8), ("c", 0.7)]], 3)
        >>> rows, counts = rerank_rows([Query("q", text="x")], r, {"q": {"b": 1}}, top=3)
        >>> rows[0]["positives"], rows[0]["negatives"], counts["guarded"]
        (['b'], ['a', 'c'], 1)
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    by_id = {q.id: q for q in queries}
    counts = {"queries": 0, "rows": 0, "no_positive": 0, "no_negative": 0, "guarded": 0}
    rows: list[dict[str, Any]] = []
    for qid, hits in rankings:
        if qid not in by_id:
            continue
        counts["queries"] += 1
        positives = [cid for cid, rel in qrels.get(qid, {}).items() if rel > 0]
        if not positives:
            counts["no_positive"] += 1
            continue
        ranked = [h.id for h in hits[:top]]
        negatives = [cid for cid in ranked if cid not in set(positives)]
        counts["guarded"] += len(ranked) - len(negatives)
        if not negatives:
            counts["no_negative"] += 1
            continue
        q = by_id[qid]
        row: dict[str, Any] = {"id": qid, "query": q.text or "", "positives": positives, "negatives": negatives}
        if q.image is not None and isinstance(q.image.source, (str, Path)):
            row["query_image"] = str(q.image.source)
        row.update({k: v for k, v in (("instruction", q.instruction), ("task", q.task)) if v})
        rows.append(row)
        counts["rows"] += 1
    return rows, counts


def write_rerank_rows(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows as jsonl (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as fh:
        for row in rows:
            fh.write(json.dumps(dict(row), ensure_ascii=False) + "\n")
    return path


def read_rerank_rows(paths: str | Path | Sequence[str | Path]) -> list[dict[str, Any]]:
    """Rows from one or more jsonl files, each checked (``id``, ``positives`` and ``negatives`` non-empty).

    Raises:
        FileNotFoundError: a file is missing (naming ``data.train``).
        DataFormatError: a malformed line (file and line named).
    """
    from lumir.train.rewriter.loop import read_rows

    rows = read_rows(paths, {"id": str, "positives": list, "negatives": list})
    for row in rows:
        for key in ("positives", "negatives"):
            if not row[key] or not all(isinstance(c, str) for c in row[key]):
                raise DataFormatError(f"row {row['id']!r}: {key!r} must be a non-empty list of candidate ids")
        if not isinstance(row.get("query", ""), str):
            raise DataFormatError(f"row {row['id']!r}: 'query' must be a string")
    return rows


def load_corpus(path: str | Path) -> dict[str, Item]:
    """Candidates by id from a lumir items jsonl file or a BEIR folder (its ``corpus.jsonl``).

    Raises:
        FileNotFoundError: neither exists.
    """
    path = Path(path)
    if path.is_dir():
        from lumir.data.beir import load_beir

        splits = sorted(p.stem for p in (path / "qrels").glob("*.tsv"))
        if not (path / "corpus.jsonl").is_file() or not splits:
            raise FileNotFoundError(f"data.corpus {path} is a folder but not a BEIR folder (corpus.jsonl, qrels/)")
        return {it.id: it for it in load_beir(path, split=splits[0]).corpus}
    if not path.is_file():
        raise FileNotFoundError(f"data.corpus not found: {path} (an items jsonl file or a BEIR folder)")
    from lumir.io.jsonl import read_items

    return {it.id: it for it in read_items(path)}


def row_query(row: Mapping[str, Any]) -> Query:
    """The :class:`~lumir.types.Query` of a row."""
    return Query(
        str(row["id"]),
        text=row.get("query") or None,
        image=row.get("query_image"),
        instruction=row.get("instruction"),
        task=row.get("task"),
    )


@dataclass(frozen=True)
class RerankSample:
    """One draw from a row (LamRA §3.4): a pointwise (positive, negative) pair and a listwise list.

    Attributes:
        query: the query.
        positive: the pointwise positive (target YES); negative: the pointwise negative (target NO).
        candidates: the listwise candidate ids, the positive among them; target: its 1-based position.
    """

    query: Query
    positive: str
    negative: str
    candidates: tuple[str, ...]
    target: int


def sample_example(
    row: Mapping[str, Any], rng: random.Random, *, list_negatives: Sequence[int] = LIST_NEGATIVES
) -> RerankSample:
    """Draw one pointwise pair and one listwise list from a row (see the module docstring).

    Example:
        >>> row = {"id": "q", "query": "x", "positives": ["p"], "negatives": ["a", "b", "c", "d", "e", "f"]}
        >>> s = sample_example(row, random.Random(0))
        >>> s.candidates[s.target - 1], 3 <= len(s.candidates) <= 6, s.negative in row["negatives"]
        ('p', True, True)
    """
    lo, hi = int(list_negatives[0]), int(list_negatives[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"list_negatives must be [lo, hi] with 1 <= lo <= hi, got {list(list_negatives)}")
    positives, negatives = list(row["positives"]), list(row["negatives"])
    positive = rng.choice(positives)
    negative = rng.choice(negatives)
    m = min(rng.randint(lo, hi), len(negatives))
    chosen = rng.sample(negatives, m)
    at = rng.randint(0, m)
    candidates = (*chosen[:at], positive, *chosen[at:])
    return RerankSample(row_query(row), positive, negative, candidates, at + 1)


class RerankCollator:
    """Rows → model inputs for LamRA-Rank's two objectives (a ``transformers`` data collator).

    Args:
        chat: the :class:`~lumir.models.chat.hf.TransformersChatModel` over the model being trained (it renders
            and encodes; its model is the one the trainer updates).
        corpus: candidate id → item.
        pointwise: the YES/NO reranker whose ``conversation()`` and answer ``tokens`` define the pointwise
            examples (None: no pointwise objective); listwise: the listwise reranker (None: no listwise objective).
        seed: sampling seed; list_negatives: the range of M.

    A batch of B rows gives ``point`` (2B prompts: the B positives, then the B negatives) with ``point_targets``
    (YES ids, then NO ids) and ``point_choices`` ((2B, 2) ids of [NO, YES]); and ``list`` (B prompts) with
    ``list_targets`` and ``list_choices`` ((B, 6) ids of "1".."n", −1 beyond n). Set :attr:`epoch` (a trainer
    callback does) so each epoch draws anew; :attr:`fixed` draws as in epoch 0 always (holdout evaluation).
    """

    def __init__(
        self,
        chat: Any,
        corpus: Mapping[str, Item],
        *,
        pointwise: Any | None,
        listwise: Any | None,
        seed: int = 0,
        list_negatives: Sequence[int] = LIST_NEGATIVES,
    ) -> None:
        if pointwise is None and listwise is None:
            raise ValueError("at least one of the pointwise and listwise objectives must be on")
        hi = int(list_negatives[1])
        if listwise is not None and hi + 1 > listwise.window:
            raise ValueError(f"list_negatives up to {hi} needs a listwise window of {hi + 1}, not {listwise.window}")
        self.chat, self.corpus = chat, corpus
        self.pointwise, self.listwise = pointwise, listwise
        self.seed, self.list_negatives = int(seed), (int(list_negatives[0]), hi)
        self.epoch = 0
        self.fixed = False
        self._positions: dict[int, list[int]] = {}
        self.yes_no = chat.answer_token_ids(pointwise.tokens) if pointwise is not None else None  # [NO, YES]

    def with_fixed_draws(self) -> RerankCollator:
        """A copy that always draws as in epoch 0 (for the holdout)."""
        other = object.__new__(RerankCollator)
        other.__dict__.update(self.__dict__)
        other.fixed = True
        return other

    def position_ids(self, n: int) -> list[int]:
        """Token ids of ``"1"``..``"n"`` exactly as the listwise reranker reads a window of ``n``."""
        if n not in self._positions:
            self._positions[n] = self.chat.answer_token_ids([str(i) for i in range(1, n + 1)])
        return self._positions[n]

    def sample(self, row: Mapping[str, Any]) -> RerankSample:
        epoch = 0 if self.fixed else self.epoch
        return sample_example(
            row, random.Random(f"{self.seed}:{epoch}:{row['id']}"), list_negatives=self.list_negatives
        )

    def item(self, cid: str) -> Item:
        try:
            return self.corpus[cid]
        except KeyError:
            raise KeyError(f"candidate {cid!r} of the training rows is not in data.corpus") from None

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        samples = [self.sample(r) for r in rows]
        out: dict[str, Any] = {}
        if self.pointwise is not None and self.yes_no is not None:
            no, yes = self.yes_no
            convs = [self.pointwise.conversation(s.query, self.item(s.positive)) for s in samples]
            convs += [self.pointwise.conversation(s.query, self.item(s.negative)) for s in samples]
            out["point"] = _cpu(self.chat.model_inputs(convs))
            out["point_targets"] = torch.tensor([yes] * len(samples) + [no] * len(samples))
            out["point_choices"] = torch.tensor([[no, yes]] * (2 * len(samples)))
        if self.listwise is not None:
            convs = [self.listwise.conversation(s.query, [self.item(c) for c in s.candidates]) for s in samples]
            width = self.list_negatives[1] + 1
            choices = torch.full((len(samples), width), -1, dtype=torch.long)
            targets = []
            for i, s in enumerate(samples):
                ids = self.position_ids(len(s.candidates))
                choices[i, : len(ids)] = torch.tensor(ids)
                targets.append(ids[s.target - 1])
            out["list"] = _cpu(self.chat.model_inputs(convs))
            out["list_targets"] = torch.tensor(targets)
            out["list_choices"] = choices
        return out


def _cpu(inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Collated tensors stay on the CPU; the trainer moves each batch to the model's device."""
    return {k: v.cpu() for k, v in inputs.items()}
