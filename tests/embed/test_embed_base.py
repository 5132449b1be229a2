"""BaseEmbedder machinery: modality checks, sorted batching, scatter order, images, progress, devices."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from lumir.embed import ClipEmbedder, TextEmbedder
from lumir.embed.base import EmbedInput
from lumir.errors import ImageLoadError, ModalityError
from lumir.protocols import Embedder
from lumir.types import Item, Query, Role

WORDS = ["a", "red", "blue", "square", "circle", "photo", "of", "the", "dog", "cat", "on", "in", "with", "green"]


def _texts(n: int) -> list[str]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 14, (n,), generator=g).tolist()
    texts = [f"{i} " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(k)) for i, k in enumerate(lengths)]
    assert len(set(texts)) == n and len({len(t) for t in texts}) > 5  # distinct, varied lengths
    return texts


@pytest.fixture(scope="module")
def minilm_embedder(minilm_dir: Path) -> TextEmbedder:
    return TextEmbedder(minilm_dir)


def test_embedders_satisfy_the_protocol(minilm_embedder: TextEmbedder, tiny_clip: tuple[Any, Any]) -> None:
    assert isinstance(minilm_embedder, Embedder)
    assert isinstance(ClipEmbedder(tiny_clip), Embedder)


def test_sorted_batching_matches_unsorted_and_one_by_one(minilm_embedder: TextEmbedder) -> None:
    items = [Item(f"t{i}", text=t) for i, t in enumerate(_texts(12))]
    sorted_out = minilm_embedder.embed(items, role=Role.CANDIDATE, batch_size=4)
    minilm_embedder.sort_by_length = False
    try:
        unsorted_out = minilm_embedder.embed(items, role=Role.CANDIDATE, batch_size=4)
    finally:
        minilm_embedder.sort_by_length = True
    single = torch.cat([minilm_embedder.embed([it], role=Role.CANDIDATE) for it in items])
    torch.testing.assert_close(sorted_out, unsorted_out, atol=1e-5, rtol=0)
    torch.testing.assert_close(sorted_out, single, atol=1e-5, rtol=0)
    assert torch.equal((sorted_out @ single.T).argmax(1), torch.arange(len(items)))  # rows in input order


def test_mixed_modalities_scatter_back_to_input_order(tiny_clip: tuple[Any, Any]) -> None:
    e = ClipEmbedder(tiny_clip)
    red, blue = Image.new("RGB", (30, 30), (220, 30, 30)), Image.new("RGB", (30, 30), (30, 60, 220))
    items = [
        Item("i0", image=red),
        Item("t0", text="a red square"),
        Item("it0", text="a blue circle", image=blue),
        Item("t1", text="the dog"),
        Item("i1", image=blue),
    ]
    together = e.embed(items, role=Role.CANDIDATE, batch_size=2)
    single = torch.cat([e.embed([it], role=Role.CANDIDATE) for it in items])
    torch.testing.assert_close(together, single, atol=1e-5, rtol=0)


def test_plan_batches_groups_and_sorts(tiny_clip: tuple[Any, Any]) -> None:
    e = ClipEmbedder(tiny_clip)
    inputs = [
        EmbedInput(0, "a", "x", None),
        EmbedInput(1, "b", "xxx", None),
        EmbedInput(2, "c", None, object()),  # type: ignore[arg-type]
        EmbedInput(3, "d", "xx", None),
    ]
    batches = e.plan_batches(inputs, batch_size=2)
    assert [[i.item_id for i in b] for b in batches] == [["b", "d"], ["a"], ["c"]]
    e.sort_by_length = False
    assert [[i.item_id for i in b] for b in e.plan_batches(inputs, 2)] == [["a", "b"], ["d"], ["c"]]


def test_modality_error_names_items_before_any_work(minilm_embedder: TextEmbedder) -> None:
    img = Image.new("RGB", (4, 4))
    items = (
        [Item("ok", text="fine")]
        + [Item(f"img{i}", image=img) for i in range(7)]
        + [Item("both", text="x", image=img)]
    )
    with pytest.raises(ModalityError) as info:
        minilm_embedder.embed(items, role=Role.CANDIDATE)
    msg = str(info.value)
    assert "7 image item(s) ['img0', 'img1', 'img2', 'img3', 'img4', ... (2 more)]" in msg
    assert "1 image,text item(s) ['both']" in msg
    assert "Supported modalities: ['text']" in msg


def test_corrupt_and_missing_images_name_the_item(tiny_clip: tuple[Any, Any], tmp_path: Path) -> None:
    e = ClipEmbedder(tiny_clip)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    good = Item("good", image=Image.new("RGB", (30, 30)))
    with pytest.raises(ImageLoadError, match=r"item 'broken-7'.*bad\.jpg"):
        e.embed([good, Item("broken-7", image=bad)], role=Role.CANDIDATE)
    with pytest.raises(ImageLoadError, match=r"item 'gone'.*not found"):
        e.embed([Item("gone", text="with text", image=tmp_path / "missing.png")], role=Role.CANDIDATE)


def test_output_contract(tiny_clip: tuple[Any, Any]) -> None:
    e = ClipEmbedder(tiny_clip)
    out = e.embed([Item("a", text="red"), Item("b", text="blue")], role="candidate")
    assert out.dtype == torch.float32 and out.device.type == "cpu" and out.shape == (2, e.dim)
    assert not out.is_inference()
    out /= 2  # callers may modify the result in place
    empty = e.embed([], role=Role.QUERY)
    assert empty.shape == (0, e.dim)
    with pytest.raises(ValueError, match="batch_size"):
        e.embed([Item("a", text="red")], role=Role.QUERY, batch_size=0)


def test_progress_flag(tiny_clip: tuple[Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lumir.progress")
    items = [Item(f"t{i}", text="a red square") for i in range(3)]
    ClipEmbedder(tiny_clip).embed(items, role=Role.CANDIDATE)  # auto: tiny input, no progress
    assert not caplog.records
    ClipEmbedder(tiny_clip, show_progress=True).embed(items, role=Role.CANDIDATE)  # no terminal: one final line
    assert [r.getMessage() for r in caplog.records] == ["embed candidates: 3/3 item (100%), done"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error(tiny_clip: tuple[Any, Any]) -> None:
    with pytest.raises(RuntimeError, match=r"device='cuda' was requested but CUDA is not available"):
        ClipEmbedder(tiny_clip, device="cuda")


def test_dtype_option_casts_model(tiny_clip: tuple[Any, Any]) -> None:
    e = ClipEmbedder(tiny_clip, dtype="bfloat16")
    assert next(e.towers.model.parameters()).dtype == torch.bfloat16
    out = e.embed([Item("a", text="a red square")], role=Role.QUERY)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(1))
    with pytest.raises(ValueError, match="unsupported dtype"):
        ClipEmbedder(tiny_clip, dtype="int8")


@pytest.mark.gpu
def test_cuda_bfloat16_close_to_cpu(tiny_clip: tuple[Any, Any]) -> None:
    items = [Item("t", text="a red square"), Item("i", image=Image.new("RGB", (30, 30), (200, 10, 10)))]
    cpu = ClipEmbedder(tiny_clip).embed(items, role=Role.CANDIDATE)
    gpu = ClipEmbedder(tiny_clip, device="cuda", dtype="bfloat16")
    assert next(gpu.towers.model.parameters()).device.type == "cuda"
    out = gpu.embed(items, role=Role.CANDIDATE)
    assert out.device.type == "cpu" and out.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(out, cpu).min() > 0.99


def test_instructed_image_query_needs_image_text_support(minilm_embedder: TextEmbedder) -> None:
    q = Query("q", text="what?", instruction="Retrieve passages")
    out = minilm_embedder.embed([q], role=Role.QUERY)
    assert out.shape == (1, 384)


def test_over_long_texts_are_truncated_with_one_warning_per_call(
    minilm_embedder: TextEmbedder, tiny_clip: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    long = " ".join(WORDS * 30)  # 420 words: more than MiniLM's 256 tokens
    items = [Item("short", text="a red square"), Item("long", text=long), Item("longer", text=long + " " + long)]
    with caplog.at_level(logging.WARNING, logger="lumir.embed.base"):
        minilm_embedder.embed(items, role=Role.CANDIDATE, batch_size=1)
    [record] = caplog.records  # one warning for the call, not one per batch
    assert record.getMessage().startswith(
        "2 of 3 texts are longer than 256 tokens and were truncated (first: item 'long', 422 tokens)"
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lumir.embed.base"):
        minilm_embedder.embed(items[:1], role=Role.QUERY)
        clip = ClipEmbedder(tiny_clip)
        pair = Item("it", text=" ".join(WORDS * 2), image=Image.new("RGB", (8, 8)))
        clip.embed([Item("t", text="a red square"), pair], role=Role.CANDIDATE)
    [record] = caplog.records  # the short query said nothing; the tiny CLIP cuts at its 16 text positions
    assert clip.text_token_limit() == 16
    assert record.getMessage().startswith(
        "1 of 2 texts are longer than 16 tokens and were truncated (first: item 'it', 30"
    )
