"""ClipEmbedder over tiny CLIP and SigLIP: shapes, norms, UniIR CLIP_SF score fusion, instructions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from lumir.embed import ClipEmbedder
from lumir.embed.instructions import format_string
from lumir.types import Item, Query, Role

RED = Image.new("RGB", (30, 30), (220, 30, 30))
BLUE = Image.new("RGB", (36, 30), (30, 60, 220))


def _items() -> list[Item]:
    return [
        Item("t", text="a red square"),
        Item("i", image=RED),
        Item("it", text="a blue circle with a dog", image=BLUE),
    ]


@pytest.mark.parametrize("which", ["tiny_clip", "tiny_siglip"])
def test_text_image_and_image_text(which: str, request: pytest.FixtureRequest) -> None:
    e = ClipEmbedder(request.getfixturevalue(which))
    out = e.embed(_items(), role=Role.CANDIDATE)
    assert out.shape == (3, 16 if which == "tiny_clip" else 32) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    assert len({tuple(row.tolist()) for row in out}) == 3


def _raw_by_hand(model: Any, processor: Any, text: str, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    enc = processor(text=[text], images=[image], return_tensors="pt", padding=True)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=enc["pixel_values"]).pooler_output
        txt = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
    return img, txt


def test_score_fusion_is_normalized_sum_of_raw_features(tiny_clip: tuple[Any, Any]) -> None:
    model, processor = tiny_clip
    img, txt = _raw_by_hand(model, processor, "a blue circle with a dog", BLUE)
    out = ClipEmbedder(tiny_clip).embed([Item("it", text="a blue circle with a dog", image=BLUE)], role="candidate")
    expected = torch.nn.functional.normalize(img + txt, dim=-1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    # and it is not the mean of normalised features (the norms of the two towers differ)
    mean_norm = torch.nn.functional.normalize(
        torch.nn.functional.normalize(img, dim=-1) + torch.nn.functional.normalize(txt, dim=-1), dim=-1
    )
    assert not torch.allclose(out, mean_norm, atol=1e-3)
    alt = ClipEmbedder(tiny_clip, fusion="mean_normalized")
    alt_out = alt.embed([Item("it", text="a blue circle with a dog", image=BLUE)], role="candidate")
    torch.testing.assert_close(alt_out, mean_norm, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="unknown fusion"):
        ClipEmbedder(tiny_clip, fusion="concat")


def test_single_modalities_are_their_tower(tiny_clip: tuple[Any, Any]) -> None:
    model, processor = tiny_clip
    img, txt = _raw_by_hand(model, processor, "a red square", RED)
    out = ClipEmbedder(tiny_clip).embed([Item("t", text="a red square"), Item("i", image=RED)], role="candidate")
    torch.testing.assert_close(out[0:1], torch.nn.functional.normalize(txt, dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1:2], torch.nn.functional.normalize(img, dim=-1), atol=1e-5, rtol=0)


def test_image_only_query_gains_the_instruction_as_text(tiny_clip: tuple[Any, Any]) -> None:
    instruction = "find a caption for the image"
    e = ClipEmbedder(tiny_clip, instructions={"mscoco_task3": instruction})
    query = Query("q", image=RED, task="mscoco_task3")
    as_query = e.embed([query], role=Role.QUERY)
    # UniIR: text = format_string(f"{prompt} {''}") -> the query is image + instruction text, score-fused
    expected = e.embed([Item("x", text=format_string(instruction), image=RED)], role=Role.CANDIDATE)
    torch.testing.assert_close(as_query, expected, atol=1e-6, rtol=0)
    as_candidate = e.embed([query], role=Role.CANDIDATE)
    image_only = e.embed([Item("y", image=RED)], role=Role.CANDIDATE)
    torch.testing.assert_close(as_candidate, image_only, atol=1e-6, rtol=0)
    assert not torch.allclose(as_query, as_candidate, atol=1e-3)


def test_in_memory_model_spec_cannot_be_rebuilt(tiny_clip: tuple[Any, Any]) -> None:
    from lumir.embed import load_embedder

    spec = ClipEmbedder(tiny_clip).spec()
    assert spec["type"] == "clip" and spec["path"] is None
    with pytest.raises(ValueError, match=r"in-memory model.*save_pretrained"):
        load_embedder(spec)


@pytest.mark.realdata
def test_flickr8k_jpegs_from_disk(tiny_clip: tuple[Any, Any], data_root: Path) -> None:
    images = sorted((data_root / "flickr8k" / "images").glob("*.jpg"))[:3]
    assert len(images) == 3, f"no Flickr8k JPEGs under {data_root}; set LUMIR_DATA to the shared data folder"
    e = ClipEmbedder(tiny_clip)
    items = [Item(p.stem, image=p) for p in images] + [Item("cap", text="a dog runs", image=images[0])]
    out = e.embed(items, role=Role.CANDIDATE, batch_size=2)
    assert out.shape == (4, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(out[:1], e.embed([Item("x", image=Image.open(images[0]))], role="candidate"))
