"""End to end on the toy world: rewrite -> retrieve -> rerank -> evaluate, with known answers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from lumir.collections import Corpus, Rankings
from lumir.eval import EvalResult, evaluate
from lumir.eval.tasks import load_tasks
from lumir.pipeline import Pipeline, PipelineSpec
from lumir.retrieve import DenseRetriever
from lumir.testing.fakes import ColorEmbedder, HashEmbedder
from lumir.testing.toy import toy_corpus
from lumir.types import Query


class ReverseReranker:
    """Reverses the top-k of each ranking: a deliberately bad reranker with a predictable effect."""

    def __init__(self, k: int = 5) -> None:
        self.k = k

    def rerank(self, queries: Sequence[Query], rankings: Rankings, corpus: Corpus) -> Rankings:
        rows = [[(h.id, float(-h.rank)) for h in reversed(hits[: self.k])] for _, hits in rankings]
        return Rankings.from_hits(rankings.query_ids, rows, self.k)

    def spec(self) -> dict[str, Any]:
        return {"type": "reverse", "k": self.k}


class UpperRewriter:
    def rewrite(self, queries: Sequence[Query]) -> list[Query]:
        from dataclasses import replace

        return [replace(q, text=(q.text or "").upper()) for q in queries]

    def spec(self) -> dict[str, Any]:
        return {"type": "upper"}


def test_pipeline_records_every_stage_and_timing() -> None:
    retriever = DenseRetriever.from_corpus(toy_corpus(), ColorEmbedder(), candidate_modality="image")
    p = Pipeline(retriever, rewriter=UpperRewriter(), reranker=ReverseReranker(k=2), k=4)
    out = p.run([Query("q", text="blue")])
    assert list(out.stages) == ["first_stage", "reranked"]
    assert out.queries[0].text == "BLUE" and out.original[0].text == "blue" and out.rewrites == {"q": "BLUE"}
    assert out.stages["first_stage"].for_query("q")[0].id == "img-blue"
    first = [h.id for h in out.stages["first_stage"].for_query("q")]
    assert [h.id for h in out.final.for_query("q")] == first[:2][::-1]
    assert set(out.seconds) == {"rewrite", "first_stage", "reranked"}


def test_pipeline_refuses_a_reranker_budget_above_its_depth() -> None:
    retriever = DenseRetriever.from_corpus(toy_corpus(), ColorEmbedder())
    with pytest.raises(ValueError, match=r"reranker's budget k=20 exceeds the first-stage depth k=10"):
        Pipeline(retriever, reranker=ReverseReranker(k=20), k=10)


def test_one_call_search_needs_no_query_ids() -> None:
    p = Pipeline(DenseRetriever.from_corpus(toy_corpus(), ColorEmbedder(), candidate_modality="image"), k=5)
    assert [h.id for h in p.search("green", k=1)] == ["img-green"]
    from lumir.testing.toy import color_image

    assert p.search(image=color_image("orange"), k=1)[0].id == "img-orange"


def test_evaluate_toy_task_writes_complete_result(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    result = evaluate(ColorEmbedder(), "toy", k=10, output=out, run_dir=tmp_path / "runs")
    saved = json.loads(out.read_text())
    assert saved["format"] == "lumir-eval" and "torch" in saved["versions"]
    stage = saved["tasks"]["toy/t2i"]["stages"]["first_stage"]
    assert stage["metrics"]["R@1"] == 1.0 and stage["metrics"]["R@5"] == 1.0
    assert saved["tasks"]["toy/t2i"]["timings"]["embed_corpus"] >= 0
    assert (tmp_path / "runs" / "toy_t2i.first_stage.trec").is_file()
    assert result.to_dict() == saved and dict(result) == saved
    again = EvalResult.load(out)
    assert again.score("toy/t2i", "r@1") == 1.0 and again.tasks == ["toy/t2i"]


def test_evaluate_a_ready_pipeline_reports_every_stage_side_by_side() -> None:
    (task,) = load_tasks("toy")
    pipeline = Pipeline(DenseRetriever.from_corpus(task.corpus, ColorEmbedder()), reranker=ReverseReranker(), k=10)
    result = evaluate(pipeline, [task])
    assert result.stages("toy/t2i") == ["first_stage", "reranked"]
    assert result.score("toy/t2i", "R@1", stage="first_stage") == 1.0
    assert result.score("toy/t2i", "R@1") == 0.0  # the final stage: the right image was reversed to rank 5
    assert result.score("toy/t2i", "R@5", stage="reranked") == 1.0
    assert result["config"]["pipeline"]["reranker"] == {"type": "reverse", "k": 5}


def test_evaluate_a_spec_with_a_rewriter_records_the_rewrites() -> None:
    spec = PipelineSpec(embedder="color", k=8, rewriter="template:{text} thing")
    result = evaluate(spec, "toy")
    entry = result.task("toy/t2i")
    assert entry["rewrites"]["q-red"] == "red thing"
    assert set(entry["timings"]) >= {"embed_corpus", "rewrite", "first_stage"}
    assert result.score("toy/t2i", "R@1") == 1.0 and result.config["pipeline"]["rewriter"] == "template:{text} thing"


def test_unknown_stage_or_metric_says_what_there_is() -> None:
    result = evaluate("color", "toy", k=8)
    with pytest.raises(KeyError, match=r"no stage 'reranked'; stages: \['first_stage'\]"):
        result.score("toy/t2i", "R@1", stage="reranked")
    with pytest.raises(KeyError, match="no metric 'nDCG@10'"):
        result.score("toy/t2i", "nDCG@10")
    with pytest.raises(KeyError, match=r"no task 'x'.*toy/t2i"):
        result.score("x", "R@1")


def test_random_embedder_is_far_from_perfect() -> None:
    result = evaluate(HashEmbedder(16), load_tasks("toy"), k=10)
    assert result.score("toy/t2i", "R@1") < 0.5
