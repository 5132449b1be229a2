"""PipelineSpec files and build_pipeline: the one way search, eval and the benchmarks assemble a query side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lumir.errors import DataFormatError
from lumir.index import build_index
from lumir.models.chat.cache import CachedChatModel
from lumir.pipeline import PipelineSpec, build_pipeline, load_stages
from lumir.testing.fakes import ColorEmbedder
from lumir.testing.toy import toy_corpus, toy_corpus_files


def test_spec_file_round_trip_and_unknown_keys_name_the_file(tmp_path: Path) -> None:
    spec = PipelineSpec(embedder="color", k=7, reranker="yes-no:llm=smollm2,k=3", candidate_modality="image")
    for name in ("p.yaml", "p.json"):
        spec.save(tmp_path / name)
        assert PipelineSpec.from_file(tmp_path / name) == spec
    assert spec.to_dict() == {"embedder": "color", "k": 7, "candidate_modality": "image",
                              "reranker": "yes-no:llm=smollm2,k=3"}  # fmt: skip
    (tmp_path / "bad.yaml").write_text("embeder: minilm\n")
    with pytest.raises(DataFormatError, match=r"bad\.yaml: unknown pipeline key\(s\) \['embeder'\]"):
        PipelineSpec.from_file(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(DataFormatError, match="holds a YAML mapping, got list"):
        PipelineSpec.from_file(tmp_path / "list.yaml")
    with pytest.raises(DataFormatError, match="positive integer"):
        PipelineSpec.from_dict({"k": 0})
    with pytest.raises(ValueError, match="needs backend 'faiss'"):
        PipelineSpec(factory="IVF4,Flat")
    assert spec.replace(k=None, embedder="hash").embedder == "hash" and spec.replace(k=None).k == 7


def test_build_over_an_index_directory_and_over_a_corpus(tmp_path: Path) -> None:
    build_index(toy_corpus_files(tmp_path / "images"), ColorEmbedder(), tmp_path / "idx", show_progress=False)
    over_index = build_pipeline({"index": str(tmp_path / "idx"), "candidate_modality": "image", "k": 4})
    assert over_index.search("red", k=2)[0].id == "img-red"
    over_corpus = build_pipeline(PipelineSpec(embedder="color", k=4), corpus=toy_corpus())
    assert over_corpus.search("blue", k=1)[0].id in {"img-blue", "txt-blue"}
    with pytest.raises(ValueError, match="needs an index directory"):
        build_pipeline(PipelineSpec(embedder="color"))
    with pytest.raises(ValueError, match="needs an embedder"):
        build_pipeline(PipelineSpec(), corpus=toy_corpus())


def test_index_cache_keeps_resumable_index_directories(tmp_path: Path) -> None:
    from lumir.collections import Corpus

    texts = Corpus([it for it in toy_corpus() if it.image is None])  # index directories store images by path
    spec = PipelineSpec(embedder="color", k=4, index_cache=str(tmp_path / "cache"))
    first = build_pipeline(spec, corpus=texts, cache_name="toy/t2i")
    assert (tmp_path / "cache" / "toy_t2i" / "lumir.json").is_file()
    again = build_pipeline(spec, corpus=texts, cache_name="toy/t2i")
    assert first.search("red", k=3) == again.search("red", k=3)


def test_llm_stages_get_the_llm_cache_unless_the_spec_names_one(tmp_path: Path) -> None:
    scripted = {"type": "scripted"}
    spec = PipelineSpec(
        embedder="color", reranker={"type": "true-false", "llm": scripted}, llm_cache=str(tmp_path / "c.sqlite")
    )
    stages = load_stages(spec)
    assert isinstance(stages.reranker.chat, CachedChatModel)
    assert stages.reranker.chat.cache.path == tmp_path / "c.sqlite"
    none = load_stages(spec.replace(llm_cache="none"))
    assert not isinstance(none.reranker.chat, CachedChatModel)
    pipe = build_pipeline(spec.replace(k=2), corpus=toy_corpus())
    assert pipe.k == 10 and pipe.reranker.k == 10  # the first stage is deepened to the reranker's budget
    assert json.loads(json.dumps(pipe.describe())) == pipe.describe()
