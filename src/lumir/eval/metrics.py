"""Retrieval metrics over ``(Rankings, Qrels)``: Recall@K, TREC recall, mAP, MRR, nDCG, MedR, M.A.@1, RSUM.

Design: every metric function returns **per-query values** as ``dict[str, float]`` (query id -> value, in qrels
order); :func:`aggregate` reduces them (the mean, or the median for MedR) and :func:`compute_metrics` does both for
a list of metric names such as ``["R@1", "nDCG@10"]``, returning fractions in [0, 1] (MedR as a rank).

Naming (the one trap in this field):
    * ``R@K`` — **M-BEIR Recall@K**: 1 if *any* positive is in the top K, else 0. This is what the M-BEIR/UniIR,
      CLIP and MM-Embed papers call Recall@K, and what lumir reports by default. In TREC terms it is
      ``success@K`` (pytrec_eval ``success_K``, ranx ``hit_rate@K``), so ``S@K``, ``Success@K`` and ``Recall@K``
      are accepted aliases and all canonicalise to ``R@K``.
    * ``FR@K`` — **fractional (TREC) recall@K**: ``|positives in top K| / |positives|`` (pytrec_eval ``recall_K``,
      ranx ``recall@K``). pyserini's ``2cr/m_beir.yaml`` labels this one ``R@`` and the success one ``S@``; lumir
      keeps ``R@K`` for the M-BEIR meaning because that is what the papers report.
    * ``mAP@K`` (TREC ``map_cut_K``), ``MRR@K``, ``nDCG@K`` (TREC ``ndcg_cut_K``), ``MedR``, ``M.A.@1``.
    * Without ``@K`` a metric uses the whole ranking (the width of ``Rankings``).

Query set convention:
    Metrics average over the queries that have at least one positive judgment (grade > 0) in the qrels. A judged
    query absent from the rankings scores 0 (and gets rank K+1 for MedR); ranked queries without judgments are
    ignored. Empty slots (``""``) in rankings are skipped, so the rank of a candidate is its position among the
    non-empty slots of its row. Rank order is the column order of ``Rankings`` (sorted by score); duplicate ids in
    a row are assumed absent. This matches pytrec_eval (and ranx) when every judged query is ranked and scores are
    untied (trec_eval re-sorts by score and breaks ties by candidate id, which can reorder tied candidates).
    Grades <= 0 are non-relevant and contribute no gain (as trec_eval clips negative gains to 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lumir.collections import Rankings
from lumir.types import Modality, Qrels

__all__ = [
    "METRIC_NAMES",
    "MetricSpec",
    "aggregate",
    "compute_metrics",
    "fractional_recall_at_k",
    "map_at_k",
    "median_rank",
    "modality_accuracy_at_1",
    "mrr_at_k",
    "ndcg_at_k",
    "parse_metric",
    "recall_at_k",
    "rsum",
    "success_at_k",
]

_ALIASES: dict[str, str] = {
    "r": "R",
    "recall": "R",
    "s": "R",
    "success": "R",
    "fr": "FR",
    "map": "mAP",
    "mrr": "MRR",
    "ndcg": "nDCG",
    "medr": "MedR",
    "m.a.": "M.A.",
    "ma": "M.A.",
}
METRIC_NAMES = (
    "R@K (aliases: S@K, Recall@K, Success@K)",
    "FR@K",
    "mAP@K (alias MAP@K)",
    "MRR@K",
    "nDCG@K",
    "MedR",
    "M.A.@1",
)
"""Valid metric names for :func:`parse_metric` (case-insensitive; ``@K`` optional except where shown)."""

_FAMILY_ORDER = ("R", "FR", "mAP", "MRR", "nDCG", "MedR", "M.A.")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A parsed metric name: the canonical family (``"R"``, ``"FR"``, ``"mAP"``, ``"MRR"``, ``"nDCG"``,
    ``"MedR"``, ``"M.A."``) and the cutoff ``k`` (None = the whole ranking).

    Example:
        >>> parse_metric("ndcg@10").label
        'nDCG@10'
    """

    name: str
    k: int | None = None

    @property
    def label(self) -> str:
        """The canonical metric name, e.g. ``"nDCG@10"``; the key used by :func:`compute_metrics`."""
        return self.name if self.k is None else f"{self.name}@{self.k}"

    @property
    def is_rank(self) -> bool:
        """True for MedR, whose values are ranks rather than fractions."""
        return self.name == "MedR"

    def sort_key(self) -> tuple[int, int]:
        """Order for tables: by family (R, FR, mAP, MRR, nDCG, MedR, M.A.), then by k."""
        return _FAMILY_ORDER.index(self.name), -1 if self.k is None else self.k

    def __str__(self) -> str:
        return self.label


