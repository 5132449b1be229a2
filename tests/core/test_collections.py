from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lumir.collections import Corpus, Rankings
from lumir.types import Hit, ImageRef, Item


def test_corpus_ids_positions_and_modalities() -> None:
    c = Corpus([Item("a", text="x"), Item("b", image=ImageRef(b"i")), Item("c", text="t", image=ImageRef(b"j"))])
    assert c.ids == ["a", "b", "c"] and c.position("c") == 2 and c["b"].id == "b" and c[0].id == "a"
    assert list(c.modalities()) == ["text", "image", "image,text"]
    assert c.modality_mask("image").tolist() == [False, True, False]
    assert "a" in c and "z" not in c and c.get("z") is None
    with pytest.raises(KeyError, match="unknown candidate id 'z'"):
        c.position("z")


def test_corpus_rejects_duplicate_ids() -> None:
    with pytest.raises(ValueError, match="duplicate candidate id 'a'"):
        Corpus([Item("a", text="x"), Item("a", text="y")])


def test_rankings_from_run_sorts_pads_and_roundtrips() -> None:
    run = {"q1": {"a": 0.1, "b": 0.7, "c": 0.4}, "q2": {"d": 1.0}}
    r = Rankings.from_run(run)
    assert r.k == 3 and r.ids.tolist() == [["b", "c", "a"], ["d", "", ""]]
    assert np.isneginf(r.scores[1, 1])
    assert r.for_query("q2") == [Hit("d", 1.0, 1)]
    assert {q: {c: round(s, 5) for c, s in d.items()} for q, d in r.to_run().items()} == run
    assert r.top(1).ids.tolist() == [["b"], ["d"]]
    assert r.select(["q2"]).query_ids == ["q2"]


def test_rankings_validates_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        Rankings(["q"], np.array([["a", "b"]], dtype=object), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="1 query ids but 2"):
        Rankings(["q"], np.array([["a"], ["b"]], dtype=object), np.zeros((2, 1)))


def test_rankings_concat_pads_to_widest() -> None:
    a = Rankings.from_run({"q1": {"x": 1.0}})
    b = Rankings.from_run({"q2": {"y": 0.5, "z": 0.2}})
    c = Rankings.concat([a, b])
    assert c.query_ids == ["q1", "q2"] and c.k == 2 and c.ids[0, 1] == ""


@given(
    st.dictionaries(
        st.text("abc", min_size=1, max_size=3),
        st.dictionaries(
            st.text("xyz", min_size=1, max_size=3), st.floats(-5, 5, allow_nan=False, width=32), max_size=6
        ),
        max_size=5,
    )
)
def test_run_roundtrip_is_identity(run: dict[str, dict[str, float]]) -> None:
    assert Rankings.from_run(run).to_run() == run
