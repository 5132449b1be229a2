"""TrainingExample builders and jsonl round trip; the false-negative guard of attach_negatives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lumir.collections import Corpus, RetrievalTask
from lumir.data.examples import (
    TrainingExample,
    attach_negatives,
    caption_pair_examples,
    examples_from_task,
    read_examples,
    write_examples,
)
from lumir.errors import DataFormatError
from lumir.types import Item, Query


def _task() -> RetrievalTask:
    corpus = Corpus([Item(f"d{i}", text=f"doc {i}") for i in range(5)])
    queries = [Query("q1", text="one"), Query("q2", text="two"), Query("q3", text="unjudged")]
    qrels = {"q1": {"d0": 1, "d1": 1, "d4": 0}, "q2": {"d2": 2}}
    return RetrievalTask("toy", queries, corpus, qrels)


def test_examples_from_task_use_every_positive() -> None:
    ex = examples_from_task(_task())
    assert [(e.query.id, e.positive.id) for e in ex] == [("q1", "d0"), ("q1", "d1"), ("q2", "d2")]
    assert ex[0].positive_ids == frozenset({"d0", "d1"})  # d4 has grade 0: not a positive
    one = examples_from_task(_task(), positives="one", seed=1)
    assert [e.query.id for e in one] == ["q1", "q2"]
    assert examples_from_task(_task(), limit=1)[-1].query.id == "q1"


def test_negatives_that_are_positives_are_refused() -> None:
    with pytest.raises(ValueError, match="labelled positives"):
        TrainingExample(Query("q", text="x"), Item("d0", text="a"), (Item("d1", text="b"),), frozenset({"d0", "d1"}))


def test_caption_pairs_pair_captions_of_one_photo() -> None:
    caps = {"p1": [Item(f"p1#{i}", text=f"cap {i}") for i in range(3)], "p2": [Item("p2#0", text="alone")]}
    ex = caption_pair_examples(caps, seed=0)
    assert len(ex) == 3  # p2 has no partner
    for e in ex:
        assert e.positive.id != e.query.id and e.positive.id.startswith("p1#")
        assert e.positive_ids == frozenset({"p1#0", "p1#1", "p1#2"}) - {e.query.id}


def test_attach_negatives_drops_false_negatives(tmp_path: Path) -> None:
    mined = tmp_path / "mined.jsonl"
    mined.write_text(
        json.dumps({"query_id": "q1", "negatives": [{"id": "d1", "rank": 1}, {"id": "d3", "rank": 4}]}) + "\n"
    )
    ex = attach_negatives(examples_from_task(_task()), mined, _task().corpus, per_query=2)
    assert [n.id for n in ex[0].negatives] == ["d3"]  # d1 is a positive of q1
    assert ex[2].negatives == ()  # q2 has no record
    mined.write_text(json.dumps({"query_id": "q1", "negatives": [{"id": "zzz"}]}) + "\n")
    with pytest.raises(DataFormatError, match=r"mined.jsonl, line 1: negative 'zzz'"):
        attach_negatives(examples_from_task(_task()), mined, _task().corpus)


def test_jsonl_round_trip_and_errors(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(image)
    ex = [
        TrainingExample(
            Query("q", text="find it", instruction="Retrieve an image."),
            Item("i", image=str(image)),
            (Item("n", text="a caption"),),
            frozenset({"i"}),
            "src",
            "t2i",
        ),
    ]
    path = tmp_path / "ex.jsonl"
    assert write_examples(path, ex) == 1
    back = read_examples(path)
    assert back[0].query.instruction == "Retrieve an image." and back[0].negatives[0].text == "a caption"
    assert str(back[0].positive.image.source) == str(image) and back[0].source == "src" and back[0].task == "t2i"
    path.write_text('{"query": {"id": "q", "text": "x"}, "positive": {"id": "d"}}\n')
    with pytest.raises(DataFormatError, match=r"ex.jsonl, line 1: positive 'd' has no text and no image"):
        read_examples(path)
