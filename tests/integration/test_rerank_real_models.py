"""Rerankers over real model code paths: a tiny LLaVA (images as image parts) and SmolLM2 through llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lumir.cli.main import app
from lumir.collections import Corpus
from lumir.models.chat.cache import CachedChatModel
from lumir.models.chat.hf import TransformersChatModel
from lumir.rerank import ListwiseReranker, TrueFalseReranker
from lumir.retrieve import DenseRetriever
from lumir.testing.fakes import HashEmbedder
from lumir.testing.tiny import build_tiny_llava
from lumir.types import Item, Query

runner = CliRunner()


@pytest.fixture(scope="module")
def llava() -> TransformersChatModel:
    return TransformersChatModel(*build_tiny_llava(seed=0), batch_size=4)


def noise_corpus() -> Corpus:
    rng = np.random.default_rng(0)
    return Corpus(
        [Item(f"img{i}", image=Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8))) for i in range(8)]
    )


def test_tiny_llava_scores_image_candidates_and_only_reorders(llava: TransformersChatModel, tmp_path: Path) -> None:
    corpus = noise_corpus()
    qs = [Query(f"q{i}", text=w, task="mscoco_task0") for i, w in enumerate(["red dog", "blue cat", "a square"])]
    first = DenseRetriever.from_corpus(corpus, HashEmbedder()).retrieve(qs, 6)
    cached = CachedChatModel(llava, tmp_path / "c.sqlite")
    out = TrueFalseReranker(cached, k=4).rerank(qs, first, corpus)
    for q in qs:
        assert sorted(h.id for h in out.for_query(q.id)) == sorted(h.id for h in first.for_query(q.id))
        top = [h.score for h in out.for_query(q.id)[:4]]
        assert all(0.0 <= s <= 1.0 for s in top) and len(set(np.round(top, 6))) > 1  # images change P(True)
    assert cached.misses == 12 and llava.stats.calls == 3  # 12 pairs in batches of 4
    again = TrueFalseReranker(cached, k=4).rerank(qs, first, corpus)
    assert llava.stats.calls == 3 and cached.hits == 12
    np.testing.assert_array_equal(out.ids, again.ids)
    lw = ListwiseReranker(llava, window=3, k=4).rerank(qs, first, corpus)
    assert lw.meta["rerank"]["windows"] == 3 * 2 and lw.meta["rerank"]["parse_failures"] == 0


def test_cli_eval_and_search_rerank_with_smollm2(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    cache = tmp_path / "llm.sqlite"
    args = ["eval", "toy", "--embedder", "hash", "-k", "8", "--metrics", "R@1,R@5"]
    args += ["--rerank", "yes-no:llm=smollm2,k=3,image_mode=caption", "--llm-cache", str(cache)]
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "r.json"), "--report", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "r.json").read_text())
    stages = result["tasks"]["toy/t2i"]["stages"]
    assert list(stages) == ["first_stage", "reranked"]
    assert stages["reranked"]["rerank"]["candidates"] == 8 * 3 and stages["reranked"]["rerank"]["cache_misses"] == 24
    assert stages["reranked"]["ms_per_query"] > stages["first_stage"]["ms_per_query"]
    report = (tmp_path / "r.md").read_text()
    assert "| toy/t2i | reranked |" in report and "ms/query" in report and "candidates 24" in report
    again = runner.invoke(app, [*args, "-o", str(tmp_path / "r2.json")])
    assert again.exit_code == 0, again.output
    second = json.loads((tmp_path / "r2.json").read_text())["tasks"]["toy/t2i"]["stages"]["reranked"]
    assert second["rerank"]["cache_hits"] == 24 and second["rerank"]["cache_misses"] == 0
    assert second["rerank"]["model_calls"] == 0
    assert second["metrics"] == stages["reranked"]["metrics"]
    # text-only LLM over image candidates without caption-proxy mode: a clear error, exit 2, no traceback
    bad = runner.invoke(
        app, ["eval", "toy", "--embedder", "hash", "-k", "10", "--rerank", "true-false:llm=smollm2", "--no-llm-cache"]
    )
    assert bad.exit_code == 2 and "image_mode=caption" in bad.output and "Traceback" not in bad.output
    assert "--rerank" in bad.output  # the fix is named as a CLI flag
    unknown = runner.invoke(app, ["eval", "toy", "--embedder", "hash", "--rerank", "best"])
    assert unknown.exit_code == 2 and "known" in unknown.output


def test_cli_search_rerank_text_corpus(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    corpus = tmp_path / "docs.jsonl"
    docs = ["Paris is the capital of France.", "Bananas are yellow fruit.", "The Eiffel Tower is in Paris."]
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)))
    assert runner.invoke(app, ["index", str(corpus), str(tmp_path / "idx"), "--embedder", "hash"]).exit_code == 0
    res = runner.invoke(
        app,
        [
            *("search", str(tmp_path / "idx"), "--text", "capital of France", "-k", "3", "--json"),
            *("--rerank", "listwise:llm=smollm2,window=3,k=3", "--no-llm-cache"),
        ],
    )
    assert res.exit_code == 0, res.output
    hits = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("{")))["hits"]
    assert sorted(h["id"] for h in hits) == ["d0", "d1", "d2"]
    assert "stages: first_stage" in res.output
