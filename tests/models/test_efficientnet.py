"""EfficientNet-Lite0 tower: strict checkpoint loading, real-photo classification, shapes and TF-same padding."""

from __future__ import annotations

import pytest
import skimage.data as skimage_data
import torch
import torch.nn.functional as F
from PIL import Image

from lumir.models.efficientnet import (
    Conv2dSame,
    EfficientNetLite0,
    default_weights_path,
    load_efficientnet_lite0,
    preprocess_efficientnet,
)

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968}  # espresso, cup
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def model() -> EfficientNetLite0:
    return load_efficientnet_lite0()


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    images = [Image.fromarray(skimage_data.chelsea()), Image.fromarray(skimage_data.coffee())]
    return preprocess_efficientnet(images)


def test_state_dict_loads_strictly() -> None:
    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    net = EfficientNetLite0()
    assert set(net.state_dict()) == set(state)
    assert all(net.state_dict()[k].shape == v.shape for k, v in state.items())
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(1 for b in net._blocks if b.has_residual) == 9
    assert not net._blocks[0].has_expand
    assert all(m.eps == 1e-3 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_loaded_model_is_eval(model: EfficientNetLite0) -> None:
    assert not model.training


def test_preprocess_range_and_shape(photos: torch.Tensor) -> None:
    assert photos.shape == (2, 3, 224, 224)
    assert photos.dtype == torch.float32
    assert photos.min() >= -1.0 and photos.max() <= 1.0
    assert photos.min() < -0.9 and photos.max() > 0.9  # uses the full [-1, 1] range
    wide = preprocess_efficientnet([Image.new("L", (300, 100), color=255)], size=64)
    assert wide.shape == (1, 3, 64, 64)
    torch.testing.assert_close(wide, torch.ones_like(wide))


def test_real_photos_top1_minus_one_one(model: EfficientNetLite0, photos: torch.Tensor) -> None:
    with torch.no_grad():
        top1 = model(photos).argmax(-1).tolist()
    assert top1[0] in CATS, top1
    assert top1[1] in COFFEE, top1


def test_real_photos_top1_imagenet_mean_std(model: EfficientNetLite0, photos: torch.Tensor) -> None:
    unit = (photos + 1.0) / 2.0
    with torch.no_grad():
        top1 = model((unit - IMAGENET_MEAN) / IMAGENET_STD).argmax(-1).tolist()
    assert top1[0] in CATS, top1
    assert top1[1] in COFFEE, top1


def test_features_and_stage_shapes(model: EfficientNetLite0, photos: torch.Tensor) -> None:
    with torch.no_grad():
        feats = model.features(photos)
        stages = model.stage_features(photos)
        both_feats, both_stages = model.features_and_stages(photos)
        logits = model(photos)
    assert feats.shape == (2, 1280)
    assert [tuple(s.shape) for s in stages] == [(2, c) for c in (16, 24, 40, 80, 112, 192, 320)]
    torch.testing.assert_close(both_feats, feats)
    for a, b in zip(both_stages, stages, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(logits, model._fc(feats))


def test_head_map_is_7x7_at_224(model: EfficientNetLite0, photos: torch.Tensor) -> None:
    with torch.no_grad():
        head, stages = model.forward_maps(photos)
    assert head.shape == (2, 1280, 7, 7)
    assert [s.shape[-1] for s in stages] == [112, 56, 28, 14, 14, 7, 7]


def test_conv2d_same_is_tf_asymmetric() -> None:
    torch.manual_seed(0)
    conv = Conv2dSame(2, 3, 3, stride=2)
    x = torch.randn(1, 2, 224, 224)
    out = conv(x)
    assert out.shape[-2:] == (112, 112)
    # TF "same": total pad 1 for k=3, s=2, even input -> all of it on the right/bottom.
    expected = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv.weight, stride=2)
    torch.testing.assert_close(out, expected)
    odd = conv(torch.randn(1, 2, 7, 7))
    assert odd.shape[-2:] == (4, 4)
    depthwise5 = Conv2dSame(4, 4, 5, stride=2, groups=4)
    assert depthwise5(torch.randn(1, 4, 28, 28)).shape[-2:] == (14, 14)


def test_batch_of_two_equals_two_batches_of_one(model: EfficientNetLite0, photos: torch.Tensor) -> None:
    with torch.no_grad():
        batched = model(photos)
        single = torch.cat([model(photos[:1]), model(photos[1:])])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)