def parse_metric(name: str) -> MetricSpec:
    """Parse a metric name such as ``"R@5"``, ``"S@10"``, ``"nDCG@10"``, ``"map@100"``, ``"MedR"``, ``"M.A.@1"``.

    Args:
        name: the metric name; case-insensitive, ``@K`` optional (then the whole ranking is used).

    Returns:
        The canonical :class:`MetricSpec` (aliases such as ``S@K``/``Recall@K`` map to ``R@K``).

    Raises:
        ValueError: unknown name or bad cutoff; the message lists the valid names.
    """
    base, sep, k_text = str(name).strip().partition("@")
    family = _ALIASES.get(base.strip().lower())
    if family is None:
        raise ValueError(f"unknown metric {name!r}; valid names (case-insensitive): {', '.join(METRIC_NAMES)}")
    k: int | None = None
    if sep:
        try:
            k = int(k_text.strip())
        except ValueError:
            raise ValueError(f"metric {name!r}: cutoff after '@' must be a positive integer, e.g. 'nDCG@10'") from None
        if k < 1:
            raise ValueError(f"metric {name!r}: cutoff must be >= 1")
    if family == "M.A.":
        if k not in (None, 1):
            raise ValueError(f"metric {name!r}: modality accuracy is defined at K=1 only; use 'M.A.@1'")
        k = 1
    return MetricSpec(family, k)


@dataclass(frozen=True)
class _Judged:
    """Grades of the ranked candidates of every judged query, cut to ``depth`` (the shared input of all kernels)."""

    query_ids: list[str]  # judged queries (>= 1 positive), qrels order
    grades: np.ndarray  # (n, depth) float64 grade of the candidate at each rank; 0 = unjudged / empty / unranked
    n_rel: np.ndarray  # (n,) number of positives per query
    ideal: np.ndarray  # (n, depth) positive grades sorted descending, zero padded (for the ideal DCG)


def _judge(rankings: Rankings, qrels: Qrels, depth: int) -> _Judged:
    qids = [q for q, rels in qrels.items() if any(g > 0 for g in rels.values())]
    if not qids:
        raise ValueError("no query in the qrels has a positive judgment (grade > 0); nothing to evaluate")
    rows = {q: i for i, q in enumerate(rankings.query_ids)}  # unique: Rankings enforces it
    grades = np.zeros((len(qids), depth), dtype=np.float64)
    ideal = np.zeros((len(qids), depth), dtype=np.float64)
    n_rel = np.zeros(len(qids), dtype=np.float64)
    for i, qid in enumerate(qids):
        rels = qrels[qid]
        positives = sorted((g for g in rels.values() if g > 0), reverse=True)
        n_rel[i] = len(positives)
        top = positives[:depth]
        ideal[i, : len(top)] = top
        r = rows.get(qid)
        if r is None:
            continue
        ranked = [c for c in rankings.ids[r] if c != ""][:depth]
        grades[i, : len(ranked)] = [rels.get(c, 0) for c in ranked]
    return _Judged(qids, grades, n_rel, ideal)


