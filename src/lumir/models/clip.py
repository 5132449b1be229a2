"""One small interface over ``transformers``' CLIPModel and SiglipModel dual encoders.

:class:`ClipTowers` wraps a model and its processor and offers :meth:`ClipTowers.encode_text` and
:meth:`ClipTowers.encode_images`, both returning the *projected, unnormalised* features as float32 CPU tensors
(the space in which UniIR's CLIP_SF adds image and text features before normalising).

transformers 5 changed ``get_text_features``/``get_image_features``: they now return a
``BaseModelOutputWithPooling`` whose ``pooler_output`` holds the projected embedding, not a bare tensor. This
adapter absorbs that (a test pins it), so nothing above ``lumir.models`` touches HF output objects.

Text is truncated to the model's text positions (77 for OpenAI CLIP, 64 for SigLIP). SigLIP was trained on
``padding="max_length"`` inputs and pools the *last* position, so its text is always padded to that length and
no attention mask is passed, as in the model card's usage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch

from lumir.models.hub import quiet_loading, resolve_device, resolve_dtype, resolve_local_model

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["SUPPORTED_MODEL_TYPES", "ClipTowers", "clip_model_type"]

SUPPORTED_MODEL_TYPES = ("clip", "siglip")
"""``config.json`` ``model_type`` values :class:`ClipTowers` loads."""

Kind = Literal["clip", "siglip"]


def clip_model_type(folder: str | Path) -> Kind:
    """Read ``model_type`` from a local model folder's ``config.json`` and check that it is CLIP or SigLIP.

    Raises:
        ModelNotFoundError: the folder does not exist.
        ValueError: no ``config.json`` or an unsupported ``model_type``.
    """
    import json

    root = resolve_local_model(folder, what="CLIP/SigLIP model")
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"{cfg_path} not found: {root} is not a transformers model folder")
    model_type = json.loads(cfg_path.read_text(encoding="utf-8")).get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{cfg_path}: model_type {model_type!r} is not a dual encoder lumir loads; "
            f"supported: {list(SUPPORTED_MODEL_TYPES)}"
        )
    return cast(Kind, model_type)


class ClipTowers:
    """The text and image towers of a CLIP or SigLIP model behind one small interface.

    Args:
        model: a ``transformers`` ``CLIPModel`` or ``SiglipModel``.
        processor: the matching processor (tokenizer + image processor).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``; the model is moved there.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``; the model is cast to it (outputs are float32).
        max_text_tokens: truncation length; defaults to (and is capped at) the model's text positions.

    Example:
        >>> from lumir.testing.tiny import build_tiny_clip
        >>> towers = ClipTowers(*build_tiny_clip())
        >>> tuple(towers.encode_text(["a red square"]).shape)
        (1, 16)
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        max_text_tokens: int | None = None,
    ) -> None:
        model_type = model.config.model_type
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"model_type {model_type!r} is not supported; use one of {list(SUPPORTED_MODEL_TYPES)}")
        self.kind: Kind = model_type
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, device=self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.processor = processor
        positions = int(model.config.text_config.max_position_embeddings)
        self.max_text_tokens = min(max_text_tokens or positions, positions)
        if self.kind == "clip":
            self.dim = int(model.config.projection_dim)
        else:
            self.dim = int(model.config.vision_config.hidden_size)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        max_text_tokens: int | None = None,
    ) -> ClipTowers:
        """Load a local CLIP or SigLIP folder (kind detected from ``config.json``); never downloads."""
        from transformers import AutoProcessor, CLIPModel, SiglipModel

        root = resolve_local_model(folder, what="CLIP/SigLIP model")
        kind = clip_model_type(root)
        model_cls = CLIPModel if kind == "clip" else SiglipModel
        with quiet_loading():
            model = model_cls.from_pretrained(str(root), local_files_only=True)
            processor = AutoProcessor.from_pretrained(str(root), local_files_only=True)
        return cls(model, processor, device=device, dtype=dtype, max_text_tokens=max_text_tokens)

    @property
    def tokenizer(self) -> Any:
        """The processor's tokenizer."""
        return self.processor.tokenizer

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise with truncation to :attr:`max_text_tokens`, onto the model device."""
        if self.kind == "siglip":
            enc = self.tokenizer(
                list(texts),
                padding="max_length",
                truncation=True,
                max_length=self.max_text_tokens,
                return_tensors="pt",
            )
            return {"input_ids": enc["input_ids"].to(self.device)}
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def untruncated_token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts before truncation (special tokens included): above :attr:`max_text_tokens`, a text is cut."""
        enc = self.tokenizer(list(texts), truncation=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def preprocess_images(self, images: Sequence[PILImage.Image]) -> torch.Tensor:
        """Resize/normalise images with the processor: ``(n, 3, H, W)`` in the model dtype on the model device."""
        pixels = self.processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        return pixels.to(device=self.device, dtype=self.dtype)

    def text_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Projected text features from tokenised input, float32 on the model device."""
        return self.model.get_text_features(**features).pooler_output.float()  # (batch, dim)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image features from preprocessed pixels, float32 on the model device."""
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output.float()  # (batch, dim)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Projected, unnormalised text features: ``(len(texts), dim)`` float32 CPU."""
        if not texts:
            return torch.empty(0, self.dim)
        with torch.inference_mode():
            return self.text_features(self.tokenize(texts)).cpu()

    def encode_images(self, images: Sequence[PILImage.Image]) -> torch.Tensor:
        """Projected, unnormalised image features: ``(len(images), dim)`` float32 CPU."""
        if not images:
            return torch.empty(0, self.dim)
        with torch.inference_mode():
            return self.image_features(self.preprocess_images(images)).cpu()
