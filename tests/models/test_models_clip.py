"""ClipTowers over tiny CLIP and SigLIP: transformers-5 outputs, truncation, loading, dtype."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from transformers.modeling_outputs import BaseModelOutputWithPooling

from lumir.errors import ModelNotFoundError
from lumir.models.clip import ClipTowers, clip_model_type
from lumir.testing.tiny import build_tiny_clip, build_tiny_siglip, save_tiny_clip, save_tiny_siglip


@pytest.fixture
def tiny_clip() -> tuple[Any, Any]:
    return build_tiny_clip(seed=0)


@pytest.fixture
def tiny_siglip() -> tuple[Any, Any]:
    return build_tiny_siglip(seed=0)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), seed=0)


@pytest.fixture(scope="module")
def tiny_siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_siglip(tmp_path_factory.mktemp("tiny_siglip"), seed=0)


TEXTS = ["a red square", "the blue circle on a white photo of a dog"]


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), (220, 30, 30)), Image.new("RGB", (30, 50), (30, 60, 220))]


def test_transformers5_features_are_output_objects(tiny_clip: tuple[Any, Any]) -> None:
    """Pin the transformers 5 change: get_*_features return BaseModelOutputWithPooling, embedding in pooler_output."""
    model, processor = tiny_clip
    enc = processor(text=TEXTS, images=_images(), return_tensors="pt", padding=True)
    with torch.no_grad():
        img_out = model.get_image_features(pixel_values=enc["pixel_values"])
        txt_out = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    assert isinstance(img_out, BaseModelOutputWithPooling)
    assert isinstance(txt_out, BaseModelOutputWithPooling)
    assert img_out.pooler_output.shape == (2, 16) and txt_out.pooler_output.shape == (2, 16)

    towers = ClipTowers(model, processor)
    torch.testing.assert_close(towers.encode_images(_images()), img_out.pooler_output)
    torch.testing.assert_close(towers.encode_text(TEXTS), txt_out.pooler_output)


def test_features_are_unnormalised(tiny_clip: tuple[Any, Any]) -> None:
    towers = ClipTowers(*tiny_clip)
    norms = torch.cat([towers.encode_text(TEXTS).norm(dim=1), towers.encode_images(_images()).norm(dim=1)])
    assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-3)


def test_clip_text_truncated_to_model_positions(tiny_clip: tuple[Any, Any]) -> None:
    towers = ClipTowers(*tiny_clip)
    assert towers.max_text_tokens == 16
    long_text = " ".join(["red"] * 100)
    ids = towers.tokenize([long_text])["input_ids"]
    assert ids.shape == (1, 16)
    assert ids[0, -1].item() == towers.model.config.text_config.eos_token_id  # eos survives truncation
    assert towers.encode_text([long_text]).shape == (1, 16)
    assert ClipTowers(*tiny_clip, max_text_tokens=8).tokenize([long_text])["input_ids"].shape == (1, 8)
    assert ClipTowers(*tiny_clip, max_text_tokens=500).max_text_tokens == 16


def test_siglip_pads_to_max_length_and_pools_last(tiny_siglip: tuple[Any, Any]) -> None:
    towers = ClipTowers(*tiny_siglip)
    assert towers.kind == "siglip" and towers.dim == 32
    features = towers.tokenize(TEXTS)
    assert set(features) == {"input_ids"} and features["input_ids"].shape == (2, 16)
    one_by_one = torch.cat([towers.encode_text([t]) for t in TEXTS])
    torch.testing.assert_close(towers.encode_text(TEXTS), one_by_one)
    assert towers.encode_images(_images()).shape == (2, 32)


def test_from_pretrained_matches_in_memory(tiny_clip: tuple[Any, Any], tiny_clip_dir: Path) -> None:
    loaded = ClipTowers.from_pretrained(tiny_clip_dir)
    towers = ClipTowers(*tiny_clip)
    assert loaded.kind == "clip"
    torch.testing.assert_close(loaded.encode_text(TEXTS), towers.encode_text(TEXTS))
    torch.testing.assert_close(loaded.encode_images(_images()), towers.encode_images(_images()))


def test_model_type_detection(tiny_clip_dir: Path, tiny_siglip_dir: Path, tmp_path: Path) -> None:
    assert clip_model_type(tiny_clip_dir) == "clip"
    assert clip_model_type(tiny_siglip_dir) == "siglip"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert'"):
        clip_model_type(tmp_path)
    with pytest.raises(ModelNotFoundError, match="never downloads"):
        ClipTowers.from_pretrained("openai/clip-vit-base-patch32")


def test_dtype_really_casts_the_model(tiny_clip: tuple[Any, Any]) -> None:
    towers = ClipTowers(*tiny_clip, dtype="bfloat16")
    assert next(towers.model.parameters()).dtype == torch.bfloat16
    out = towers.encode_text(TEXTS)
    assert out.dtype == torch.float32  # outputs are always float32
    ref = ClipTowers(*tiny_clip).encode_text(TEXTS)
    torch.testing.assert_close(out, ref, atol=0.1, rtol=0.1)


def test_empty_inputs(tiny_clip: tuple[Any, Any]) -> None:
    towers = ClipTowers(*tiny_clip)
    assert towers.encode_text([]).shape == (0, 16)
    assert towers.encode_images([]).shape == (0, 16)


@pytest.mark.gpu
def test_cuda_placement(tiny_clip: tuple[Any, Any]) -> None:
    towers = ClipTowers(*tiny_clip, device="cuda", dtype="bfloat16")
    assert next(towers.model.parameters()).device.type == "cuda"
    out = towers.encode_images(_images())
    assert out.device.type == "cpu" and out.dtype == torch.float32
