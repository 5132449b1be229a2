"""Image towers and text sides for action-aware prompt tuning (:mod:`lumir.models.action_prompt`).

Two image towers behind :class:`~lumir.models.action_prompt.PromptableBackbone`:

- :class:`ClipVisionBackbone`, the paper's model: a ``transformers`` CLIP vision tower, frozen; prompts are appended
  to its token sequence and pass through its own encoder layers; ``z^img`` is its projected class token.
- :class:`MiniPatchBackbone`, **lumir's adaptation** to lumir-mini (not the paper's model; no ViT weights exist
  offline): the frozen EfficientNet-Lite0 stage 5 and 6 feature maps (192 + 320 channels at 7x7) are the 49
  "patch" tokens of a small *trainable* transformer (with a class token and learned positions) into which the
  prompts are appended. Its output is a residual on lumir-mini's own image embedding: ``z^img = normalize(z_mini +
  W_out LN(cls))`` with ``W_out`` zero-initialised, so before training the re-scorer reproduces the first stage
  exactly and training only has to learn a correction.

The text sides turn captions and knowledge into the frozen-encoder inputs the prompter needs
(:class:`~lumir.models.action_prompt.KnowledgeBatch`) and the text embeddings ``z^txt``: CLIP's token embeddings and
text features (:class:`ClipTextSide`), or MiniLM's word embeddings and sentence embeddings with lumir-mini's text
head for ``z^txt`` (:class:`MiniTextSide`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lumir.models.action_prompt import KnowledgeBatch, handcrafted_text, state_text

__all__ = [
    "MINI_PATCH_STAGES",
    "ClipTextSide",
    "ClipVisionBackbone",
    "MiniImageInputs",
    "MiniPatchBackbone",
    "MiniTextSide",
    "MiniTowers",
    "encode_knowledge",
]

Triplet = tuple[str, str, str]
MINI_PATCH_STAGES = (5, 6)
"""EfficientNet-Lite0 stages whose 7x7 maps are the mini tower's patch tokens (192 + 320 = 512 channels)."""


