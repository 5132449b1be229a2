"""MiniEmbedder: lumir-mini, an offline image–text dual encoder (frozen towers + trained heads).

- text: all-MiniLM-L6-v2 sentence embedding → text head;
- image: EfficientNet-Lite0 pooled head + stage features → image head; with ``mirror`` (the default of the shipped
  model) the embedding is the normalised mean of the image's and its mirror image's embeddings;
- image+text (composed queries, e.g. "this photo, but on a beach"): the normalised sum of the normalised image and
  text embeddings (UniIR's score-level fusion, ``CLIP_SF``, in a shared space).

``load_embedder("mini")`` loads the heads shipped inside the package (``lumir/assets/mini``);
``load_embedder("mini:DIR")`` loads heads trained with ``lumir train embedder`` from ``DIR``.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lumir.embed.base import BaseEmbedder, EmbedInput
from lumir.models.mini import ImageFeatureExtractor, MiniHeads, load_mini_heads, text_tower_features
from lumir.models.text import SentenceTransformerModel, minilm_path
from lumir.types import Modality

__all__ = ["MiniEmbedder", "shipped_mini_path"]


def shipped_mini_path() -> Path:
    """Folder of the lumir-mini heads shipped inside the package."""
    return Path(str(resources.files("lumir") / "assets" / "mini"))


class MiniEmbedder(BaseEmbedder):
    """lumir-mini (see the module docstring).

    Args:
        path: a lumir-mini model folder (``config.json`` + ``heads.safetensors``); None = the shipped model.
        optimize: TorchScript-freeze the image tower on CPU (faster, same features to ~1e-5).
        **options: :class:`~lumir.embed.base.BaseEmbedder` options (device, instructions, show_progress, ...).
    """

    modalities = frozenset({Modality.TEXT, Modality.IMAGE, Modality.IMAGE_TEXT})
    type_name = "mini"

    def __init__(self, path: str | Path | None = None, *, optimize: bool = True, **options: Any) -> None:
        if options.get("dtype", "float32") not in ("float32", torch.float32):
            raise ValueError("lumir-mini runs in float32 only (its towers are small); drop the dtype option")
        super().__init__(**options)
        self.path = None if path is None else Path(path)
        self.heads: MiniHeads = load_mini_heads(self.path or shipped_mini_path()).to(self.device)
        self.images = ImageFeatureExtractor(device=self.device, optimize=optimize)
        self.text_model = SentenceTransformerModel.from_folder(minilm_path(), device=self.device)
        self.dim = self.heads.dim

    def _text(self, texts: Sequence[str]) -> torch.Tensor:
        feats = text_tower_features(self.text_model, texts).to(self.device)
        return F.normalize(self.heads.text_head(feats), dim=-1)

    def _image(self, batch: Sequence[EmbedInput]) -> torch.Tensor:
        pixels = self.images.pixels(self.load_images(batch))
        out = F.normalize(self.heads.image_head(self.images.from_pixels(pixels).to(self.device)), dim=-1)
        if self.heads.mirror:
            mirror = self.heads.image_head(self.images.from_pixels(pixels, mirror=True).to(self.device))
            out = F.normalize(out + F.normalize(mirror, dim=-1), dim=-1)
        return out

    def _encode_batch(self, batch: Sequence[EmbedInput]) -> torch.Tensor:
        modality = batch[0].modality
        if modality is Modality.TEXT:
            return self._text([inp.text or "" for inp in batch])
        image = self._image(batch)
        if modality is Modality.IMAGE:
            return image
        return F.normalize(image + self._text([inp.text or "" for inp in batch]), dim=-1)

    def plan_batches(self, inputs: Sequence[EmbedInput], batch_size: int) -> list[list[EmbedInput]]:
        """Text batches as asked; image batches capped at the image tower's fastest CPU batch size."""
        out: list[list[EmbedInput]] = []
        for batch in super().plan_batches(inputs, batch_size):
            if batch[0].modality is Modality.TEXT or self.device.type != "cpu":
                out.append(batch)
            else:
                step = ImageFeatureExtractor.batch_size
                out.extend(batch[i : i + step] for i in range(0, len(batch), step))
        return out

    def _source_spec(self) -> dict[str, Any]:
        return {} if self.path is None else {"path": str(self.path)}
