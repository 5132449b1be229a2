"""Hard-negative mining from a retriever's rankings: MM-Embed's modality-aware negatives, or a rank window.

**Modality-aware** (``mode="modality"``; Lin et al. 2024, "MM-Embed: Universal Multimodal Retrieval with
Multimodal LLMs", https://arxiv.org/abs/2411.02571, §4.1.1). From the top ``depth`` = 50 candidates a retriever
trained with random negatives (``M^rand``) returns for a training query and its instruction:

- **type 1**, *incorrect modality*: ranked above the labelled positive (above the best-ranked positive; when no
  positive is in the top ``depth`` every one of them is above it) **and** of a modality other than the one the
  instruction asks for;
- **type 2**, *unsatisfactory information*: ranked below ``k_prime`` = 45 (ranks 46..50) **and** of the desired
  modality — deep enough to be unlikely false negatives (the paper follows Chen et al. 2022 and Lin et al. 2023).

Each of a query's ``n`` negatives is drawn from type 1 or type 2 with probability ½ each (``p_type1``), without
replacement; when the drawn type has nothing left the other is used, and a query with neither gets fewer. Draws are
seeded per query id, so a record does not depend on batching, order or resumption.

**Window** (``mode="window"``): the generic recipe (DPR / ANCE-style mined negatives): ``n`` candidates drawn
uniformly from the 1-based rank window ``[lo, hi)``, any modality.

**False-negative guard** (both modes): a qrels positive (relevance > 0) and a query's excluded ids (e.g. the query's
own item in a union pool) are never negatives. With ``margin`` a candidate whose score exceeds ``margin`` × the
positive's score is dropped too: NV-Retriever's "TopK-PercPos" positive-aware filter (de Souza P. Moreira et al.
2024, "NV-Retriever: Improving text embedding models with effective hard-negative mining",
https://arxiv.org/abs/2407.15831, §3; 0.95 is its best setting). The positive's score is its best score in the
rankings, else the one :func:`compute_rankings` measured (a margin needs one of them).

**Output**: jsonl, a header line ``{"format": "lumir-hard-negatives", "version": 1, "config": {...}}``, then one
record per query (``query_id``, ``positive_ids``, ``desired_modality``, ``positive_rank``, ``positive_score``, the
sizes of the candidate sets and ``negatives``: ``id``, ``rank``, ``score``, ``modality``, ``type``). Records are
appended whole-line and flushed under an output lock (:func:`lumir.io.lock.output_lock`); a rerun skips queries
already in the file and a truncated last line from a crash is cut off first, so large pools mine resumably.
:func:`compute_rankings` produces the rankings in query chunks from any embedder or retriever (exact chunked
top-k through :class:`~lumir.retrieve.DenseRetriever`), so the pool never has to fit one matmul.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lumir.collections import Corpus, Rankings
from lumir.errors import DataFormatError
from lumir.protocols import Embedder, Retriever
from lumir.types import Hit, Modality, Qrels, Query, Role

__all__ = [
    "MINING_FORMAT",
    "MiningConfig",
    "candidate_sets",
    "compute_rankings",
    "hard_negative_ids",
    "mine_hard_negatives",
    "read_mined",
]

logger = logging.getLogger(__name__)

MINING_FORMAT = "lumir-hard-negatives"
"""The ``format`` of a mined-negatives file's header line."""
_VERSION = 1