class ClipVisionBackbone(nn.Module):
    """A frozen ``transformers`` CLIP vision tower split per encoder layer (the paper's image encoder)."""

    def __init__(self, clip_model: Any) -> None:
        super().__init__()
        self.vision = clip_model.vision_model
        self.projection = clip_model.visual_projection
        self.hidden = int(clip_model.config.vision_config.hidden_size)
        self.num_layers = len(self.vision.encoder.layers)
        self.out_dim = int(clip_model.config.projection_dim)
        for p in self.parameters():
            p.requires_grad_(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """None: CLIP stays frozen (§3.4)."""
        return []

    def embed(self, images: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.vision.pre_layrnorm(self.vision.embeddings(images["pixel_values"]))

    def layer(self, i: int, hidden: torch.Tensor) -> torch.Tensor:
        out = self.vision.encoder.layers[i](hidden, None)
        return out[0] if isinstance(out, tuple) else out

    def pool(self, hidden: torch.Tensor, images: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(self.projection(self.vision.post_layernorm(hidden[:, 0])), dim=-1)


class MiniPatchBackbone(nn.Module):
    """lumir's adaptation: a small trainable transformer over frozen EfficientNet-Lite0 patch tokens, residual on
    lumir-mini's image embedding (see the module docstring).

    Args:
        in_channels: channels of a patch token (512 for stages 5 + 6). out_dim: lumir-mini's embedding width.
        dim, layers, heads: the transformer. num_patches: tokens per image (49).
    """

    def __init__(
        self, *, in_channels: int = 512, out_dim: int = 256, dim: int = 256, layers: int = 2, heads: int = 4,
        num_patches: int = 49,
    ) -> None:  # fmt: skip
        super().__init__()
        self.config = {"in_channels": in_channels, "out_dim": out_dim, "dim": dim, "layers": layers, "heads": heads,
                       "num_patches": num_patches}  # fmt: skip
        self.hidden, self.num_layers, self.out_dim = dim, layers, out_dim
        self.token_proj = nn.Linear(in_channels, dim)
        self.token_norm = nn.LayerNorm(in_channels)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.positions = nn.Parameter(torch.randn(1, num_patches + 1, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(layers)
        )
        self.out_norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """All of it: there is no pretrained transformer to keep frozen (the EfficientNet and heads are)."""
        return list(self.parameters())

    def embed(self, images: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = self.token_proj(self.token_norm(images["tokens"].float()))
        cls = self.cls.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.positions

    def layer(self, i: int, hidden: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers[i](hidden)
        return out

    def pool(self, hidden: torch.Tensor, images: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(images["base"].float() + self.out(self.out_norm(hidden[:, 0])), dim=-1)


class MiniTowers:
    """lumir-mini's frozen parts (what :class:`~lumir.embed.mini.MiniEmbedder` holds): EfficientNet-Lite0, MiniLM and
    the trained heads (the shipped ones by default).

    Args:
        heads: a lumir-mini model folder; None = the heads shipped in the package. device: where the towers run.
    """

    def __init__(self, heads: str | Path | None = None, *, device: str | torch.device = "cpu") -> None:
        from lumir.models.hub import resolve_device
        from lumir.models.mini import ImageFeatureExtractor, load_mini_heads, shipped_mini_path
        from lumir.models.text import SentenceTransformerModel, minilm_path

        self.device = resolve_device(device)
        self.heads = load_mini_heads(heads or shipped_mini_path()).to(self.device)
        self.images = ImageFeatureExtractor(device=self.device)
        self.text_model = SentenceTransformerModel.from_folder(minilm_path(), device=self.device)


class MiniImageInputs:
    """Photos -> ``{"tokens": (n, 49, 512), "base": (n, 256)}`` for :class:`MiniPatchBackbone`: the stage 5 + 6 maps
    of the eager EfficientNet-Lite0 and lumir-mini's own image embedding (as :class:`~lumir.embed.mini.MiniEmbedder`
    computes it, mirror averaging included).

    Args:
        embedder: :class:`MiniTowers` (or a :class:`~lumir.embed.mini.MiniEmbedder`, which holds the same parts).
    """

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        extractor, heads = self.embedder.images, self.embedder.heads
        pixels = extractor.pixels(images)
        _, stages = extractor.net.forward_maps(pixels.to(extractor.device))
        tokens = torch.cat([stages[i] for i in MINI_PATCH_STAGES], dim=1).flatten(2).transpose(1, 2)
        base = F.normalize(heads.image_head(extractor.from_pixels(pixels).to(self.embedder.device)), dim=-1)
        if heads.mirror:
            mirror = heads.image_head(extractor.from_pixels(pixels, mirror=True).to(self.embedder.device))
            base = F.normalize(base + F.normalize(mirror, dim=-1), dim=-1)
        return {"tokens": tokens.float().cpu().clone(), "base": base.float().cpu().clone()}


class _StringCache:
    """Per-string memo of a frozen encoder (knowledge repeats: "man", "dog", "is" ...)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.memo: dict[str, torch.Tensor] = {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        todo = list(dict.fromkeys(t for t in texts if t not in self.memo))
        for start in range(0, len(todo), 128):
            chunk = todo[start : start + 128]
            for t, v in zip(chunk, self.fn(chunk), strict=True):
                self.memo[t] = v
        return torch.stack([self.memo[t] for t in texts]) if texts else torch.empty(0)


class ClipTextSide:
    """CLIP's frozen text side: token embeddings for triplet words, text features for prompts and captions.

    Args:
        towers: a :class:`~lumir.models.clip.ClipTowers` (CLIP only; SigLIP has no separate word table here).
    """

    def __init__(self, towers: Any) -> None:
        self.towers = towers
        self.model = towers.model
        self.word_dim = int(self.model.config.text_config.hidden_size)
        self.text_dim = int(self.model.config.projection_dim)
        self.words = _StringCache(self._words)
        self.texts = _StringCache(self._texts)

    @torch.no_grad()
    def _words(self, strings: Sequence[str]) -> torch.Tensor:
        table = self.model.text_model.embeddings.token_embedding
        enc = self.towers.tokenizer(list(strings), add_special_tokens=False)["input_ids"]
        device = table.weight.device
        zero = torch.zeros(self.word_dim)
        out = [table(torch.tensor(ids, device=device)).mean(dim=0).float().cpu() if ids else zero for ids in enc]
        return torch.stack(out)

    def _texts(self, strings: Sequence[str]) -> torch.Tensor:
        return F.normalize(self.towers.encode_text(list(strings)).clone(), dim=-1)

    def caption_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """``z^txt``: normalised CLIP text features (the first stage's own text embedding)."""
        return self._texts(texts)


class MiniTextSide:
    """lumir-mini's frozen text side: MiniLM word embeddings and sentence embeddings for knowledge, lumir-mini's text
    head for ``z^txt``.

    Args:
        embedder: :class:`MiniTowers` (or a :class:`~lumir.embed.mini.MiniEmbedder`).
    """

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.st = embedder.text_model
        self.word_dim = int(self.st.model.config.hidden_size)
        self.text_dim = self.word_dim
        self.words = _StringCache(self._words)
        self.texts = _StringCache(self._texts)

    @torch.no_grad()
    def _words(self, strings: Sequence[str]) -> torch.Tensor:
        table = self.st.model.embeddings.word_embeddings
        enc = self.st.tokenizer([s.lower() for s in strings], add_special_tokens=False)["input_ids"]
        zero = torch.zeros(self.word_dim)
        out = [table(torch.tensor(ids, device=table.weight.device)).mean(dim=0).cpu() if ids else zero for ids in enc]
        return torch.stack(out).float()

    @torch.no_grad()
    def _texts(self, strings: Sequence[str]) -> torch.Tensor:
        return self.st.encode(list(strings)).float().cpu().clone()

    @torch.no_grad()
    def caption_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """``z^txt``: lumir-mini's own normalised text embedding (what the first stage indexes)."""
        from lumir.models.mini import text_tower_features

        feats = text_tower_features(self.st, list(texts)).clone().to(self.embedder.device)
        return F.normalize(self.embedder.heads.text_head(feats), dim=-1).float().cpu()


def encode_knowledge(
    side: ClipTextSide | MiniTextSide,
    records: Sequence[tuple[Sequence[Sequence[str]], Sequence[str]]],
    num_triplets: int,
) -> KnowledgeBatch:
    """Frozen-encoder inputs for each text's ``(triplets, states)`` (first ``num_triplets`` kept; a missing state is
    encoded as its triplet's words; a text without triplets keeps slot 0 on with zero inputs).

    Example:
        >>> class Side:
        ...     word_dim = text_dim = 2
        ...     words = texts = staticmethod(lambda xs: torch.ones(len(xs), 2))
        >>> kb = encode_knowledge(Side(), [([("dog", "runs", "park")], ["It runs."]), ([], [])], 2)
        >>> kb.words.shape, kb.mask.tolist()
        (torch.Size([2, 2, 3, 2]), [[True, False], [True, False]])
        >>> kb.words[1].abs().sum().item()
        0.0
    """
    n, k = len(records), num_triplets
    words = torch.zeros(n, k, 3, side.word_dim)
    states = torch.zeros(n, k, side.text_dim)
    handcrafted = torch.zeros(n, k, side.text_dim)
    mask = torch.zeros(n, k, dtype=torch.bool)
    word_jobs: list[tuple[tuple[int, int, int], str]] = []
    state_jobs: list[tuple[tuple[int, int], str]] = []
    hand_jobs: list[tuple[tuple[int, int], str]] = []
    for i, (triplets, descriptions) in enumerate(records):
        mask[i, 0] = True
        for j, t in enumerate(list(triplets)[:k]):
            trip = (str(t[0]), str(t[1]), str(t[2]))
            mask[i, j] = True
            word_jobs.extend(((i, j, e), trip[e]) for e in range(3))
            desc = descriptions[j] if j < len(descriptions) and descriptions[j] else " ".join(trip)
            state_jobs.append(((i, j), state_text(trip, desc)))
            hand_jobs.append(((i, j), handcrafted_text(trip)))
    if word_jobs:
        for (i, j, e), v in zip((w[0] for w in word_jobs), side.words([w[1] for w in word_jobs]), strict=True):
            words[i, j, e] = v
        for (i, j), v in zip((s[0] for s in state_jobs), side.texts([s[1] for s in state_jobs]), strict=True):
            states[i, j] = v
        for (i, j), v in zip((h[0] for h in hand_jobs), side.texts([h[1] for h in hand_jobs]), strict=True):
            handcrafted[i, j] = v
    return KnowledgeBatch(words, states, handcrafted, mask)
