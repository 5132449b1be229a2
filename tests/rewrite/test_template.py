"""TemplateRewriter: rewrites with provenance, keeps ids, order and image-only queries."""

from __future__ import annotations

import pytest

from lumir.registry import build
from lumir.testing.toy import color_image
from lumir.types import Query


def test_template_rewriter_records_provenance_and_keeps_ids() -> None:
    rewriter = build("rewriter", "template:a photo of {text}")
    qs = [Query("a", text="a dog"), Query("b", image=color_image("red")), Query("c", text="x", task="t")]
    out = rewriter.rewrite(qs)
    assert [q.id for q in out] == ["a", "b", "c"]
    assert out[0].text == "a photo of a dog" and out[2].task == "t"
    assert out[0].meta["rewrite"] == {
        "original": "a dog",
        "rewriter": {"type": "template", "template": "a photo of {text}"},
    }
    assert out[1] is qs[1]  # image-only queries pass unchanged
    with pytest.raises(ValueError, match=r"needs a \{text\} field"):
        build("rewriter", "template:no field")