def _first_hit(rel: np.ndarray) -> np.ndarray:
    """0-based rank of the first positive per row, -1 where none."""
    if rel.shape[1] == 0:
        return np.full(rel.shape[0], -1)
    return np.where(rel.any(axis=1), rel.argmax(axis=1), -1)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (only at cutoff 0, i.e. a zero-width ranking)."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _kernel(family: str, judged: _Judged, k: int, *, map_denominator: str = "relevant") -> np.ndarray:
    """Per-query values of one metric family at cutoff ``k`` (k <= judged depth)."""
    grades = judged.grades[:, :k]
    rel = grades > 0
    if family == "R":
        return np.asarray(rel.any(axis=1), dtype=np.float64)
    if family == "FR":
        return np.asarray(rel.sum(axis=1) / judged.n_rel, dtype=np.float64)
    if family == "mAP":
        precision = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
        denominator = judged.n_rel if map_denominator == "relevant" else np.minimum(judged.n_rel, k)
        return _safe_divide((precision * rel).sum(axis=1), denominator)
    if family == "MRR":
        first = _first_hit(rel)
        return np.where(first >= 0, 1.0 / (np.maximum(first, 0) + 1.0), 0.0)
    if family == "nDCG":
        discount = 1.0 / np.log2(np.arange(2, k + 2))
        dcg = (np.maximum(grades, 0.0) * discount).sum(axis=1)
        return _safe_divide(dcg, (judged.ideal[:, :k] * discount).sum(axis=1))
    if family == "MedR":
        first = _first_hit(rel)
        return np.where(first >= 0, first + 1.0, k + 1.0)
    raise ValueError(f"metric family {family!r} is not computed from qrels")


def _resolve_k(k: int | None, rankings: Rankings) -> int:
    if k is None:
        return rankings.k
    if k < 1:
        raise ValueError(f"cutoff k must be >= 1, got {k}")
    return int(k)


def _per_query(family: str, rankings: Rankings, qrels: Qrels, k: int | None, **kw: str) -> dict[str, float]:
    depth = _resolve_k(k, rankings)
    judged = _judge(rankings, qrels, depth)
    values = _kernel(family, judged, depth, **kw)
    return dict(zip(judged.query_ids, values.tolist(), strict=True))


def recall_at_k(rankings: Rankings, qrels: Qrels, k: int | None) -> dict[str, float]:
    """M-BEIR Recall@K (``R@K``): 1.0 if any positive is in the top ``k``, else 0.0 — TREC ``success@K``.

    This is the Recall@K of M-BEIR/UniIR (Wei et al., 2023), CLIP and MM-Embed; see :func:`fractional_recall_at_k`
    for TREC recall.

    Example:
        >>> r = Rankings.from_run({"q": {"a": 0.9, "b": 0.5}})
        >>> recall_at_k(r, {"q": {"b": 1, "c": 1}}, 1), recall_at_k(r, {"q": {"b": 1, "c": 1}}, 2)
        ({'q': 0.0}, {'q': 1.0})
    """
    return _per_query("R", rankings, qrels, k)


success_at_k = recall_at_k
"""Alias of :func:`recall_at_k` under its TREC name."""


def fractional_recall_at_k(rankings: Rankings, qrels: Qrels, k: int | None) -> dict[str, float]:
    """TREC recall@K (``FR@K``): ``|positives in top k| / |positives in qrels|`` (pytrec_eval ``recall_K``).

    Not what M-BEIR papers report as Recall@K (they report :func:`recall_at_k`).
    """
    return _per_query("FR", rankings, qrels, k)


def map_at_k(
    rankings: Rankings, qrels: Qrels, k: int | None, *, denominator: Literal["relevant", "min_rk"] = "relevant"
) -> dict[str, float]:
    """Average precision at cutoff ``k`` (``mAP@K`` once averaged).

    ``AP@K = sum_{r <= k, rel(r)} P@r / D``. With ``denominator="relevant"`` (default), D is the number of positives
    in the qrels, exactly pytrec_eval's ``map_cut_K`` and ranx's ``map@K``. With ``"min_rk"``, D is
    ``min(|positives|, k)``, the CIRCO benchmark's mAP@K (Baldrati et al., 2023), which does not penalise queries
    with more than ``k`` positives; :func:`compute_metrics` always uses the TREC definition.
    """
    if denominator not in ("relevant", "min_rk"):
        raise ValueError(f"denominator must be 'relevant' (TREC) or 'min_rk' (CIRCO), got {denominator!r}")
    return _per_query("mAP", rankings, qrels, k, map_denominator=denominator)


