"""ClipEmbedder: text, image and image+text items with a CLIP or SigLIP dual encoder.

Image+text items use **score fusion exactly as UniIR's CLIP_SF** (Wei et al. 2023, "UniIR";
``TIGER-AI-Lab/UniIR`` ``src/models/uniir_clip/clip_scorefusion/clip_sf.py``): ``fuse_embeddings`` returns
``img_emb + txt_emb`` of the raw, unnormalised projected features (``encode_multimodal_input`` masks out a missing
side, so text-only and image-only items are just their tower's feature); the L2 normalisation happens afterwards,
at retrieval (``faiss.normalize_L2`` in ``src/common/mbeir_retriever.py``). Our output is therefore
``normalize(img_raw + txt_raw)``: the inner product with a normalised candidate is UniIR's score.

``fusion="mean_normalized"`` is the common zero-shot alternative: ``normalize(normalize(img) + normalize(txt))``,
which weighs both towers equally whatever their feature norms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lumir.embed.base import BaseEmbedder, EmbedInput
from lumir.embed.instructions import UNIIR_TEMPLATE, InstructionSet
from lumir.models.clip import ClipTowers
from lumir.models.pooling import l2_normalize
from lumir.types import Modality

__all__ = ["FUSIONS", "ClipEmbedder"]

FUSIONS = ("score", "mean_normalized")
"""Image+text fusion rules: UniIR CLIP_SF score fusion (default), or the mean of normalised features."""


class ClipEmbedder(BaseEmbedder):
    """Embeds text, image and image+text items with a CLIP/SigLIP model (image+text by UniIR score fusion).

    Args:
        model: a local CLIP or SigLIP folder (kind read from ``config.json``), or an in-memory
            ``(model, processor)`` pair such as :func:`lumir.testing.tiny.build_tiny_clip` returns (its
            :meth:`spec` has ``"path": None`` and cannot be rebuilt; save the model with ``save_pretrained``).
        fusion: ``"score"`` (UniIR CLIP_SF, ``img + txt`` of raw features) or ``"mean_normalized"``.
        max_text_tokens: truncation length (default and cap: the model's text positions).
        source: how :meth:`spec` names the model (default ``{"path": <absolute path>}``).
        **options: :class:`~lumir.embed.base.BaseEmbedder` options (device, dtype, instructions, ...).

    Example:
        >>> from lumir.testing.tiny import build_tiny_clip
        >>> from lumir.types import Item, Role
        >>> e = ClipEmbedder(build_tiny_clip())
        >>> v = e.embed([Item("q", text="a red square")], role=Role.QUERY)
        >>> tuple(v.shape), round(float(v.norm()), 4)
        ((1, 16), 1.0)
    """

    type_name = "clip"
    modalities = frozenset(Modality)

    def __init__(
        self,
        model: str | Path | tuple[Any, Any],
        *,
        fusion: str = "score",
        max_text_tokens: int | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        instructions: InstructionSet | Mapping[str, Any] | str | Path | None = None,
        instruction_template: str = UNIIR_TEMPLATE,
        show_progress: bool | None = None,
        sort_by_length: bool = True,
        source: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            device=device,
            dtype=dtype,
            instructions=instructions,
            instruction_template=instruction_template,
            show_progress=show_progress,
            sort_by_length=sort_by_length,
        )
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; use one of {list(FUSIONS)}")
        self.fusion = fusion
        self.path: Path | None
        if isinstance(model, tuple):
            hf_model, processor = model
            self.towers = ClipTowers(
                hf_model, processor, device=self.device, dtype=self.dtype, max_text_tokens=max_text_tokens
            )
            self.path = None
        else:
            self.towers = ClipTowers.from_pretrained(
                model, device=self.device, dtype=self.dtype, max_text_tokens=max_text_tokens
            )
            self.path = Path(model).expanduser().resolve()
        self.max_text_tokens = max_text_tokens
        self.dim = self.towers.dim
        self._source = dict(source) if source is not None else None

    def fuse(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Fuse raw projected features ``(n, dim)`` of the two towers into one unnormalised vector per item."""
        if self.fusion == "score":
            return image_features + text_features  # UniIR CLIP_SF fuse_embeddings
        return l2_normalize(image_features) + l2_normalize(text_features)

    def text_token_limit(self) -> int | None:
        """The text tower's truncation length: longer texts are cut (a warning per ``embed`` call says how many)."""
        return self.towers.max_text_tokens

    def text_token_counts(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token counts with the model's tokenizer."""
        return self.towers.untruncated_token_lengths(texts)

    def _encode_batch(self, batch: Sequence[EmbedInput]) -> torch.Tensor:
        modality = batch[0].modality
        if modality is Modality.TEXT:
            return self.towers.encode_text([inp.text or "" for inp in batch])
        images = self.towers.encode_images(self.load_images(batch))
        if modality is Modality.IMAGE:
            return images
        return self.fuse(images, self.towers.encode_text([inp.text or "" for inp in batch]))

    def _source_spec(self) -> dict[str, Any]:
        if self._source is not None:
            return dict(self._source)
        # an in-memory model has no path: the spec still describes it, but load_embedder refuses to rebuild it
        return {"path": None if self.path is None else str(self.path)}

    def _options_spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fusion": self.fusion}
        if self.max_text_tokens is not None:
            out["max_text_tokens"] = self.max_text_tokens
        return out
