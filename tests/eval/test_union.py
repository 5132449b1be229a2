"""Union pools: per-query candidate exclusion in every stage, and the Flickr8k union tasks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lumir.collections import Corpus, Rankings, RetrievalTask
from lumir.data.flickr8k import UNION_INSTRUCTIONS, flickr8k_union_tasks
from lumir.eval import evaluate
from lumir.eval.evaluator import evaluate_task
from lumir.eval.tasks import load_tasks
from lumir.pipeline import Pipeline
from lumir.retrieve import DenseRetriever
from lumir.testing.fakes import ColorEmbedder
from lumir.types import ImageRef, Item, Modality, Query, Role


class TableEmbedder:
    """Vectors looked up by item id (queries and candidates with the same id share one)."""

    modalities = frozenset(Modality)
    dim = 2

    def __init__(self, table: dict[str, Sequence[float]]) -> None:
        self.table = table

    def embed(self, items: Sequence[Item], *, role: Role, batch_size: int = 32) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.tensor([self.table[it.id] for it in items], dtype=torch.float32))

    def spec(self) -> dict[str, Any]:
        return {"type": "table"}


class RecordingReranker:
    """Reverses each ranking and records the candidate ids it was shown."""

    k = 3

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {}

    def rerank(self, queries: Sequence[Query], rankings: Rankings, corpus: Corpus) -> Rankings:
        rows = []
        for qid, hits in rankings:
            self.seen[qid] = [h.id for h in hits]
            rows.append([(h.id, float(i)) for i, h in reversed(list(enumerate(hits)))])
        return Rankings.from_hits(rankings.query_ids, rows, rankings.k)

    def spec(self) -> dict[str, Any]:
        return {"type": "recording"}


def _union_task(exclude: bool) -> RetrievalTask:
    """Caption ``c1`` asks for its photo ``p1``; the pool holds ``c1`` itself, which would rank first."""
    table = {"c1": [1.0, 0.0], "p1": [0.9, 0.1], "p2": [0.0, 1.0], "c2": [0.1, 1.0]}
    corpus = Corpus(
        [
            Item("p1", image=ImageRef("p1.jpg")),
            Item("p2", image=ImageRef("p2.jpg")),
            Item("c1", text="one"),
            Item("c2", text="two"),
        ]
    )
    return RetrievalTask(
        "u/t2i",
        [Query("c1", text="one")],
        corpus,
        {"c1": {"p1": 1}},
        query_modality=Modality.TEXT,
        candidate_modality=Modality.IMAGE,
        metrics=("R@1",),
        exclude={"c1": frozenset({"c1"})} if exclude else {},
        meta={"table": table},
    )


def test_rankings_without_drops_and_refills() -> None:
    r = Rankings.from_run({"q1": {"a": 0.9, "b": 0.5, "c": 0.1}, "q2": {"a": 0.3, "b": 0.2}})
    out = r.without({"q1": frozenset({"a", "zz"})}, k=2)
    assert out.k == 2
    assert [h.id for h in out.for_query("q1")] == ["b", "c"]
    assert [h.id for h in out.for_query("q2")] == ["a", "b"]
    assert r.without({}, k=3) is r


@pytest.mark.parametrize("exclude", [False, True])
def test_exclusion_applies_to_every_stage(exclude: bool) -> None:
    task = _union_task(exclude)
    embedder = TableEmbedder(task.meta["table"])
    reranker = RecordingReranker()
    pipe = Pipeline(DenseRetriever.from_corpus(task.corpus, embedder), reranker=reranker, k=3)
    entry = evaluate_task(task, pipe, k=3)
    first, reranked = entry["stages"]["first_stage"]["metrics"], entry["stages"]["reranked"]["metrics"]
    if exclude:
        assert first["R@1"] == 1.0 and first["M.A.@1"] == 1.0  # c1 itself is gone; its photo is top-1
        assert reranker.seen["c1"] == ["p1", "c2", "p2"]  # the reranker never saw c1
        assert entry["excluded_per_query"] == 1
        assert (reranked["R@1"], reranked["M.A.@1"]) == (0.0, 1.0)  # reversed: p2 first
        out = pipe.run(task.queries, 3, exclude=task.exclude)
        assert all("c1" not in r.ids[0] for r in out.stages.values())
    else:
        assert first["R@1"] == 0.0 and first["M.A.@1"] == 0.0  # the query's own caption wins
        assert reranker.seen["c1"][0] == "c1"


def _flickr(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    names = ["a.jpg", "b.jpg", "c.jpg"]
    lines = []
    for i, name in enumerate(names):
        Image.new("RGB", (4, 4), (255, 0, 0) if i == 0 else (0, 0, 255)).save(root / "images" / name)
        colour = "red" if i == 0 else "blue"
        lines += [f"{name}#{n}\t{colour} thing {n} of {name}" for n in range(5)]
    (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (root / "test_1k.txt").write_text("\n".join(names[:2]) + "\n")
    return root


def test_flickr8k_union_tasks(tmp_path: Path) -> None:
    t2i, i2t = flickr8k_union_tasks(_flickr(tmp_path / "flickr8k"))
    assert (t2i.name, i2t.name) == ("flickr8k-union/t2i", "flickr8k-union/i2t")
    assert len(t2i.corpus) == len(i2t.corpus) == 2 + 10  # one pool: photos + captions
    assert sorted(str(m) for m in set(t2i.corpus.modalities())) == ["image", "text"]
    assert (t2i.query_modality, t2i.candidate_modality) == (Modality.TEXT, Modality.IMAGE)
    assert (i2t.query_modality, i2t.candidate_modality) == (Modality.IMAGE, Modality.TEXT)
    assert len(t2i.queries) == 10 and len(i2t.queries) == 2
    assert t2i.qrels["b.jpg#3"] == {"b.jpg": 1}
    assert i2t.qrels["a.jpg"] == {f"a.jpg#{n}": 1 for n in range(5)}
    assert t2i.exclude["b.jpg#3"] == frozenset({"b.jpg#3"}) and i2t.exclude["a.jpg"] == frozenset({"a.jpg"})
    assert {q.instruction for q in t2i.queries} == {UNION_INSTRUCTIONS["t2i"]}
    assert {q.instruction for q in i2t.queries} == {UNION_INSTRUCTIONS["i2t"]}
    assert t2i.meta["pool"] == "union"
    plain = flickr8k_union_tasks(tmp_path / "flickr8k", instructions=False)
    assert all(q.instruction is None for t in plain for q in t.queries)


def test_flickr8k_union_spec_loads_and_evaluates(tmp_path: Path) -> None:
    root = _flickr(tmp_path / "flickr8k")
    tasks = load_tasks(f"flickr8k-union:{root}:test_1k")
    assert tasks[0].spec() == {
        "type": "flickr8k-union",
        "path": str(root),
        "split": "test_1k",
        "instructions": True,
        "direction": "t2i",
    }
    assert [t.name for t in load_tasks(tasks[1].spec())] == ["flickr8k-union/i2t"]
    # colour words: a red caption's nearest items are the other red captions (text bias) unless excluded/penalised
    result = evaluate(ColorEmbedder(), tasks, k=12)
    for name in ("flickr8k-union/t2i", "flickr8k-union/i2t"):
        metrics = result.task(name)["stages"]["first_stage"]["metrics"]
        assert set(metrics) == {"R@1", "R@5", "R@10", "M.A.@1"}
        assert result.task(name)["num_candidates"] == 12
    assert "flickr8k-union" in result.summary


def test_exclusion_needs_no_depth_from_the_caller() -> None:
    """A first stage as deep as the pool minus the excluded ids still fills every row."""
    task = _union_task(True)
    pipe = Pipeline(DenseRetriever.from_corpus(task.corpus, TableEmbedder(task.meta["table"])), k=3)
    out = pipe.run(task.queries, 3, exclude=task.exclude)
    assert [h.id for h in out.final.for_query("c1")] == ["p1", "c2", "p2"]
    assert np.all(out.final.ids != "")