def mrr_at_k(rankings: Rankings, qrels: Qrels, k: int | None) -> dict[str, float]:
    """Reciprocal rank of the first positive within the top ``k`` (0 if none) — pytrec_eval ``recip_rank`` on a
    run cut to ``k``."""
    return _per_query("MRR", rankings, qrels, k)


def ndcg_at_k(rankings: Rankings, qrels: Qrels, k: int | None) -> dict[str, float]:
    """nDCG@K with linear gains, exactly pytrec_eval's ``ndcg_cut_K`` (Järvelin & Kekäläinen, 2002).

    ``DCG@K = sum_{r <= k} grade(r) / log2(r + 1)``; the ideal DCG sorts all positive grades of the query in the
    qrels (ranked or not) and cuts at ``k``. Negative grades count as 0. Equals ranx ``ndcg@K``; ranx
    ``ndcg_burges@K`` (exponential gains ``2^grade - 1``) differs whenever grades exceed 1.
    """
    return _per_query("nDCG", rankings, qrels, k)


def median_rank(rankings: Rankings, qrels: Qrels, k: int | None = None) -> dict[str, float]:
    """Per-query 1-based rank of the first positive, for ``MedR`` (aggregate with the median: :func:`aggregate`).

    A query with no positive in the top ``k`` (``k`` = the ranking width by default), or absent from the rankings,
    gets rank ``k + 1``, so MedR is a lower bound when more than half the queries miss.
    """
    return _per_query("MedR", rankings, qrels, k)


def modality_accuracy_at_1(
    rankings: Rankings,
    candidate_modalities: Mapping[str, str | Modality],
    desired_modality: str | Modality | Mapping[str, str | Modality],
    *,
    query_ids: Sequence[str] | None = None,
) -> dict[str, float]:
    """MM-Embed's modality accuracy M.A.@1: 1.0 if the top-1 candidate has the desired candidate modality.

    Lin et al., "MM-Embed: Universal Multimodal Retrieval with Multimodal LLMs" (2024), Table 2: the share of
    queries whose top-1 candidate has the task's target modality (e.g. an image for text-to-image retrieval),
    exposing the text-retrieval bias of MLLM retrievers. Relevance plays no part.

    Args:
        rankings: the rankings; the top-1 candidate is the first non-empty slot of a row.
        candidate_modalities: candidate id -> modality (``Modality`` or a string such as ``"image,text"``).
        desired_modality: one modality for every query, or a mapping query id -> modality.
        query_ids: the queries to score (default: every ranked query); an unranked query or an empty row scores 0.

    Raises:
        ValueError: a top-1 candidate has no modality, or a query has no desired modality.
    """
    rows = {q: i for i, q in enumerate(rankings.query_ids)}  # unique: Rankings enforces it
    qids = list(rankings.query_ids) if query_ids is None else list(query_ids)
    parsed: dict[str, Modality] = {}

    def parse(value: str | Modality) -> Modality:
        key = str(value)
        if key not in parsed:
            parsed[key] = Modality.parse(value)
        return parsed[key]

    out: dict[str, float] = {}
    for qid in qids:
        if isinstance(desired_modality, str):
            want = parse(desired_modality)
        elif qid in desired_modality:
            want = parse(desired_modality[qid])
        else:
            raise ValueError(f"no desired modality for query {qid!r}; desired_modality must cover every query")
        r = rows.get(qid)
        top = next((c for c in rankings.ids[r] if c != ""), None) if r is not None else None
        if top is None:
            out[qid] = 0.0
            continue
        if top not in candidate_modalities:
            raise ValueError(f"candidate {top!r} (top-1 of query {qid!r}) is missing from candidate_modalities")
        out[qid] = 1.0 if parse(candidate_modalities[top]) == want else 0.0
    return out


def aggregate(values: Mapping[str, float], metric: str | MetricSpec) -> float:
    """Reduce per-query values to one number: the median for MedR, the mean for every other metric.

    Raises:
        ValueError: ``values`` is empty.
    """
    spec = metric if isinstance(metric, MetricSpec) else parse_metric(metric)
    if not values:
        raise ValueError(f"no per-query values to aggregate for {spec.label}")
    arr = np.fromiter(values.values(), dtype=np.float64, count=len(values))
    return float(np.median(arr) if spec.is_rank else arr.mean())