@dataclass(frozen=True)
class MiningConfig:
    """How to mine (see the module docstring).

    Attributes:
        mode: ``"modality"`` (MM-Embed type 1 / type 2) or ``"window"`` (rank window).
        n: negatives per query.
        depth: how many top-ranked candidates are considered (MM-Embed: 50).
        k_prime: type 2 candidates rank below this (ranks ``k_prime + 1 .. depth``; MM-Embed: 45).
        p_type1: probability of drawing a type 1 negative (else type 2; MM-Embed: ½).
        window: ``(lo, hi)``: 1-based ranks ``lo <= rank < hi`` for ``mode="window"``.
        margin: drop candidates scoring above ``margin`` × the positive's score (NV-Retriever: 0.95); None: off.
        seed: seed of the per-query draws.
    """

    mode: str = "modality"
    n: int = 1
    depth: int = 50
    k_prime: int = 45
    p_type1: float = 0.5
    window: tuple[int, int] = (30, 100)
    margin: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", tuple(int(w) for w in self.window))
        if self.mode not in ("modality", "window"):
            raise ValueError(f"mode must be 'modality' or 'window', got {self.mode!r}")
        if self.n < 1 or self.depth < 1:
            raise ValueError(f"need n >= 1 and depth >= 1, got n={self.n}, depth={self.depth}")
        if not 0 <= self.k_prime < self.depth:
            raise ValueError(f"k_prime must be in [0, depth={self.depth}), got {self.k_prime}")
        if not 0.0 <= self.p_type1 <= 1.0:
            raise ValueError(f"p_type1 must be in [0, 1], got {self.p_type1}")
        lo, hi = self.window
        if len(self.window) != 2 or not 1 <= lo < hi:
            raise ValueError(f"window must be (lo, hi) with 1 <= lo < hi (1-based ranks), got {self.window}")
        if self.margin is not None and not self.margin > 0:
            raise ValueError(f"margin must be positive (e.g. 0.95) or None, got {self.margin}")

    @property
    def needed_depth(self) -> int:
        """How deep the rankings must be for this config."""
        return self.depth if self.mode == "modality" else self.window[1] - 1

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what the output header records)."""
        out = asdict(self)
        out["window"] = list(self.window)
        return out


def candidate_sets(
    hits: Sequence[Hit],
    positives: Collection[str],
    candidate_modalities: Mapping[str, str | Modality],
    desired_modality: str | Modality | None,
    config: MiningConfig,
    *,
    excluded: Collection[str] = (),
    positive_score: float | None = None,
) -> dict[str, list[Hit]]:
    """One query's eligible negatives, by type: ``{"type1": [...], "type2": [...]}`` or ``{"window": [...]}``.

    Hits ranked deeper than ``config.depth`` (modality mode), positives, ``excluded`` ids and (with a margin)
    candidates scoring above ``margin * positive_score`` are never eligible.

    Raises:
        ValueError: modality mode without a desired modality, or a margin without a positive score.
    """
    if config.margin is not None and positive_score is None:
        raise ValueError("a score margin needs the positive's score (pass positive_scores; compute_rankings gives it)")
    cap = None if config.margin is None or positive_score is None else config.margin * positive_score
    eligible = [h for h in hits if h.id not in positives and h.id not in excluded and (cap is None or h.score <= cap)]
    if config.mode == "window":
        lo, hi = config.window
        return {"window": [h for h in eligible if lo <= h.rank < hi]}
    if desired_modality is None:
        raise ValueError("modality-aware mining needs each query's desired candidate modality")
    desired = Modality.parse(desired_modality)
    best = min((h.rank for h in hits if h.id in positives), default=math.inf)

    def modality(h: Hit) -> Modality:
        return Modality.parse(candidate_modalities[h.id])

    top = [h for h in eligible if h.rank <= config.depth]
    return {
        "type1": [h for h in top if h.rank < best and modality(h) is not desired],
        "type2": [h for h in top if h.rank > config.k_prime and modality(h) is desired],
    }


def _rng(seed: int, query_id: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\x00{query_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _draw(sets: Mapping[str, list[Hit]], config: MiningConfig, query_id: str) -> list[tuple[str, Hit]]:
    """``config.n`` seeded draws without replacement: type 1 / type 2 with ``p_type1`` (falling back to the other
    type when one is used up), or uniform within the window."""
    rng = _rng(config.seed, query_id)
    pools = {name: list(hits) for name, hits in sets.items()}
    picked: list[tuple[str, Hit]] = []
    for _ in range(config.n):
        if config.mode == "window":
            name = "window"
        else:
            name = "type1" if rng.random() < config.p_type1 else "type2"
            if not pools[name]:
                name = "type2" if name == "type1" else "type1"
        if not pools[name]:
            break
        picked.append((name, pools[name].pop(int(rng.integers(len(pools[name]))))))
    return picked


def _record(
    query_id: str,
    hits: Sequence[Hit],
    positives: Collection[str],
    candidate_modalities: Mapping[str, str | Modality],
    desired: str | Modality | None,
    config: MiningConfig,
    excluded: Collection[str],
    positive_score: float | None,
) -> dict[str, Any]:
    ranked = [h for h in hits if h.id in positives]
    if ranked:
        positive_score = max(h.score for h in ranked)
    sets = candidate_sets(
        hits, positives, candidate_modalities, desired, config, excluded=excluded, positive_score=positive_score
    )
    negatives = [
        {"id": h.id, "rank": h.rank, "score": round(h.score, 6),
         "modality": Modality.parse(candidate_modalities[h.id]).value, "type": name}
        for name, h in _draw(sets, config, query_id)
    ]  # fmt: skip
    return {
        "query_id": query_id,
        "positive_ids": sorted(positives),
        "desired_modality": None if desired is None else Modality.parse(desired).value,
        "positive_rank": min((h.rank for h in ranked), default=None),
        "positive_score": None if positive_score is None else round(float(positive_score), 6),
        "candidates": {name: len(v) for name, v in sets.items()},
        "negatives": negatives,
    }


def read_mined(path: str | Path, *, repair: bool = False) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The header and records of a mined-negatives file (``(None, [])`` when it does not exist).

    A last line cut short by a crash (no newline, not valid JSON) is ignored, or with ``repair`` cut from the file;
    a complete last line merely missing its newline gets one (with ``repair``).

    Raises:
        DataFormatError: a malformed line before the last, or a first line that is not a header.
    """
    path = Path(path)
    if not path.is_file():
        return None, []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    records: list[dict[str, Any]] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataFormatError(f"not a JSON record ({err}); move the file away", path=path, line=n) from err
    if tail.strip():
        try:
            records.append(json.loads(tail))
            fix = b"\n"
        except json.JSONDecodeError:
            logger.warning("%s: dropping a truncated last line (%d bytes) left by an interrupted run", path, len(tail))
            fix = None
        if repair:
            with path.open("r+b") as fh:
                fh.truncate(len(raw) - len(tail))
                if fix is not None:
                    fh.seek(0, os.SEEK_END)
                    fh.write(tail + fix)
    if not records:
        return None, []
    header, body = records[0], records[1:]
    if header.get("format") != MINING_FORMAT:
        raise DataFormatError(f"first line is not a {MINING_FORMAT} header", path=path, line=1)
    return header, body


