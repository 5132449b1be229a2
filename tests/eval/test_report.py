"""Tests for lumir.eval.report: tables, result loading, benchmark YAML parsing and regression checks."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from lumir.errors import DataFormatError
from lumir.eval.report import (
    Benchmark,
    CheckOutcome,
    Expectation,
    check_result,
    csv_table,
    format_check,
    load_benchmark,
    load_result,
    markdown_table,
)


def _result() -> dict[str, Any]:
    return {
        "format": "lumir-eval",
        "format_version": 1,
        "created": "2026-01-01T00:00:00",
        "versions": {"lumir": "0.1.0"},
        "config": {},
        "tasks": {
            "beir/scifact": {
                "num_queries": 300,
                "num_candidates": 5183,
                "stages": {
                    "first_stage": {"metrics": {"nDCG@10": 0.6451, "R@100": 0.93}, "seconds": 12.3},
                    "reranked": {"metrics": {"nDCG@10": 0.6812, "R@100": 0.93, "MedR": 2.0}, "seconds": 40.0},
                },
                "timings": {"embed_corpus": 80.1, "first_stage": 1.2},
            },
            "flickr8k/t2i": {
                "num_queries": 5,
                "num_candidates": 10,
                "stages": {"first_stage": {"metrics": {"R@1": 0.4, "R@5": 0.8, "MedR": 2.5}, "seconds": 0.25}},
            },
        },
    }


def test_markdown_table_layout_and_deltas() -> None:
    table = markdown_table(_result())
    lines = table.splitlines()
    # columns: stable family/K order R@1, R@5, R@100, nDCG@10, MedR regardless of dict order
    assert lines[0] == "| task | stage | R@1 | R@5 | R@100 | nDCG@10 | MedR | seconds |"
    assert lines[1] == "|:---|:---|---:|---:|---:|---:|---:|---:|"
    # 0.6451 -> 64.5 %, 0.93 -> 93.0 %; metric absent from a stage -> "-"
    assert lines[2] == "| beir/scifact | first_stage | - | - | 93.0 | 64.5 | - | 12.3 |"
    # reranked: 68.1 with delta 68.12 - 64.51 = +3.6; R@100 unchanged +0.0; MedR absent in the first stage -> no delta
    assert lines[3] == "| beir/scifact | reranked | - | - | 93.0 (+0.0) | 68.1 (+3.6) | 2 | 40.0 |"
    # MedR shown as a rank, not a percentage
    assert lines[4] == "| flickr8k/t2i | first_stage | 40.0 | 80.0 | - | - | 2.5 | 0.2 |"
    assert len(lines) == 5


def test_markdown_table_escapes_pipes_and_validates() -> None:
    result = _result()
    result["tasks"] = {"a|b": {"stages": {"s": {"metrics": {"R@1": 1.0}}}}}
    assert "| a\\|b | s | 100.0 | - |" in markdown_table(result)
    with pytest.raises(DataFormatError, match="needs a 'metrics' mapping"):
        markdown_table({"format": "lumir-eval", "format_version": 1, "tasks": {"t": {"stages": {"s": {}}}}})


def test_csv_table() -> None:
    rows = list(csv.reader(io.StringIO(csv_table(_result()))))
    assert rows[0] == [
        "task",
        "stage",
        "num_queries",
        "num_candidates",
        "R@1",
        "R@5",
        "R@100",
        "nDCG@10",
        "MedR",
        "seconds",
    ]
    assert rows[1] == ["beir/scifact", "first_stage", "300", "5183", "", "", "93.0", "64.5", "", "12.3"]
    assert rows[2] == ["beir/scifact", "reranked", "300", "5183", "", "", "93.0", "68.1", "2", "40.0"]
    assert rows[3] == ["flickr8k/t2i", "first_stage", "5", "10", "40.0", "80.0", "", "", "2.5", "0.2"]
    assert len(rows) == 4


def test_load_result_roundtrip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text(json.dumps(_result()), encoding="utf-8")
    assert load_result(path) == _result()

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something-else", "tasks": {}}), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad\.json.*not a lumir evaluation result"):
        load_result(bad)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**_result(), "format_version": 99}), encoding="utf-8")
    with pytest.raises(DataFormatError, match="format_version 99"):
        load_result(old)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"broken\.json"):
        load_result(broken)


BENCH_YAML = """\
name: scifact-minilm
description: all-MiniLM-L6-v2 on BEIR SciFact test
command: lumir eval beir --data ../shared/data/beir-scifact --embedder minilm --check benchmarks/scifact_minilm.yaml
expected:
  - {task: beir/scifact, stage: first_stage, metric: nDCG@10, value: 64.5, tolerance: 0.3}
  - {task: beir/scifact, stage: reranked, metric: ndcg@10, value: 66.0, tolerance: 1}
  - {task: beir/scifact, stage: reranked, metric: MedR, value: 3, tolerance: 0.5}
  - {task: beir/scifact, stage: first_stage, metric: R@100, value: 92.7, tolerance: 0.3}
  - {task: beir/nfcorpus, stage: first_stage, metric: nDCG@10, value: 30.0, tolerance: 0.5}
  - {task: beir/scifact, stage: final, metric: nDCG@10, value: 60.0, tolerance: 0.5}
  - {task: beir/scifact, stage: first_stage, metric: MRR@10, value: 60.0, tolerance: 0.5}
