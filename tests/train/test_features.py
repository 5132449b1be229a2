"""Frozen-feature caches: contents, reuse, mismatch errors, resumable shards, bad images named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lumir.data.flickr8k import load_flickr8k
from lumir.errors import DataFormatError, ImageLoadError
from lumir.models.mini import (
    IMAGE_FEATURE_DIM,
    TEXT_FEATURE_DIM,
    TEXT_FEATURE_SPANS,
    ImageFeatureExtractor,
    text_tower_features,
)
from lumir.train.features import FeatureCache, cache_image_features, cache_text_features
from lumir.types import ImageRef, Item


@pytest.fixture(scope="module")
def extractor() -> ImageFeatureExtractor:
    return ImageFeatureExtractor(optimize=False)


def test_image_cache_holds_both_views_and_reloads(tiny_flickr8k: Path, tmp_path: Path, extractor) -> None:
    images, _ = load_flickr8k(tiny_flickr8k / "flickr8k", "train_tiny")
    cache = cache_image_features(images[:5], tmp_path / "img", extractor=extractor, shard_size=2)
    assert cache.features.shape == (5, 2, IMAGE_FEATURE_DIM) and cache.views == ["original", "mirror"]
    direct = extractor([it.image.load() for it in images[:5]])  # type: ignore[union-attr]
    np.testing.assert_allclose(cache.features[:, 0], direct.numpy(), rtol=1e-5, atol=1e-5)
    manifest = json.loads((tmp_path / "img" / "manifest.json").read_text())
    assert manifest["ids"] == [it.id for it in images[:5]] and "versions" in manifest
    assert manifest["throughput"]["images_per_second"] > 0
    assert not (tmp_path / "img.partial").exists()
    again = cache_image_features(images[:5], tmp_path / "img", extractor=extractor)  # reused, not recomputed
    np.testing.assert_array_equal(again.features, cache.features)
    assert FeatureCache.load(tmp_path / "img").dim == IMAGE_FEATURE_DIM


def test_cache_for_other_items_is_an_error_not_a_silent_recompute(tiny_flickr8k: Path, tmp_path: Path, extractor):
    images, _ = load_flickr8k(tiny_flickr8k / "flickr8k", "train_tiny")
    cache_image_features(images[:2], tmp_path / "img", extractor=extractor, mirror=False)
    with pytest.raises(DataFormatError, match="existing cache was made for"):
        cache_image_features(images[:3], tmp_path / "img", extractor=extractor, mirror=False)
    with pytest.raises(DataFormatError, match="views"):
        cache_image_features(images[:2], tmp_path / "img", extractor=extractor, mirror=True)


def test_interrupted_extraction_resumes_from_finished_shards(tiny_flickr8k: Path, tmp_path: Path, extractor):
    images, _ = load_flickr8k(tiny_flickr8k / "flickr8k", "train_tiny")
    calls: list[int] = []
    real = extractor.from_pixels

    def failing(pixels: torch.Tensor, *, view: str = "original") -> torch.Tensor:
        calls.append(pixels.shape[0])
        if len(calls) > 4:  # dies while encoding the third shard
            raise KeyboardInterrupt
        return real(pixels, view=view)

    extractor.from_pixels = failing  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            cache_image_features(images[:6], tmp_path / "img", extractor=extractor, shard_size=2, batch_size=2)
    finally:
        extractor.from_pixels = real  # type: ignore[method-assign]
    assert len(list((tmp_path / "img.partial").glob("shard-*.npy"))) == 2
    assert not (tmp_path / "img").exists()  # nothing published until complete
    counted: list[int] = []

    def counting(pixels: torch.Tensor, *, view: str = "original") -> torch.Tensor:
        counted.append(pixels.shape[0])
        return real(pixels, view=view)

    extractor.from_pixels = counting  # type: ignore[method-assign]
    try:
        cache = cache_image_features(images[:6], tmp_path / "img", extractor=extractor, shard_size=2, batch_size=2)
    finally:
        extractor.from_pixels = real  # type: ignore[method-assign]
    assert sum(counted) == 2 * 2  # only the last shard (2 images x 2 views) was encoded again
    fresh = cache_image_features(images[:6], tmp_path / "fresh", extractor=extractor, shard_size=6)
    np.testing.assert_allclose(cache.features, fresh.features, rtol=1e-5, atol=1e-5)


def test_unreadable_image_is_named(tmp_path: Path, extractor: ImageFeatureExtractor) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageLoadError, match="item 'broken'"):
        cache_image_features([Item("broken", image=ImageRef(str(bad)))], tmp_path / "img", extractor=extractor)
    with pytest.raises(ValueError, match="have no image"):
        cache_image_features([Item("t", text="x")], tmp_path / "img2", extractor=extractor)


def test_text_cache_matches_the_text_model(tiny_flickr8k: Path, tmp_path: Path) -> None:
    from lumir.models.text import SentenceTransformerModel, minilm_path

    _, captions = load_flickr8k(tiny_flickr8k / "flickr8k", "train_tiny")
    model = SentenceTransformerModel.from_folder(minilm_path())
    cache = cache_text_features(captions[:7], tmp_path / "txt", model=model, batch_size=3, shard_size=4)
    assert cache.features.shape == (7, 1, TEXT_FEATURE_DIM)
    texts = [str(c.text) for c in captions[:7]]
    np.testing.assert_allclose(cache.features[:, 0], text_tower_features(model, texts).numpy(), rtol=1e-4, atol=1e-5)
    sentence = cache.features[:, 0, slice(*TEXT_FEATURE_SPANS["sentence"])]  # = the model's own sentence embedding
    np.testing.assert_allclose(sentence, model.encode(texts).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="have no text"):
        cache_text_features([Item("i", image=ImageRef("x.jpg"))], tmp_path / "t2", model=model)


def test_views_are_checked_and_zoom_views_differ(tiny_flickr8k: Path, tmp_path: Path, extractor) -> None:
    images, _ = load_flickr8k(tiny_flickr8k / "flickr8k", "train_tiny")
    with pytest.raises(ValueError, match="views must start with 'original'"):
        cache_image_features(images[:2], tmp_path / "a", extractor=extractor, views=["mirror"])
    with pytest.raises(ValueError, match="views must start with 'original'"):
        cache_image_features(images[:2], tmp_path / "b", extractor=extractor, views=["original", "blur"])
    cache = cache_image_features(images[:2], tmp_path / "c", extractor=extractor, views=["original", "zoom"])
    assert cache.views == ["original", "zoom"]
    assert not np.allclose(cache.features[:, 0], cache.features[:, 1], atol=1e-3)
