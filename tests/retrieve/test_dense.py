from __future__ import annotations

import logging

import numpy as np
import pytest

from lumir.collections import Corpus
from lumir.errors import DimensionMismatchError, ModalityError
from lumir.index import FlatIndex
from lumir.retrieve import DenseRetriever
from lumir.testing.fakes import COLORS, ColorEmbedder, HashEmbedder
from lumir.testing.toy import toy_corpus
from lumir.types import Item, Modality, Query


def test_text_to_image_on_the_toy_world_is_perfect() -> None:
    r = DenseRetriever.from_corpus(toy_corpus(), ColorEmbedder(), candidate_modality="image")
    queries = [Query(f"q-{c}", text=c) for c in COLORS]
    rankings = r.retrieve(queries, k=3)
    assert rankings.query_ids == [q.id for q in queries]
    assert [hits[0].id for _, hits in rankings] == [f"img-{c}" for c in COLORS]
    assert all(cid.startswith("img-") for cid in rankings.ids.ravel())
    assert np.all(np.diff(rankings.scores, axis=1) <= 0)


def test_auto_modality_uses_the_desired_candidate_modality_of_each_query() -> None:
    r = DenseRetriever.from_corpus(toy_corpus(), ColorEmbedder(), candidate_modality="auto")
    qs = [
        Query("a", text="red", meta={"cand_modality": "text"}),
        Query("b", text="red", meta={"cand_modality": "image"}),
    ]
    out = r.retrieve(qs, k=2)
    assert all(c.startswith("txt-") for c in out.ids[0]) and all(c.startswith("img-") for c in out.ids[1])


def test_fewer_candidates_than_k_leaves_empty_slots() -> None:
    corpus = Corpus([Item("a", text="red"), Item("b", text="blue")])
    out = DenseRetriever.from_corpus(corpus, HashEmbedder(8)).retrieve([Query("q", text="x")], k=5)
    assert sorted(out.ids[0][:2]) == ["a", "b"] and list(out.ids[0][2:]) == ["", "", ""]
    assert len(out.for_query("q")) == 2


def test_dimension_mismatch_is_reported() -> None:
    index = FlatIndex(4)
    index.add(np.ones((1, 4), dtype=np.float32))
    with pytest.raises(DimensionMismatchError, match="8-d .* 4-d"):
        DenseRetriever(HashEmbedder(8), index, Corpus([Item("a", text="x")]))


def test_unsupported_query_modality_is_a_clear_error() -> None:
    class TextOnly(HashEmbedder):
        modalities = frozenset({Modality.TEXT})

    r = DenseRetriever.from_corpus(Corpus([Item("a", text="x")]), TextOnly(8))
    with pytest.raises(ModalityError, match="'img-q'"):
        r.retrieve([Query("img-q", image=toy_corpus()["img-red"].image)], k=1)


def test_an_approximate_index_returning_fewer_than_k_hits_says_so(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("faiss")
    from PIL import Image

    from lumir.index import FaissIndex
    from lumir.types import ImageRef, Role

    texts = [Item(f"t{i}", text=f"text number {i}") for i in range(190)]
    images = [Item(f"i{i}", image=ImageRef(Image.new("RGB", (2, 2), (i, 2 * i, 3 * i)))) for i in range(10)]
    corpus = Corpus(texts + images)
    embedder = HashEmbedder(16)
    index = FaissIndex(16, "IVF4,Flat", nprobe=1)  # visits one list of four
    index.add(embedder.embed(list(corpus), role=Role.CANDIDATE))
    queries = [Query(f"q{i}", text=f"query {i}") for i in range(8)]
    retriever = DenseRetriever(embedder, index, corpus, candidate_modality="image")
    with caplog.at_level(logging.WARNING, logger="lumir.retrieve.dense"):
        out = retriever.retrieve(queries, k=10)
    short = int((out.ids == "").any(axis=1).sum())
    assert short > 0 and out.meta["short_rankings"] == short
    assert f"{short} of 8 queries got fewer than 10 hits from FaissIndex" in caplog.text and "nprobe" in caplog.text
    caplog.clear()
    index.nprobe = 4  # every list: the 10 allowed images are all found
    with caplog.at_level(logging.WARNING, logger="lumir.retrieve.dense"):
        full = retriever.retrieve(queries, k=10)
    assert (full.ids != "").all() and "short_rankings" not in full.meta and caplog.text == ""