"""


def test_load_benchmark(tmp_path: Path) -> None:
    path = tmp_path / "scifact.yaml"
    path.write_text(BENCH_YAML, encoding="utf-8")
    bench = load_benchmark(path)
    assert bench.name == "scifact-minilm"
    assert bench.description.startswith("all-MiniLM")
    assert bench.command.startswith("lumir eval beir")
    assert bench.path == path
    assert len(bench.expected) == 7
    assert bench.expected[0] == Expectation("beir/scifact", "first_stage", "nDCG@10", 64.5, 0.3)
    assert bench.expected[1].metric == "nDCG@10"  # canonicalised from ndcg@10
    assert bench.expected[1].tolerance == 1.0


def test_check_result(tmp_path: Path) -> None:
    path = tmp_path / "scifact.yaml"
    path.write_text(BENCH_YAML, encoding="utf-8")
    outcomes = check_result(_result(), load_benchmark(path))
    assert [o.ok for o in outcomes] == [True, False, False, True, False, False, False]
    first = outcomes[0]
    # 0.6451 -> 64.51 percentage points; |64.51 - 64.5| = 0.01 <= 0.3
    assert first.actual == pytest.approx(64.51)
    assert first.message == "nDCG@10 = 64.51 (expected 64.50 ± 0.30)"
    # reranked nDCG 68.12 vs 66.0 ± 1 -> off by +2.12
    assert outcomes[1].actual == pytest.approx(68.12)
    assert "off by +2.12" in outcomes[1].message
    # MedR compared in ranks: 2 vs 3 ± 0.5
    assert outcomes[2].actual == 2.0
    assert "ranks" in outcomes[2].message
    # |93.0 - 92.7| = 0.3 exactly at the tolerance passes (float slack)
    assert outcomes[3].ok and outcomes[3].actual == pytest.approx(93.0)
    # missing task / stage / metric -> failure with a message saying what exists
    assert outcomes[4].actual is None and "task 'beir/nfcorpus' missing" in outcomes[4].message
    assert "beir/scifact" in outcomes[4].message
    assert "stage 'final' missing" in outcomes[5].message and "first_stage" in outcomes[5].message
    assert "metric MRR@10 missing" in outcomes[6].message and "nDCG@10" in outcomes[6].message


def test_check_result_canonicalises_result_metric_names() -> None:
    result = _result()
    result["tasks"]["flickr8k/t2i"]["stages"]["first_stage"]["metrics"] = {"S@5": 0.8}
    bench = Benchmark("b", (Expectation("flickr8k/t2i", "first_stage", "R@5", 80.0, 0.0),))
    (outcome,) = check_result(result, bench)
    assert outcome.ok and outcome.actual == pytest.approx(80.0)


def test_format_check() -> None:
    ok = CheckOutcome("t", "s", "R@1", 50.0, 0.5, 50.2, True, "R@1 = 50.20 (expected 50.00 ± 0.50)")
    bad = CheckOutcome("t", "s", "R@5", 80.0, 0.5, None, False, "metric R@5 missing")
    text = format_check([ok, bad])
    assert text.splitlines() == [
        "PASS  t / s / R@1: R@1 = 50.20 (expected 50.00 ± 0.50)",
        "FAIL  t / s / R@5: metric R@5 missing",
        "1 of 2 checks FAILED",
    ]
    assert format_check([ok]).splitlines()[-1] == "all 1 checks passed"
    assert format_check([]) == "no checks were run"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name: x\nexpected: [\n  {task: a\n", r"invalid YAML"),
        ("- just\n- a list\n", "YAML mapping"),
        (
            "description: d\nexpected:\n  - {task: a, stage: s, metric: R@1, value: 1, tolerance: 1}\n",
            "missing 'name'",
        ),
        ("name: x\nexpected: []\n", "non-empty list"),
        ("name: x\nexpectd: []\n", "unknown top-level keys"),
        ("name: [1]\nexpected: []\n", "'name' must be a string"),
        ("name: x\nexpected:\n  - {task: a, stage: s, metric: R@1, value: 1}\n", r"missing \['tolerance'\]"),
        ("name: x\nexpected:\n  - {task: a, stage: s, metric: R@1, value: 1, tolerance: 1, tol: 2}\n", "unknown"),
        ("name: x\nexpected:\n  - {task: a, stage: s, metric: R@1, value: high, tolerance: 1}\n", "must be a number"),
        ("name: x\nexpected:\n  - {task: a, stage: s, metric: R@1, value: 1, tolerance: -1}\n", ">= 0"),
        ("name: x\nexpected:\n  - {task: a, stage: s, metric: P@1, value: 1, tolerance: 1}\n", "unknown metric"),
        ("name: x\nexpected:\n  - just a string\n", "must be a mapping"),
    ],
)
def test_load_benchmark_malformed(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFormatError, match=match) as info:
        load_benchmark(path)
    assert "bench.yaml" in str(info.value)
    assert info.value.path == path


def test_load_benchmark_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(
        "name: x\nexpected:\n"
        "  - {task: a, stage: s, metric: R@1, value: 1, tolerance: 1}\n"
        "  - {task: a, stage: s, metric: R@1, value: 1, tolerance: -3}\n",
        encoding="utf-8",
    )
    with pytest.raises(DataFormatError, match=r"bench\.yaml, line 4") as info:
        load_benchmark(path)
    assert info.value.line == 4
    with pytest.raises(DataFormatError, match="cannot read"):
        load_benchmark(tmp_path / "absent.yaml")
