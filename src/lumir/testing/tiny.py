"""Tiny real ``transformers`` models built offline from configs with seeded random weights.

These are the tier-2 test models of the architecture doc (§4.2): real ``CLIPModel``/``SiglipModel`` code paths,
about 40k parameters, built in milliseconds with no download. The dual encoders' tokenizer is a ``tokenizers``
WordLevel model over a small vocabulary with a whitespace pre-tokenizer, wrapped in ``PreTrainedTokenizerFast``
with the special tokens the models pool on (CLIP pools at the first ``eos``; SigLIP at the last position of a
max-length pad).

Tiny chat models for the LLM stages: a Llama causal LM (:func:`build_tiny_lm`) and a LLaVA vision-language model
with a Qwen2 backbone (:func:`build_tiny_llava`), sharing a ChatML-templated WordLevel tokenizer
(:func:`tiny_chat_tokenizer`); and a Llama causal LM with a Llama-style SentencePiece tokenizer
(:func:`build_tiny_sp_lm`, :func:`tiny_sp_tokenizer`: ``▁`` word markers, Llama-2's ``[INST]`` template), where
``"True"`` is the token ``"▁True"`` and ``"YES"`` encodes as ``["▁", "YES"]``.

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
    from transformers import (
        CLIPModel,
        CLIPProcessor,
        LlamaForCausalLM,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
        SiglipModel,
        SiglipProcessor,
    )

__all__ = [
    "TINY_CHAT_TEMPLATE",
    "TINY_CHAT_VOCAB",
    "TINY_IMAGE_SIZE",
    "TINY_SP_CHAT_TEMPLATE",
    "TINY_SP_VOCAB",
    "TINY_VOCAB",
    "build_tiny_clip",
    "build_tiny_llava",
    "build_tiny_lm",
    "build_tiny_siglip",
    "build_tiny_sp_lm",
    "save_tiny_clip",
    "save_tiny_llava",
    "save_tiny_lm",
    "save_tiny_siglip",
    "save_tiny_sp_lm",
    "tiny_chat_tokenizer",
    "tiny_sp_tokenizer",
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


_CHAT_SPECIALS = ("<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<image>")
TINY_CHAT_VOCAB: tuple[str, ...] = (
    *_CHAT_SPECIALS,
    "system", "user", "assistant", "\n",
    "True", "False", "YES", "NO", "Yes", "No", "Ans", "(", ")", "[", "]", ":", "?", ".", ",", "-", ">",
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
    "a", "the", "is", "of", "and", "or", "this", "query", "image", "photo", "picture", "caption", "document",
    "candidate", "relevant", "answer", "rank", "red", "green", "blue", "yellow", "dog", "cat", "square", "circle",
)  # fmt: skip
"""The tiny chat tokenizer's vocabulary (case-sensitive; special tokens first; anything else maps to ``<unk>``)."""

TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- else -%}{{ '<image>' }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
"""ChatML-like jinja template: ``<|im_start|>role\\n…<|im_end|>\\n`` per message, image parts as ``<image>``."""

_CHAT_IDS = {w: i for i, w in enumerate(TINY_CHAT_VOCAB)}
_LM: dict[str, Any] = {
    "vocab_size": len(TINY_CHAT_VOCAB),
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "initializer_range": 0.5,  # peaked enough that greedy output varies
    "pad_token_id": _CHAT_IDS["<pad>"],
    "bos_token_id": _CHAT_IDS["<|im_start|>"],
    "eos_token_id": _CHAT_IDS["<|im_end|>"],
}
_LLAVA_IMAGE_SIZE, _LLAVA_PATCH = 28, 14


def tiny_chat_tokenizer() -> PreTrainedTokenizerFast:
    """A fast WordLevel tokenizer over :data:`TINY_CHAT_VOCAB` with the ChatML :data:`TINY_CHAT_TEMPLATE`.

    It splits words, single digits, single punctuation marks and newlines (``"(12)\\n"`` is ``( 1 2 ) \\n``),
    adds no special tokens of its own (the template does), pads on the left and ends turns with ``<|im_end|>``.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=dict(_CHAT_IDS), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\d|[^\W\d]+|[^\w\s]|\n"), behavior="removed", invert=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _CHAT_SPECIALS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        chat_template=TINY_CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=_LM["max_position_embeddings"],
    )


def build_tiny_lm(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A seeded random-weight ``LlamaForCausalLM`` (hidden 16, 2 layers, context 512) and its chat tokenizer.

    Llama rather than Qwen2: transformers 5's ``AutoTokenizer`` forces ``Qwen2Tokenizer`` (a BPE rebuilt from the
    vocabulary) on every ``qwen2`` folder, which would drop the WordLevel tokenizer on reload. The global torch
    RNG is left untouched.

    Example:
        >>> model, tokenizer = build_tiny_lm()
        >>> tokenizer.apply_chat_template([{"role": "user", "content": "Is this red?"}], tokenize=False,
        ...                               add_generation_prompt=True)
        '<|im_start|>user\\nIs this red?<|im_end|>\\n<|im_start|>assistant\\n'
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(**_LM, tie_word_embeddings=True)).eval()
    return model, tiny_chat_tokenizer()


def build_tiny_llava(seed: int = 0) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A seeded random-weight ``LlavaForConditionalGeneration`` (CLIP vision tower, Qwen2 text) and its processor.

    Images are resized and cropped to 28 pixels, i.e. 2x2 patches of 14: each ``<image>`` expands to 4 image
    tokens. The processor's image processor is the PIL backend (no torchvision). The global RNG is left untouched.
    """
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, Qwen2Config
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    vision = CLIPVisionConfig(
        image_size=_LLAVA_IMAGE_SIZE,
        patch_size=_LLAVA_PATCH,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    config = LlavaConfig(vision_config=vision, text_config=Qwen2Config(**_LM), image_token_index=_CHAT_IDS["<image>"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": _LLAVA_IMAGE_SIZE}, crop_size={"height": _LLAVA_IMAGE_SIZE, "width": _LLAVA_IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tiny_chat_tokenizer(),
        chat_template=TINY_CHAT_TEMPLATE,
        patch_size=_LLAVA_PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    )
    return model, processor


def save_tiny_lm(path: str | Path, seed: int = 0) -> Path:
    """Write :func:`build_tiny_lm` to a local folder loadable by ``load_chat_model("hf:" + path)``."""
    path = Path(path)
    model, tokenizer = build_tiny_lm(seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_llava(path: str | Path, seed: int = 0) -> Path:
    """Write :func:`build_tiny_llava` to a local folder loadable by ``load_chat_model("hf:" + path)``."""
    path = Path(path)
    model, processor = build_tiny_llava(seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


_SP_SPECIALS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")
_SP_WORDS = (
    "True", "False", "Yes", "is", "this", "the", "a", "an", "of", "on", "in", "and", "with", "red", "green", "blue",
    "dog", "cat", "photo", "image", "caption", "query", "candidate", "document", "relevant", "match", "Does",
    "Answer", "Query", "Candidate", "Is",
)  # fmt: skip
TINY_SP_VOCAB: tuple[str, ...] = (
    *_SP_SPECIALS,
    *(f"\u2581{w}" for w in _SP_WORDS),  # "▁True": the word after a space or at the start of a text
    *_SP_WORDS,  # "True": the word glued to what precedes it
    "YES", "NO", "No",  # bare only: "YES" encodes as ["▁", "YES"], "No" as ["▁", "No"] (but "Yes" as ["▁Yes"])
    *"bcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;?!()[]-'\"",  # "a" is a word above
    "\u2581", "\n",
)  # fmt: skip
"""The tiny SentencePiece vocabulary: specials (ids 0-6), ``▁``-marked and bare words, the bare-only ``YES``, ``NO``
and ``No``, then single characters (unknown words are spelled out; anything else is ``<unk>``)."""

TINY_SP_CHAT_TEMPLATE = (
    "{{ bos_token }}{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ '<<SYS>>' + message['content'] + '<</SYS>>' }}"
    "{%- elif message['role'] == 'user' -%}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{%- else -%}{{ ' ' + message['content'] + eos_token }}{%- endif -%}"
    "{%- endfor -%}"
)
"""Llama-2-like template: ``<s>[INST] user [/INST]``; the answer follows after a space (so as ``"▁True"``)."""


def tiny_sp_tokenizer() -> PreTrainedTokenizerFast:
    """A Llama-style SentencePiece tokenizer over :data:`TINY_SP_VOCAB`, built offline.

    A ``tokenizers`` Unigram model (specials score 0, words -1, characters -2, so whole words win) behind a
    ``Metaspace("▁", prepend_scheme="first")`` pre-tokenizer and decoder — SentencePiece's dummy prefix: a text's
    first word and every word after a space carry ``▁``. Wrapped in ``PreTrainedTokenizerFast`` with ``<s>``/``</s>``
    and :data:`TINY_SP_CHAT_TEMPLATE`; pads on the left with ``<unk>`` (Llama has no pad token).

    Example:
        >>> tok = tiny_sp_tokenizer()
        >>> [tok.convert_ids_to_tokens(tok.encode(w, add_special_tokens=False)) for w in ("True", "YES", "No")]
        [['▁True'], ['▁', 'YES'], ['▁', 'No']]
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    scores = [0.0 if t in _SP_SPECIALS else -2.0 if len(t) == 1 else -1.0 for t in TINY_SP_VOCAB]
    tok = Tokenizer(models.Unigram(list(zip(TINY_SP_VOCAB, scores, strict=True)), unk_id=0, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _SP_SPECIALS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        chat_template=TINY_SP_CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=_LM["max_position_embeddings"],
    )


def build_tiny_sp_lm(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A seeded random-weight ``LlamaForCausalLM`` (as :func:`build_tiny_lm`) over :func:`tiny_sp_tokenizer`.

    Example:
        >>> from lumir.models.chat.hf import TransformersChatModel
        >>> chat = TransformersChatModel(*build_tiny_sp_lm(), name="tiny-sp")
        >>> chat.render([{"role": "user", "content": "Is this red?"}])
        '<s>[INST] Is this red? [/INST]'
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    ids = {t: i for i, t in enumerate(TINY_SP_VOCAB)}
    config = {
        **_LM,
        "vocab_size": len(TINY_SP_VOCAB),
        "pad_token_id": ids["<unk>"],
        "bos_token_id": ids["<s>"],
        "eos_token_id": ids["</s>"],
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(**config, tie_word_embeddings=True)).eval()
    return model, tiny_sp_tokenizer()


def save_tiny_sp_lm(path: str | Path, seed: int = 0) -> Path:
    """Write :func:`build_tiny_sp_lm` to a local folder loadable by ``load_chat_model("hf:" + path)``."""
    path = Path(path)
    model, tokenizer = build_tiny_sp_lm(seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
