"""lumir-mini model files and image features: save/load round trip, clear errors, feature layout, mirror view."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import skimage.data as skimage_data
import torch
from PIL import Image

from lumir.errors import DataFormatError, ModelNotFoundError
from lumir.models.heads import ProjectionHead
from lumir.models.mini import (
    IMAGE_FEATURE_DIM,
    IMAGE_FEATURE_SPANS,
    TEXT_FEATURE_DIM,
    TEXT_FEATURE_SPANS,
    ImageFeatureExtractor,
    MiniHeads,
    feature_spans,
    load_mini_heads,
)


def _heads() -> MiniHeads:
    torch.manual_seed(0)
    image = ProjectionHead(IMAGE_FEATURE_DIM, 16, kind="mlp", select=feature_spans(["head", "stage6"]))
    text = ProjectionHead(TEXT_FEATURE_DIM, 16)
    image.fit_standardizer(torch.randn(20, IMAGE_FEATURE_DIM) * 3 + 1)
    return MiniHeads(image, text, logit_scale=25.0, meta={"note": "test"}).eval()


def test_feature_layout_covers_the_vector_once() -> None:
    spans = sorted(IMAGE_FEATURE_SPANS.values())
    assert spans[0][0] == 0 and spans[-1][1] == IMAGE_FEATURE_DIM == 3856
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    with pytest.raises(ValueError, match="unknown image feature part"):
        feature_spans(["stage7"])
    text_spans = sorted(TEXT_FEATURE_SPANS.values())
    assert text_spans[0][0] == 0 and text_spans[-1][1] == TEXT_FEATURE_DIM == 1536
    assert all(a[1] == b[0] for a, b in itertools.pairwise(text_spans))
    with pytest.raises(ValueError, match="unknown text feature part"):
        feature_spans(["layer9"], text=True)


def test_save_load_round_trip(tmp_path: Path) -> None:
    heads = _heads()
    heads.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["format"] == "lumir-mini/1" and config["meta"] == {"note": "test"} and "versions" in config
    loaded = load_mini_heads(tmp_path / "m")
    assert not loaded.training and loaded.logit_scale == 25.0 and loaded.dim == 16
    img, txt = torch.randn(3, IMAGE_FEATURE_DIM), torch.randn(3, TEXT_FEATURE_DIM)
    torch.testing.assert_close(loaded.image_head(img), heads.image_head(img))
    torch.testing.assert_close(loaded.text_head(txt), heads.text_head(txt))


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_mini_heads(tmp_path)
    _heads().save(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    config = json.loads(cfg_path.read_text())
    cfg_path.write_text("{not json")
    with pytest.raises(DataFormatError, match="invalid JSON"):
        load_mini_heads(tmp_path / "m")
    cfg_path.write_text(json.dumps({**config, "format": "other/1"}))
    with pytest.raises(DataFormatError, match="not a lumir-mini config"):
        load_mini_heads(tmp_path / "m")
    config["text_head"]["out_dim"] = 16
    config["image_head"]["hidden"] = 7  # architecture no longer matches the stored weights
    cfg_path.write_text(json.dumps(config))
    with pytest.raises(DataFormatError, match="weights do not match"):
        load_mini_heads(tmp_path / "m")


def test_heads_must_share_a_width() -> None:
    with pytest.raises(ValueError, match="out_dim"):
        MiniHeads(ProjectionHead(IMAGE_FEATURE_DIM, 8), ProjectionHead(TEXT_FEATURE_DIM, 16))


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    # square 224x224 photos, so that preprocessing (resize + centre crop) commutes with a horizontal flip
    return [
        Image.fromarray(a).crop((0, 0, 300, 300)).resize((224, 224))
        for a in (skimage_data.chelsea(), skimage_data.coffee())
    ]


def test_traced_features_match_eager_and_mirror_is_a_flip(photos: list[Image.Image]) -> None:
    fast, eager = ImageFeatureExtractor(), ImageFeatureExtractor(optimize=False)
    f_fast, f_eager = fast(photos), eager(photos)
    assert f_fast.shape == (2, IMAGE_FEATURE_DIM)
    torch.testing.assert_close(f_fast, f_eager, rtol=1e-4, atol=1e-4)
    flipped = [p.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for p in photos]
    torch.testing.assert_close(eager(photos, mirror=True), eager(flipped), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(f_eager, eager(photos, mirror=True), atol=1e-3)  # a different view
    head = slice(*IMAGE_FEATURE_SPANS["head"])
    assert bool((f_eager[:, head] >= 0).all())  # pooled after ReLU6
    assert fast([]).shape == (0, IMAGE_FEATURE_DIM)


def test_pooling_parts_of_the_feature_vector() -> None:
    from lumir.models.efficientnet import load_efficientnet_lite0
    from lumir.models.mini import _PooledTrunk, gem_pool

    net = load_efficientnet_lite0()
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        feats = _PooledTrunk(net)(x)
        head, stages = net.forward_maps(x)
    assert feats.shape == (2, IMAGE_FEATURE_DIM) == (2, 3856)

    def part(name: str) -> torch.Tensor:
        return feats[:, slice(*IMAGE_FEATURE_SPANS[name])]

    torch.testing.assert_close(part("head"), head.mean(dim=(2, 3)))
    torch.testing.assert_close(part("stage3"), stages[3].mean(dim=(2, 3)))
    torch.testing.assert_close(part("head_gem"), gem_pool(head))
    torch.testing.assert_close(part("stage6_max"), stages[6].amax(dim=(2, 3)))
    assert bool((part("head") <= part("head_gem") + 1e-5).all())  # power mean >= arithmetic mean
    assert bool((part("head_gem") <= head.amax(dim=(2, 3)) + 1e-5).all())


def test_class_logits_are_the_classifier_over_the_pooled_head() -> None:
    from lumir.models.conse import imagenet_class_names

    extractor = ImageFeatureExtractor(optimize=False)
    photos = [Image.fromarray(skimage_data.chelsea()), Image.fromarray(skimage_data.coffee())]
    pixels = extractor.pixels(photos)
    logits = extractor.class_logits(extractor.from_pixels(pixels))
    with torch.no_grad():
        full = extractor.net(pixels)  # the network's own forward pass, classifier included
    torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-4)
    names = imagenet_class_names()  # class-index order matches the classifier's outputs
    top = [[names[i] for i in row] for row in logits.topk(3, dim=1).indices.tolist()]
    assert set(top[0]) <= {"tabby cat", "tiger cat", "Egyptian Mau", "lynx"} and top[1][0] == "espresso"
