"""Tests for lumir.eval.metrics: hand-computed cases, pytrec_eval/ranx oracles, hypothesis properties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumir.collections import Rankings
from lumir.eval.metrics import (
    MetricSpec,
    aggregate,
    compute_metrics,
    fractional_recall_at_k,
    map_at_k,
    median_rank,
    modality_accuracy_at_1,
    mrr_at_k,
    ndcg_at_k,
    parse_metric,
    recall_at_k,
    rsum,
    success_at_k,
)
from lumir.types import Modality

# --------------------------------------------------------------------------------------------------------------------
# A tiny hand-made world.
#   q1 ranks a b c d e          ; positives b(2) d(1) x(1, never ranked); c judged 0     -> |rel| = 3
#   q2 ranks g "" f "" ""       ; the empty slot is skipped, so f is at rank 2; positive f(1) -> |rel| = 1
#   q3 judged (z=1) but absent from the rankings                                           -> scores 0, MedR k+1
#   q4 ranked but not judged (ignored); q5 judged with grade 0 only (ignored)
# --------------------------------------------------------------------------------------------------------------------


def _rankings() -> Rankings:
    ids = np.array(
        [["a", "b", "c", "d", "e"], ["g", "", "f", "", ""], ["a", "b", "c", "d", "e"]],
        dtype=object,
    )
    scores = np.array([[5, 4, 3, 2, 1], [5, -np.inf, 4, -np.inf, -np.inf], [5, 4, 3, 2, 1]], dtype=np.float32)
    return Rankings(["q1", "q2", "q4"], ids, scores)


QRELS = {
    "q1": {"b": 2, "d": 1, "x": 1, "c": 0},
    "q2": {"f": 1},
    "q3": {"z": 1},
    "q5": {"a": 0},
}


def test_recall_at_k_is_mbeir_success() -> None:
    r = _rankings()
    # q1: b at rank 2 -> miss at K=1, hit at K=2; q2: f at rank 2 (empty slot skipped); q3 unranked -> 0
    assert recall_at_k(r, QRELS, 1) == {"q1": 0.0, "q2": 0.0, "q3": 0.0}
    assert recall_at_k(r, QRELS, 2) == {"q1": 1.0, "q2": 1.0, "q3": 0.0}
    assert success_at_k(r, QRELS, 5) == recall_at_k(r, QRELS, 5)
    # mean over the judged queries q1, q2, q3 = 2/3
    assert aggregate(recall_at_k(r, QRELS, 2), "R@2") == pytest.approx(2 / 3)


def test_fractional_recall() -> None:
    r = _rankings()
    # q1 top-2 holds b of {b, d, x} -> 1/3; top-5 holds b, d -> 2/3.  q2: f of {f} -> 1.  q3 -> 0.
    assert fractional_recall_at_k(r, QRELS, 2) == pytest.approx({"q1": 1 / 3, "q2": 1.0, "q3": 0.0})
    assert fractional_recall_at_k(r, QRELS, 5) == pytest.approx({"q1": 2 / 3, "q2": 1.0, "q3": 0.0})


def test_map_at_k_trec_and_circo() -> None:
    r = _rankings()
    # q1 hits at ranks 2 and 4: P@2 = 1/2, P@4 = 2/4 -> AP@5 = (1/2 + 1/2) / |rel|=3 = 1/3
    # q2 hit at rank 2: P@2 = 1/2 -> AP = 1/2 / 1 = 1/2; q3 -> 0
    assert map_at_k(r, QRELS, 5) == pytest.approx({"q1": 1 / 3, "q2": 0.5, "q3": 0.0})
    # cutoff 2, TREC: q1 = (1/2) / 3 = 1/6; CIRCO divides by min(|rel|, K) = min(3, 2) = 2 -> 1/4
    assert map_at_k(r, QRELS, 2)["q1"] == pytest.approx(1 / 6)
    assert map_at_k(r, QRELS, 2, denominator="min_rk")["q1"] == pytest.approx(1 / 4)
    # q2: min(1, 2) = 1, same as TREC
    assert map_at_k(r, QRELS, 2, denominator="min_rk")["q2"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="CIRCO"):
        map_at_k(r, QRELS, 2, denominator="bogus")  # type: ignore[arg-type]


def test_mrr_at_k() -> None:
    r = _rankings()
    # q1 first positive at rank 2 -> 1/2; q2 at rank 2 -> 1/2; at K=1 nothing is found
    assert mrr_at_k(r, QRELS, 5) == {"q1": 0.5, "q2": 0.5, "q3": 0.0}
    assert mrr_at_k(r, QRELS, 1) == {"q1": 0.0, "q2": 0.0, "q3": 0.0}


def test_ndcg_at_k_linear_gain() -> None:
    r = _rankings()
    # q1: DCG@5 = 2/log2(3) + 1/log2(5); ideal grades sorted (2, 1, 1) -> IDCG = 2/log2(2) + 1/log2(3) + 1/log2(4)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 + 1 / math.log2(3) + 1 / math.log2(4)
    # q2: DCG = 1/log2(3), IDCG = 1 -> 0.6309...
    assert ndcg_at_k(r, QRELS, 5) == pytest.approx({"q1": dcg / idcg, "q2": 1 / math.log2(3), "q3": 0.0})
    # K=2: q1 DCG = 2/log2(3); IDCG@2 = 2 + 1/log2(3)
    assert ndcg_at_k(r, QRELS, 2)["q1"] == pytest.approx((2 / math.log2(3)) / (2 + 1 / math.log2(3)))


def test_ndcg_negative_grades_give_no_gain() -> None:
    r = Rankings.from_run({"q": {"a": 0.9, "b": 0.8, "c": 0.7}})
    # a = -1 counts as 0 (as trec_eval); DCG@3 = 2/log2(3); IDCG = 2 -> 1/log2(3)
    assert ndcg_at_k(r, {"q": {"a": -1, "b": 2}}, 3)["q"] == pytest.approx(1 / math.log2(3))


def test_median_rank() -> None:
    r = _rankings()
    # ranks of first positive: q1 2, q2 2, q3 absent -> k + 1 = 6 (k = ranking width 5)
    ranks = median_rank(r, QRELS)
    assert ranks == {"q1": 2.0, "q2": 2.0, "q3": 6.0}
    assert aggregate(ranks, "MedR") == 2.0  # median(2, 2, 6)
    # with k = 1 nobody is found: every query gets rank 2
    assert median_rank(r, QRELS, 1) == {"q1": 2.0, "q2": 2.0, "q3": 2.0}
    assert aggregate({"a": 1.0, "b": 4.0}, "MedR") == 2.5  # median of an even count is the midpoint


def test_modality_accuracy_at_1() -> None:
    r = _rankings()  # top-1: q1 -> a, q2 -> g, q4 -> a
    modalities = {"a": "image", "g": "text", "b": "image,text"}
    # desired "image" for all: q1 1, q2 0, q4 1
    assert modality_accuracy_at_1(r, modalities, Modality.IMAGE) == {"q1": 1.0, "q2": 0.0, "q4": 1.0}
    # per-query desires, "text,image" spelling accepted; q9 unranked -> 0
    desired = {"q1": "text", "q2": "text", "q9": "image"}
    got = modality_accuracy_at_1(r, modalities, desired, query_ids=["q1", "q2", "q9"])
    assert got == {"q1": 0.0, "q2": 1.0, "q9": 0.0}
    with pytest.raises(ValueError, match="missing from candidate_modalities"):
        modality_accuracy_at_1(r, {"a": "image"}, "text")
    with pytest.raises(ValueError, match="q4"):
        modality_accuracy_at_1(r, modalities, {"q1": "text", "q2": "text"})


def test_parse_metric_aliases_and_errors() -> None:
    assert parse_metric("nDCG@10") == MetricSpec("nDCG", 10)
    assert parse_metric("ndcg@10").label == "nDCG@10"
    assert parse_metric("S@5").label == "R@5"
    assert parse_metric("recall@5").label == "R@5"
    assert parse_metric("Success@1").label == "R@1"
    assert parse_metric("fr@100").label == "FR@100"
    assert parse_metric("MAP@100").label == "mAP@100"
    assert parse_metric("mrr@10").label == "MRR@10"
    assert parse_metric("medr") == MetricSpec("MedR", None)
    assert parse_metric("M.A.@1").label == "M.A.@1"
    assert parse_metric("m.a.").label == "M.A.@1"
    assert parse_metric("nDCG").label == "nDCG"
    with pytest.raises(ValueError, match=r"valid names.*nDCG@K.*MedR"):
        parse_metric("precision@5")
    with pytest.raises(ValueError, match="positive integer"):
        parse_metric("R@ten")
    with pytest.raises(ValueError, match=">= 1"):
        parse_metric("R@0")
    with pytest.raises(ValueError, match="K=1 only"):
        parse_metric("M.A.@5")


def test_compute_metrics_means_and_canonical_keys() -> None:
    r = _rankings()
    got = compute_metrics(r, QRELS, ["S@2", "FR@5", "mAP@5", "MRR@5", "nDCG@5", "MedR", "recall@1"])
    assert list(got) == ["R@2", "FR@5", "mAP@5", "MRR@5", "nDCG@5", "MedR", "R@1"]
    # means over q1, q2, q3 (see the per-metric tests above)
    assert got["R@2"] == pytest.approx(2 / 3)
    assert got["FR@5"] == pytest.approx((2 / 3 + 1) / 3)
    assert got["mAP@5"] == pytest.approx((1 / 3 + 1 / 2) / 3)
    assert got["MRR@5"] == pytest.approx(1 / 3)
    dcg_q1 = (2 / math.log2(3) + 1 / math.log2(5)) / (2 + 1 / math.log2(3) + 0.5)
    assert got["nDCG@5"] == pytest.approx((dcg_q1 + 1 / math.log2(3)) / 3)
    assert got["MedR"] == 2.0
    assert got["R@1"] == 0.0


def test_compute_metrics_k_beyond_ranking_width() -> None:
    r = _rankings()
    # width 5, K = 10: nothing new is found, but nDCG's ideal DCG still uses K = 10 (all three positives of q1)
    assert compute_metrics(r, QRELS, ["nDCG@10"])["nDCG@10"] == pytest.approx(
        compute_metrics(r, QRELS, ["nDCG@5"])["nDCG@5"]
    )
    assert compute_metrics(r, QRELS, ["MedR@10"])["MedR@10"] == 2.0  # q3 gets 11, median stays 2


def test_compute_metrics_modality_accuracy_uses_judged_queries() -> None:
    r = _rankings()
    modalities = {"a": "image", "g": "image"}
    # judged queries q1 (top a: image), q2 (top g: image), q3 (unranked: 0) -> 2/3; q4 (unjudged) ignored
    got = compute_metrics(r, QRELS, ["M.A.@1"], candidate_modalities=modalities, desired_modality="image")
    assert got == {"M.A.@1": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="candidate_modalities"):
        compute_metrics(r, QRELS, ["M.A.@1"])


def test_compute_metrics_errors() -> None:
    r = _rankings()
    with pytest.raises(ValueError, match="positive judgment"):
        compute_metrics(r, {"q1": {"a": 0}}, ["R@1"])
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(r, QRELS, ["bogus@1"])
    with pytest.raises(ValueError, match="duplicate query ids"):
        Rankings(["q1", "q1"], np.array([["a"], ["b"]], dtype=object), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="no per-query values"):
        aggregate({}, "R@1")


def test_rsum() -> None:
    # (50 + 75 + 100) + (25 + 50 + 75) percent = 375 -> 3.75 in fractions
    assert rsum({"R@1": 0.5, "R@5": 0.75, "R@10": 1.0, "nDCG@10": 0.3}, [0.25, 0.5, 0.75]) == 3.75
    assert rsum({"S@1": 0.5, "recall@5": 0.5, "R@10": 0.5}, {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0}) == 1.5
    with pytest.raises(ValueError, match="R@10"):
        rsum({"R@1": 0.5, "R@5": 0.75}, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="exactly"):
        rsum([0.1, 0.2], [0.1, 0.2, 0.3])


# --------------------------------------------------------------------------------------------------------------------
# Oracles: pytrec_eval and ranx on a seeded random run (50 queries, graded qrels 0-2, untied scores).
# --------------------------------------------------------------------------------------------------------------------


def _random_world(seed: int = 7) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    rng = np.random.default_rng(seed)
    pool = [f"c{i:03d}" for i in range(200)]
    run: dict[str, dict[str, float]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for q in range(50):
        qid = f"q{q:02d}"
        ranked = rng.choice(200, size=30, replace=False)
        scores = rng.choice(100_000, size=30, replace=False) / 1000.0  # distinct, exact enough in float32
        run[qid] = {pool[c]: float(s) for c, s in zip(ranked, scores, strict=True)}
        judged = rng.choice(200, size=int(rng.integers(1, 12)), replace=False)
        grades = rng.integers(0, 3, size=len(judged))
        grades[0] = max(grades[0], 1)  # at least one positive per query
        qrels[qid] = {pool[c]: int(g) for c, g in zip(judged, grades, strict=True)}
        # make sure some positives are actually retrieved
        for c in ranked[: int(rng.integers(0, 4))]:
            qrels[qid][pool[c]] = int(rng.integers(0, 3))
    return run, qrels


def test_oracle_pytrec_eval() -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    run, qrels = _random_world()
    rankings = Rankings.from_run(run)
    run_exact = rankings.to_run()  # the float32 scores the metrics saw
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "map_cut_10", "recall_10", "success_10"})
    ref = full.evaluate(run_exact)
    cut = {q: dict(sorted(d.items(), key=lambda kv: -kv[1])[:10]) for q, d in run_exact.items()}
    ref_rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    ours = {
        "ndcg_cut_10": ndcg_at_k(rankings, qrels, 10),
        "map_cut_10": map_at_k(rankings, qrels, 10),
        "recall_10": fractional_recall_at_k(rankings, qrels, 10),
        "success_10": recall_at_k(rankings, qrels, 10),
    }
    assert set(ref) == set(ours["ndcg_cut_10"])
    for measure, values in ours.items():
        for qid, value in values.items():
            assert value == pytest.approx(ref[qid][measure], abs=1e-6), (measure, qid)
    for qid, value in mrr_at_k(rankings, qrels, 10).items():
        assert value == pytest.approx(ref_rr[qid]["recip_rank"], abs=1e-6), qid
    # the oracle is not trivial: some queries hit, some miss
    assert 0.0 < aggregate(ours["success_10"], "R@10") < 1.0


def test_oracle_ranx() -> None:
    ranx = pytest.importorskip("ranx")
    run, qrels = _random_world(seed=11)
    rankings = Rankings.from_run(run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba type-safety warnings from ranx internals
        ref = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(rankings.to_run()), ["ndcg@10", "map@10"])
    # ranx ndcg@k = Järvelin linear gains like trec_eval; ranx map@k divides by all positives like map_cut_k.
    got = compute_metrics(rankings, qrels, ["nDCG@10", "mAP@10"])
    assert got["nDCG@10"] == pytest.approx(float(ref["ndcg@10"]), abs=1e-6)
    assert got["mAP@10"] == pytest.approx(float(ref["map@10"]), abs=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------------------------

POOL = [f"c{i}" for i in range(10)]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Rankings, dict[str, dict[str, int]]]:
    n_queries = draw(st.integers(1, 4))
    width = 8
    rows: list[list[tuple[str, float]]] = []
    qrels: dict[str, dict[str, int]] = {}
    for q in range(n_queries):
        ranked = draw(st.lists(st.sampled_from(POOL), max_size=width, unique=True))
        rows.append([(c, float(width - j)) for j, c in enumerate(ranked)])
        judged = draw(st.dictionaries(st.sampled_from(POOL), st.integers(-1, 3), min_size=1, max_size=6))
        positive = draw(st.sampled_from(POOL))
        judged[positive] = draw(st.integers(1, 3))
        qrels[f"q{q}"] = judged
    return Rankings.from_hits([f"q{q}" for q in range(n_queries)], rows, width), qrels


@settings(max_examples=60, deadline=None)
@given(worlds())
def test_property_metrics_in_unit_interval(world: tuple[Rankings, dict[str, dict[str, int]]]) -> None:
    rankings, qrels = world
    for k in (1, 3, 8, 12):
        for fn in (recall_at_k, fractional_recall_at_k, map_at_k, mrr_at_k, ndcg_at_k):
            for value in fn(rankings, qrels, k).values():
                assert 0.0 <= value <= 1.0 + 1e-12, (fn.__name__, k, value)
        for rank in median_rank(rankings, qrels, k).values():
            assert 1 <= rank <= k + 1


@settings(max_examples=60, deadline=None)
@given(worlds())
def test_property_recall_monotone_in_k(world: tuple[Rankings, dict[str, dict[str, int]]]) -> None:
    rankings, qrels = world
    previous = recall_at_k(rankings, qrels, 1)
    for k in range(2, 11):
        current = recall_at_k(rankings, qrels, k)
        assert all(current[q] >= previous[q] for q in current)
        previous = current


@settings(max_examples=60, deadline=None)
@given(worlds(), st.integers(1, 12))
def test_property_ideal_ranking_scores_one(world: tuple[Rankings, dict[str, dict[str, int]]], k: int) -> None:
    _, qrels = world
    ideal = {q: {c: float(g) for c, g in rels.items() if g > 0} for q, rels in qrels.items()}
    rankings = Rankings.from_run(ideal)  # all positives, sorted by grade
    assert all(v == pytest.approx(1.0) for v in ndcg_at_k(rankings, qrels, k).values())
    assert all(v == 1.0 for v in recall_at_k(rankings, qrels, k).values())
    assert all(v == 1.0 for v in mrr_at_k(rankings, qrels, k).values())
    assert all(v == pytest.approx(1.0) for v in map_at_k(rankings, qrels, k, denominator="min_rk").values())
