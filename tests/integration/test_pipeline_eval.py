"""End to end on the toy world: retrieve -> rerank -> evaluate, with known answers."""

from __future__ import annotations

import json
from collections.abc import Sequence

from lumir.collections import Corpus, Rankings
from lumir.eval.evaluator import evaluate
from lumir.eval.tasks import load_tasks
from lumir.pipeline import Pipeline
from lumir.retrieve import DenseRetriever
from lumir.testing.fakes import ColorEmbedder, HashEmbedder
from lumir.testing.toy import toy_corpus
from lumir.types import Query


class ReverseReranker:
    """Reverses the top-k of each ranking: a deliberately bad reranker with a predictable effect."""

    def rerank(self, queries: Sequence[Query], rankings: Rankings, corpus: Corpus, k: int | None = None) -> Rankings:
        k = k or rankings.k
        rows = [[(h.id, float(-h.rank)) for h in reversed(hits[:k])] for _, hits in rankings]
        return Rankings.from_hits(rankings.query_ids, rows, k)


class UpperRewriter:
    def rewrite(self, queries: Sequence[Query]) -> list[Query]:
        from dataclasses import replace

        return [replace(q, text=(q.text or "").upper()) for q in queries]


def test_pipeline_records_every_stage_and_timing() -> None:
    retriever = DenseRetriever.from_corpus(toy_corpus(), ColorEmbedder(), candidate_modality="image")
    p = Pipeline(retriever, rewriter=UpperRewriter(), reranker=ReverseReranker(), k=4, rerank_k=2)
    out = p.run([Query("q", text="blue")])
    assert list(out.stages) == ["first_stage", "reranked"]
    assert out.queries[0].text == "BLUE"
    assert out.stages["first_stage"].for_query("q")[0].id == "img-blue"
    assert [h.id for h in out.final.for_query("q")] == [h.id for h in out.stages["first_stage"].for_query("q")[:2]][
        ::-1
    ]
    assert set(out.seconds) == {"rewrite", "first_stage", "reranked"}


def test_evaluate_toy_task_writes_complete_result(tmp_path) -> None:
    tasks = load_tasks("toy")
    out = tmp_path / "result.json"
    result = evaluate(tasks, embedder=ColorEmbedder(), k=10, output=out, run_dir=tmp_path / "runs")
    saved = json.loads(out.read_text())
    assert saved["format"] == "lumir-eval" and "torch" in saved["versions"]
    stage = saved["tasks"]["toy/t2i"]["stages"]["first_stage"]
    assert stage["metrics"]["R@1"] == 1.0 and stage["metrics"]["R@5"] == 1.0
    assert saved["tasks"]["toy/t2i"]["timings"]["embed_corpus"] >= 0
    assert (tmp_path / "runs" / "toy_t2i.first_stage.trec").is_file()
    assert result == saved


def test_evaluate_reports_reranked_stage_side_by_side() -> None:
    result = evaluate(load_tasks("toy"), embedder=ColorEmbedder(), reranker=ReverseReranker(), k=10, rerank_k=5)
    stages = result["tasks"]["toy/t2i"]["stages"]
    assert stages["first_stage"]["metrics"]["R@1"] == 1.0
    assert stages["reranked"]["metrics"]["R@1"] == 0.0  # the right image was reversed to rank 5
    assert stages["reranked"]["metrics"]["R@5"] == 1.0


def test_random_embedder_is_far_from_perfect() -> None:
    result = evaluate(load_tasks("toy"), embedder=HashEmbedder(16), k=10)
    assert result["tasks"]["toy/t2i"]["stages"]["first_stage"]["metrics"]["R@1"] < 0.5
