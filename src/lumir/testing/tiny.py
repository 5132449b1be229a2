"""Tiny real ``transformers`` dual encoders built offline from configs with seeded random weights.

These are the tier-2 test models of the architecture doc (§4.2): real ``CLIPModel``/``SiglipModel`` code paths,
about 40k parameters, built in milliseconds with no download. The tokenizer is a ``tokenizers`` WordLevel model
over a small vocabulary with a whitespace pre-tokenizer, wrapped in ``PreTrainedTokenizerFast`` with the special
tokens the models pool on (CLIP pools at the first ``eos``; SigLIP at the last position of a max-length pad).

Recipe: hidden 32, 2 layers, 4 heads, image 30, patch 6; CLIP projects to 16, SigLIP's embedding is its hidden
size (32). Image processors are the PIL backends, so no torchvision is needed.

Example:
    >>> model, processor = build_tiny_clip(seed=0)
    >>> model.config.projection_dim
    16
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor, PreTrainedTokenizerFast, SiglipModel, SiglipProcessor

__all__ = [
    "TINY_IMAGE_SIZE",
    "TINY_VOCAB",
    "build_tiny_clip",
    "build_tiny_siglip",
    "save_tiny_clip",
    "save_tiny_siglip",
    "tiny_tokenizer",
]

TINY_VOCAB: tuple[str, ...] = (
    "<pad>", "<unk>", "<bos>", "<eos>",
    "a", "an", "the", "of", "on", "in", "and", "with", "is",
    "photo", "picture", "image", "caption", "find", "square", "circle", "dog", "cat",
    "red", "green", "blue", "yellow", "purple", "orange", "white", "black", ".",
)  # fmt: skip
"""The tiny tokenizer's vocabulary (special tokens first; everything else maps to ``<unk>``)."""

TINY_IMAGE_SIZE = 30
_MAX_TOKENS = 16
_PAD, _UNK, _BOS, _EOS = 0, 1, 2, 3
_TOWER: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}


def tiny_tokenizer(*, bos: bool = True) -> PreTrainedTokenizerFast:
    """A fast WordLevel tokenizer over :data:`TINY_VOCAB` (lower-casing, whitespace split, ``<bos> … <eos>``).

    Args:
        bos: prepend ``<bos>`` (CLIP style); SigLIP style appends only ``<eos>``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(TINY_VOCAB)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    single = "<bos> $A <eos>" if bos else "$A <eos>"
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[("<bos>", _BOS), ("<eos>", _EOS)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=_MAX_TOKENS,
    )


def build_tiny_clip(seed: int = 0) -> tuple[CLIPModel, CLIPProcessor]:
    """A seeded random-weight ``CLIPModel`` (projection 16) and its ``CLIPProcessor``, built offline.

    The global torch RNG is left untouched.
    """
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTextConfig, CLIPVisionConfig
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    text = CLIPTextConfig(
        vocab_size=len(TINY_VOCAB),
        max_position_embeddings=_MAX_TOKENS,
        pad_token_id=_PAD,
        bos_token_id=_BOS,
        eos_token_id=_EOS,
        projection_dim=16,
        **_TOWER,
    )
    vision = CLIPVisionConfig(image_size=TINY_IMAGE_SIZE, patch_size=6, projection_dim=16, **_TOWER)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer(bos=True))


def build_tiny_siglip(seed: int = 0) -> tuple[SiglipModel, SiglipProcessor]:
    """A seeded random-weight ``SiglipModel`` (embedding 32) and its ``SiglipProcessor``, built offline.

    The global torch RNG is left untouched.
    """
    from transformers import SiglipConfig, SiglipModel, SiglipProcessor, SiglipTextConfig, SiglipVisionConfig
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    text = SiglipTextConfig(
        vocab_size=len(TINY_VOCAB),
        max_position_embeddings=_MAX_TOKENS,
        pad_token_id=_PAD,
        bos_token_id=_BOS,
        eos_token_id=_EOS,
        projection_size=_TOWER["hidden_size"],
        **_TOWER,
    )
    vision = SiglipVisionConfig(image_size=TINY_IMAGE_SIZE, patch_size=6, **_TOWER)
    config = SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipModel(config).eval()
    image_processor = SiglipImageProcessorPil(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    return model, SiglipProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer(bos=False))


def save_tiny_clip(path: str | Path, seed: int = 0) -> Path:
    """Write :func:`build_tiny_clip` to a local folder loadable by ``load_embedder("clip:" + path)``."""
    path = Path(path)
    model, processor = build_tiny_clip(seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def save_tiny_siglip(path: str | Path, seed: int = 0) -> Path:
    """Write :func:`build_tiny_siglip` to a local folder loadable by ``load_embedder("clip:" + path)``."""
    path = Path(path)
    model, processor = build_tiny_siglip(seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
