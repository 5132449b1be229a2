"""Plumbing on real data: the Flickr8k 1K test through the CLIP code path, both directions, with a tiny CLIP.

A random tiny CLIP cannot retrieve well; this proves the whole path (5,000 caption queries -> 1,000 real photos,
1,000 photo queries -> 5,000 captions, any-of-5 qrels, metrics) runs end to end. Real numbers: BENCHMARKS.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lumir.embed import load_embedder
from lumir.eval.evaluator import evaluate
from lumir.eval.tasks import load_tasks
from lumir.pipeline import PipelineSpec
from lumir.testing.tiny import save_tiny_clip


@pytest.mark.realdata
def test_flickr8k_both_directions_through_tiny_clip(data_root: Path, tmp_path: Path) -> None:
    tasks = load_tasks("flickr8k", data=data_root)
    assert [t.name for t in tasks] == ["flickr8k/t2i", "flickr8k/i2t"]
    t2i, i2t = tasks
    assert (len(t2i.queries), len(t2i.corpus), len(i2t.queries), len(i2t.corpus)) == (5000, 1000, 1000, 5000)
    embedder = load_embedder("clip:" + str(save_tiny_clip(tmp_path / "tiny-clip")))
    result = evaluate(PipelineSpec(k=10, batch_size=256), tasks, embedder=embedder, output=tmp_path / "r.json")
    for name in ("flickr8k/t2i", "flickr8k/i2t"):
        m = result["tasks"][name]["stages"]["first_stage"]["metrics"]
        assert set(m) == {"R@1", "R@5", "R@10"}
        assert 0.0 <= m["R@1"] <= m["R@5"] <= m["R@10"] <= 1.0
    pair = (
        result["tasks"]["flickr8k/t2i"]["stages"]["first_stage"]["metrics"],
        result["tasks"]["flickr8k/i2t"]["stages"]["first_stage"]["metrics"],
    )
    assert result["summary"]["flickr8k"]["first_stage"] == pytest.approx(sum(sum(m.values()) for m in pair))
    # image->text has 5 positives per query, so chance R@10 is ~5x higher than text->image's 10/1000
    assert json.loads((tmp_path / "r.json").read_text())["tasks"]["flickr8k/i2t"]["num_candidates"] == 5000
