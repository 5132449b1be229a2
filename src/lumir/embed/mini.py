"""MiniEmbedder: lumir-mini, an offline image–text dual encoder (frozen towers + trained heads), with an optional
open-vocabulary part.

- text: all-MiniLM-L6-v2 sentence embedding → text head;
- image: EfficientNet-Lite0 pooled head + stage features → image head; with ``mirror`` (the default of the shipped
  model) the embedding is the normalised mean of the image's and its mirror image's embeddings;
- image+text (composed queries, e.g. "this photo, but on a beach"): the normalised sum of the normalised image and
  text embeddings (UniIR's score-level fusion, ``CLIP_SF``, in a shared space).

**Open vocabulary** (``open_vocab=1``, ``mini:open_vocab=1``; what ``lumir demo`` uses): the heads only know
Flickr8k's world of people and dogs, so each vector gets a second, ConSE part (:mod:`lumir.models.conse`): a
photo's part is the probability-weighted mean of the MiniLM embeddings of its ``top`` most probable ImageNet class
names, a text's part is its MiniLM sentence embedding, a composed query's part is the normalised sum of the two
(both centred on the mean class-name embedding with ``center``). The vector is ``[sqrt(w) * heads,
sqrt(1 - w) * ConSE]`` (256 + 384 = 640-d for the shipped model), so every inner product is ``w`` times the heads'
cosine plus ``1 - w`` times the ConSE cosine. Off by default: on the Flickr8k 1K test it costs 4.9 Rsum (317.1 vs
322.0) for photos the heads were trained for, and finds cats, espresso cups and mopeds the heads cannot (numbers
and how the settings were chosen: BENCHMARKS.md, "lumir-mini open vocabulary (ConSE)"). Off, the vectors and the
spec are exactly those of lumir-mini before the option existed.

``open_vocab=gated`` (``mini:open_vocab=gated``) scales each photo's ConSE part by the square root of its top-1
ImageNet probability before normalising the row (:func:`~lumir.models.conse.fuse_gated`): photos of people rely
more on the heads, confidently recognised things bring ConSE in; a composed query's ConSE part is
``normalize(g * photo's part + text's part)``. Test Rsum 321.3 (−0.6), but "a cup of coffee" still returns the cat
among the sample photos, so it stays opt-in too (BENCHMARKS.md).

``load_embedder("mini")`` loads the heads shipped inside the package (``lumir/assets/mini``);
``load_embedder("mini:DIR")`` loads heads trained with ``lumir train embedder`` from ``DIR``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lumir.embed.base import BaseEmbedder, EmbedInput
from lumir.models.conse import (
    OpenVocabConfig,
    center_vectors,
    class_vectors,
    conse_vectors,
    fuse,
    fuse_gated,
    imagenet_class_names,
    mean_probabilities,
)
from lumir.models.mini import (
    TEXT_FEATURE_SPANS,
    ImageFeatureExtractor,
    MiniHeads,
    load_mini_heads,
    shipped_mini_path,
    text_tower_features,
)
from lumir.models.text import SentenceTransformerModel, minilm_path
from lumir.types import Modality

__all__ = ["MiniEmbedder", "imagenet_class_vectors", "shipped_mini_path"]

_CLASS_VECTORS: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}


def imagenet_class_vectors(templates: Sequence[str], model: SentenceTransformerModel | None = None) -> torch.Tensor:
    """all-MiniLM-L6-v2 embeddings ``(1000, 384)`` (CPU, float32) of the ImageNet class names in ``templates``
    (averaged), computed once per process (1,000 short MiniLM passes per template; ``model``: the loaded
    all-MiniLM-L6-v2 to use, else it is loaded)."""
    key = (str(minilm_path()), tuple(templates))
    if key not in _CLASS_VECTORS:
        model = model or SentenceTransformerModel.from_folder(minilm_path())
        _CLASS_VECTORS[key] = class_vectors(model.encode, imagenet_class_names(), templates)
    return _CLASS_VECTORS[key]


class MiniEmbedder(BaseEmbedder):
    """lumir-mini (see the module docstring).

    Args:
        path: a lumir-mini model folder (``config.json`` + ``heads.safetensors``); None = the shipped model.
        optimize: TorchScript-freeze the image tower on CPU (faster, same features to ~1e-5).
        open_vocab: the open-vocabulary (ConSE) part: False/0/None (default) = off (heads only, exactly the
            vectors of lumir-mini before this option); True/1 = on with the settings chosen on the Flickr8k
            training holdout (:class:`~lumir.models.conse.OpenVocabConfig`); ``"gated"`` = on with a confidence
            gate on photos' ConSE parts (:data:`~lumir.models.conse.GATED_OPEN_VOCAB`); a mapping = on with these
            settings (``weight``, ``top``, ``templates``, ``center``, ``mirror``, ``gate``; missing keys take the
            defaults, a missing ``gate`` means none).
        **options: :class:`~lumir.embed.base.BaseEmbedder` options (device, instructions, show_progress, ...).
    """

    modalities = frozenset({Modality.TEXT, Modality.IMAGE, Modality.IMAGE_TEXT})
    type_name = "mini"

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        optimize: bool = True,
        open_vocab: bool | int | str | Mapping[str, Any] | OpenVocabConfig | None = None,
        **options: Any,
    ) -> None:
        if options.get("dtype", "float32") not in ("float32", torch.float32):
            raise ValueError("lumir-mini runs in float32 only (its towers are small); drop the dtype option")
        super().__init__(**options)
        self.path = None if path is None else Path(path)
        self.open_vocab = OpenVocabConfig.parse(open_vocab)
        self.heads: MiniHeads = load_mini_heads(self.path or shipped_mini_path()).to(self.device)
        self.images = ImageFeatureExtractor(device=self.device, optimize=optimize)
        self.text_model = SentenceTransformerModel.from_folder(minilm_path(), device=self.device)
        sentence = TEXT_FEATURE_SPANS["sentence"]
        self._sentence = slice(*sentence)
        self.dim = self.heads.dim + (sentence[1] - sentence[0] if self.open_vocab else 0)
        self._class_vecs: torch.Tensor | None = None

    def class_vectors(self) -> torch.Tensor:
        """The ImageNet class-name embeddings the ConSE part uses (computed on first use; see
        :func:`imagenet_class_vectors`).

        Raises:
            RuntimeError: the open-vocabulary part is off.
        """
        if self.open_vocab is None:
            raise RuntimeError("the open-vocabulary part is off (open_vocab=0); there are no class vectors")
        if self._class_vecs is None:
            self._class_vecs = imagenet_class_vectors(self.open_vocab.templates, self.text_model)
        return self._class_vecs

    def _center(self) -> torch.Tensor | None:
        """The vector the open-vocabulary parts are centred on (the mean class-name embedding), or None."""
        return self.class_vectors().mean(dim=0) if self.open_vocab is not None and self.open_vocab.center else None

    def _text(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Heads embedding and (when open_vocab is on) the (centred) MiniLM sentence embedding of texts."""
        feats = text_tower_features(self.text_model, texts)
        heads = F.normalize(self.heads.text_head(feats.to(self.device)), dim=-1)
        if self.open_vocab is None:
            return heads, None
        return heads, center_vectors(feats[:, self._sentence], self._center())

    def _image(self, batch: Sequence[EmbedInput]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Heads embedding and (when open_vocab is on) the ConSE embedding and the confidence gate (None: no gate)
        of a batch of photos."""
        pixels = self.images.pixels(self.load_images(batch))
        views = [self.images.from_pixels(pixels)]
        out = F.normalize(self.heads.image_head(views[0].to(self.device)), dim=-1)
        if self.heads.mirror:
            views.append(self.images.from_pixels(pixels, mirror=True))
            mirror = self.heads.image_head(views[1].to(self.device))
            out = F.normalize(out + F.normalize(mirror, dim=-1), dim=-1)
        if self.open_vocab is None:
            return out, None, None
        if not self.open_vocab.mirror:
            views = views[:1]
        elif len(views) == 1:
            views.append(self.images.from_pixels(pixels, mirror=True))
        probs = mean_probabilities(*(self.images.class_logits(v) for v in views))
        ov = center_vectors(conse_vectors(probs, self.class_vectors(), self.open_vocab.top), self._center())
        gate = self.open_vocab.gate
        return out, ov, None if gate is None else gate(probs, self.open_vocab.top).cpu()

    def _encode_batch(self, batch: Sequence[EmbedInput]) -> torch.Tensor:
        modality = batch[0].modality
        gate = None
        if modality is Modality.TEXT:
            heads, ov = self._text([inp.text or "" for inp in batch])
        else:
            heads, ov, gate = self._image(batch)
            if modality is Modality.IMAGE_TEXT:
                text_heads, text_ov = self._text([inp.text or "" for inp in batch])
                heads = F.normalize(heads + text_heads, dim=-1)
                if ov is not None and text_ov is not None:
                    # a composed query keeps its text's ConSE part; its photo's part enters gated
                    photo_ov = ov if gate is None else ov * gate.to(ov.device)[:, None]
                    ov, gate = F.normalize(photo_ov + text_ov, dim=-1), None
        if self.open_vocab is None or ov is None:
            return heads
        if gate is not None:
            return fuse_gated(heads.cpu(), ov.cpu(), self.open_vocab.weight, gate)
        return fuse(heads.cpu(), ov.cpu(), self.open_vocab.weight)

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

    def text_token_limit(self) -> int | None:
        """MiniLM's ``max_seq_length``: longer texts are truncated (a warning per ``embed`` call says how many)."""
        return self.text_model.max_seq_length

    def text_token_counts(self, texts: Sequence[str]) -> list[int]:
        """Untruncated MiniLM token counts."""
        return self.text_model.untruncated_token_lengths(texts)

    def _source_spec(self) -> dict[str, Any]:
        return {} if self.path is None else {"path": str(self.path)}

    def _options_spec(self) -> dict[str, Any]:
        # off: no key, so heads-only specs are those of lumir-mini before the option (old indexes still match)
        return {} if self.open_vocab is None else {"open_vocab": self.open_vocab.to_dict()}
