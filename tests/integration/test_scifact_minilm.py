"""Real-data acceptance: all-MiniLM-L6-v2 on BEIR SciFact reproduces the published nDCG@10 (64.51, MTEB)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lumir.eval.evaluator import evaluate
from lumir.eval.report import check_result, load_benchmark
from lumir.eval.tasks import load_tasks
from lumir.pipeline import PipelineSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.realdata
def test_scifact_minilm_matches_published_ndcg(data_root: Path, tmp_path: Path) -> None:
    tasks = load_tasks({"type": "beir", "path": str(data_root / "beir-scifact")})
    result = evaluate(PipelineSpec(embedder="minilm", k=100, index_cache=str(tmp_path / "cache")), tasks)
    outcomes = check_result(result, load_benchmark(REPO / "benchmarks" / "scifact_minilm.yaml"))
    assert outcomes and all(o.ok for o in outcomes), [o.message for o in outcomes]