def compute_metrics(
    rankings: Rankings,
    qrels: Qrels,
    metrics: Sequence[str],
    *,
    candidate_modalities: Mapping[str, str | Modality] | None = None,
    desired_modality: str | Modality | Mapping[str, str | Modality] | None = None,
) -> dict[str, float]:
    """Aggregate metrics over the judged queries, keyed by canonical name (``"S@5"`` is returned as ``"R@5"``).

    Args:
        rankings: the rankings to score.
        qrels: query id -> {candidate id -> grade}; queries with a positive grade form the evaluated set.
        metrics: metric names, e.g. ``["R@1", "R@5", "nDCG@10", "MedR"]`` (see :func:`parse_metric`).
        candidate_modalities: candidate id -> modality; required for ``M.A.@1``.
        desired_modality: the target candidate modality (one, or per query id); required for ``M.A.@1``.

    Returns:
        Means as fractions in [0, 1]; MedR as a median rank.

    Example:
        >>> r = Rankings.from_run({"q1": {"a": 0.9, "b": 0.5}, "q2": {"c": 0.8, "d": 0.1}})
        >>> compute_metrics(r, {"q1": {"b": 1}, "q2": {"c": 2}}, ["S@1", "MRR@10"])
        {'R@1': 0.5, 'MRR@10': 0.75}
    """
    specs = [parse_metric(m) for m in metrics]
    cutoffs = {spec.label: _resolve_k(spec.k, rankings) for spec in specs}
    judged = _judge(rankings, qrels, max(cutoffs.values(), default=0))
    out: dict[str, float] = {}
    for spec in specs:
        if spec.name == "M.A.":
            if candidate_modalities is None or desired_modality is None:
                raise ValueError("M.A.@1 needs candidate_modalities and desired_modality")
            per_query = modality_accuracy_at_1(
                rankings, candidate_modalities, desired_modality, query_ids=judged.query_ids
            )
            out[spec.label] = aggregate(per_query, spec)
            continue
        values = _kernel(spec.name, judged, cutoffs[spec.label])
        out[spec.label] = float(np.median(values) if spec.is_rank else values.mean())
    return out


def rsum(
    first_direction: Mapping[str, float] | Sequence[float], second_direction: Mapping[str, float] | Sequence[float]
) -> float:
    """RSUM for image-text retrieval: R@1 + R@5 + R@10 of image->text plus the same of text->image.

    The usual summary of Flickr30k/MSCOCO retrieval tables (e.g. VSE++, Faghri et al. 2018, and its followers).
    Each direction is either a metric dict as returned by :func:`compute_metrics` (must hold ``R@1``, ``R@5``
    and ``R@10``, aliases accepted) or the three values ``(R@1, R@5, R@10)``. The result is in the unit of the
    inputs: fractions give a value in [0, 6]; papers report percentages, i.e. ``100 * rsum(...)`` (max 600).

    Example:
        >>> rsum({"R@1": 0.5, "R@5": 0.75, "R@10": 1.0}, [0.25, 0.5, 0.75])
        3.75
    """
    total = 0.0
    for direction in (first_direction, second_direction):
        if isinstance(direction, Mapping):
            by_label: dict[str, float] = {}
            for key, value in direction.items():
                try:
                    by_label[parse_metric(key).label] = float(value)
                except ValueError:
                    continue
            missing = [m for m in ("R@1", "R@5", "R@10") if m not in by_label]
            if missing:
                raise ValueError(f"rsum needs R@1, R@5 and R@10 per direction; missing {missing} in {dict(direction)}")
            total += by_label["R@1"] + by_label["R@5"] + by_label["R@10"]
        else:
            values = [float(v) for v in direction]
            if len(values) != 3:
                raise ValueError(f"rsum needs exactly (R@1, R@5, R@10) per direction, got {len(values)} values")
            total += sum(values)
    return total