def _desired_for(desired: str | Modality | Mapping[str, str | Modality] | None, query_id: str) -> Any:
    if isinstance(desired, Mapping):
        try:
            return desired[query_id]
        except KeyError:
            raise KeyError(f"no desired modality for query {query_id!r}") from None
    return desired


def mine_hard_negatives(
    rankings: Rankings,
    qrels: Qrels,
    candidate_modalities: Mapping[str, str | Modality],
    desired_modality: str | Modality | Mapping[str, str | Modality] | None = None,
    config: MiningConfig | None = None,
    *,
    output: str | Path | None = None,
    exclude: Mapping[str, Collection[str]] | None = None,
    positive_scores: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Mine hard negatives for every query of ``rankings`` (see the module docstring).

    Args:
        rankings: a retriever's rankings of the training queries, at least ``config.needed_depth`` deep.
        qrels: query id -> {candidate id: relevance}; positives (relevance > 0) are never negatives.
        candidate_modalities: candidate id -> modality.
        desired_modality: the modality each query's instruction asks for: one for all, or query id -> modality
            (modality mode only).
        config: how to mine (default :class:`MiningConfig`).
        output: append the records to this jsonl (resumable: queries already there are skipped).
        exclude: query id -> candidate ids that are never negatives (e.g. the query's own item).
        positive_scores: query id -> its positive's score, for a margin when the positive is not ranked.

    Returns:
        One record per query of ``rankings``, in its order (those read back from ``output`` included).

    Raises:
        ValueError: the rankings are too shallow, or ``output`` was mined with another config.
        OutputLockedError: another job is writing ``output``.
    """
    config = config or MiningConfig()
    if rankings.k < config.needed_depth:
        raise ValueError(
            f"rankings hold {rankings.k} candidates per query; {config.mode} mining needs {config.needed_depth} "
            f"(retrieve deeper: compute_rankings(..., k={config.needed_depth}))"
        )
    exclude = exclude or {}
    positive_scores = positive_scores or {}

    def mine(query_id: str, hits: list[Hit]) -> dict[str, Any]:
        positives = {c for c, rel in qrels.get(query_id, {}).items() if rel > 0}
        return _record(
            query_id, hits, positives, candidate_modalities, _desired_for(desired_modality, query_id), config,
            exclude.get(query_id, ()), positive_scores.get(query_id),
        )  # fmt: skip

    if output is None:
        return [mine(qid, hits) for qid, hits in rankings]
    from lumir.io.lock import output_lock

    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(path):
        header, done = read_mined(path, repair=True)
        if header is not None and header.get("config") != config.to_dict():
            raise ValueError(
                f"{path} was mined with config {header.get('config')}, not {config.to_dict()}; "
                "use another output file or delete it to start over"
            )
        by_id = {r["query_id"]: r for r in done}
        with path.open("a", encoding="utf-8") as fh:
            if header is None:
                fh.write(json.dumps({"format": MINING_FORMAT, "version": _VERSION, "config": config.to_dict()}) + "\n")
            for i, (qid, hits) in enumerate(rankings):
                if qid in by_id:
                    continue
                by_id[qid] = mine(qid, hits)
                fh.write(json.dumps(by_id[qid]) + "\n")  # one write per whole line
                if i % 1024 == 1023:
                    fh.flush()
            fh.flush()
            os.fsync(fh.fileno())
    return [by_id[qid] for qid in rankings.query_ids]


def hard_negative_ids(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Query id -> its mined negative ids, from records (:func:`mine_hard_negatives`, :func:`read_mined`)."""
    return {str(r["query_id"]): [str(n["id"]) for n in r["negatives"]] for r in records}


def compute_rankings(
    system: Retriever | Embedder,
    queries: Sequence[Query],
    corpus: Corpus | None = None,
    *,
    k: int = 50,
    exclude: Mapping[str, Collection[str]] | None = None,
    qrels: Qrels | None = None,
    chunk_size: int = 2048,
    batch_size: int = 64,
) -> tuple[Rankings, dict[str, float]]:
    """Top-``k`` rankings of ``queries`` for mining, in chunks of ``chunk_size`` queries, and positive scores.

    Args:
        system: an embedder (an exact in-memory index over ``corpus`` is built), a
            :class:`~lumir.retrieve.DenseRetriever` (e.g. ``DenseRetriever.from_store`` over a built index
            directory, for pools that are embedded once and reused) or any retriever.
        queries: the training queries (with their instructions).
        corpus: the candidate pool (needed with an embedder).
        k: depth after exclusion.
        exclude: query id -> candidate ids dropped from its ranking (each query is retrieved deeper by as many).
        qrels: with a dense retriever, each query's best positive score is measured (for a mining margin).
        chunk_size: queries per retrieval call (bounds memory on large query sets).
        batch_size: embedding batch size.

    Returns:
        ``(rankings, positive_scores)``; ``positive_scores`` is empty unless ``qrels`` is given and the system is
        dense.
    """
    from lumir.retrieve import DenseRetriever

    if isinstance(system, Embedder):
        if corpus is None:
            raise ValueError("compute_rankings with an embedder needs the corpus to embed")
        system = DenseRetriever.from_corpus(corpus, system, batch_size=batch_size)
    exclude = exclude or {}
    queries = list(queries)
    parts: list[Rankings] = []
    scores: dict[str, float] = {}
    for start in range(0, len(queries), chunk_size):
        chunk = queries[start : start + chunk_size]
        extra = max((len(exclude.get(q.id, ())) for q in chunk), default=0)
        if isinstance(system, DenseRetriever) and qrels is not None:
            rankings, found = _dense_chunk(system, chunk, k + extra, qrels)
            scores.update(found)
        else:
            rankings = system.retrieve(chunk, k + extra)
        parts.append(rankings.without(exclude, k) if exclude else rankings.top(k))
    return Rankings.concat(parts), scores


def _dense_chunk(retriever: Any, chunk: Sequence[Query], k: int, qrels: Qrels) -> tuple[Rankings, dict[str, float]]:
    """Retrieve one chunk and score each query against its positives, embedding each query only once."""
    import torch

    from lumir.embed.memo import MemoEmbedder
    from lumir.index import FlatIndex

    inner = retriever.embedder
    memo = MemoEmbedder(inner)
    retriever.embedder = memo  # the query vectors of retrieve() are kept for the positive scores
    try:
        rankings = retriever.retrieve(chunk, k)
        qv = memo.embed(chunk, role=Role.QUERY)  # served from memory
    finally:
        retriever.embedder = inner
    corpus: Corpus = retriever.corpus
    wanted = [(i, c) for i, q in enumerate(chunk) for c, rel in qrels.get(q.id, {}).items() if rel > 0 and c in corpus]
    if not wanted:
        return rankings, {}
    positions = [corpus.position(c) for _, c in wanted]
    if isinstance(retriever.index, FlatIndex):
        cv = retriever.index.vectors[torch.tensor(positions)]
    else:
        cv = inner.embed([corpus[p] for p in positions], role=Role.CANDIDATE)
    sims = (qv[[i for i, _ in wanted]] * cv).sum(dim=1).tolist()
    best: dict[str, float] = {}
    for (i, _), s in zip(wanted, sims, strict=True):
        qid = chunk[i].id
        best[qid] = max(best.get(qid, -math.inf), float(s))
    return rankings, best
