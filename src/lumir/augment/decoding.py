"""Decoding settings of the MLLM-augmented captions paper, as named presets for the captioners.

MLLM-augmented captions (Liu et al.) generate captions with four MLLMs and print each one's decoding settings in
Table 10 (§7.1, "Hyperparameter configuration of MLLMs"); §4.1 adds that "during caption generation, we impose a
maximum token limit of 30" with "beam search with the number of beams equal to 1". Here:

- :data:`PAPER_MAX_NEW_TOKENS` — the fixed cap of 30 new tokens (§4.1, Table 10), an alternative to the per-model
  budget T of §3.4 (the mean raw-caption length in each model's own tokens);
- :data:`TABLE10_DECODING` — Table 10 verbatim per model (:attr:`DecodingPreset.paper`), plus what lumir's
  :class:`~lumir.models.chat.base.GenerationConfig` can carry of it (:attr:`DecodingPreset.generation`);
- :func:`resolve_decoding` — a preset name or explicit ``generate`` keywords -> the keywords to pass.

Deviations (documented, per preset): lumir's ChatModels take ``temperature`` (0 = greedy, > 0 = sampling),
``top_p``, ``seed`` and ``stop`` only, and never beam-search. Settings that change nothing under these backends are
listed in :attr:`DecodingPreset.no_ops` (``num_beams=1``, ``num_return_sequences=1``, ``min_length=1``,
``repetition_penalty=1.0``, and ``length_penalty``, which only acts on beam search). Two settings have no lumir
option and are dropped (:attr:`DecodingPreset.dropped`): Otter's ``no_repeat_ngram_size=3`` and Qwen-VL's
``min_new_tokens=8``. LLaVA's ``top_p=None`` means no nucleus cut (``top_p=1.0``). ``max_new_tokens`` is not part of
a preset's generation keywords: the captioner's cap (T, or :data:`PAPER_MAX_NEW_TOKENS`) sets it. The presets follow
the table, not the released scripts, where they differ (e.g. the MiniGPT-4 script leaves ``Chat.batch_answer`` at its
default ``top_p=0.9``, the table says 0.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "GREEDY",
    "PAPER_MAX_NEW_TOKENS",
    "TABLE10_DECODING",
    "DecodingPreset",
    "resolve_decoding",
]

PAPER_MAX_NEW_TOKENS = 30
"""MLLM-augmented captions §4.1 ("we impose a maximum token limit of 30") and Table 10 (``max_new_tokens`` 30 for
every model)."""

GREEDY = "greedy"
"""The default decoding: greedy (``temperature=0``), reproducible and cacheable."""


@dataclass(frozen=True)
class DecodingPreset:
    """One row group of Table 10: a model's decoding settings, and how lumir runs them.

    Attributes:
        name: the preset's name in :data:`TABLE10_DECODING`.
        model: the model as the paper names it.
        paper: Table 10's settings, verbatim (``None`` where the table prints None).
        generation: the :class:`~lumir.models.chat.base.GenerationConfig` keywords that carry them.
        no_ops: Table 10 settings that lumir's backends already behave as (no keyword needed).
        dropped: Table 10 settings no lumir option carries (a deviation).
    """

    name: str
    model: str
    paper: Mapping[str, Any]
    generation: Mapping[str, Any]
    no_ops: tuple[str, ...] = ()
    dropped: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """What a caption record keeps: the preset name, the keywords used and the dropped settings."""
        out: dict[str, Any] = {"preset": self.name, **self.generation}
        if self.dropped:
            out["dropped"] = dict(self.dropped)
        return out


TABLE10_DECODING: dict[str, DecodingPreset] = {
    "minigpt4": DecodingPreset(
        name="minigpt4",
        model="Mini-GPT4-Vicuna13B",
        paper={
            "max_new_tokens": 30,
            "num_beams": 1,
            "do_sample": True,
            "min_length": 1,
            "top_p": 0.3,
            "repetition_penalty": 1.0,
            "length_penalty": 1,
            "temperature": 1.0,
        },
        generation={"temperature": 1.0, "top_p": 0.3},
        no_ops=("num_beams", "min_length", "repetition_penalty", "length_penalty"),
    ),
    "otter": DecodingPreset(
        name="otter",
        model="Otter-Image-MPT7B",
        paper={"max_new_tokens": 30, "num_beams": 1, "no_repeat_ngram_size": 3},
        generation={"temperature": 0.0},  # transformers' default do_sample=False: greedy
        no_ops=("num_beams",),
        dropped={"no_repeat_ngram_size": 3},
    ),
    "qwen-vl": DecodingPreset(
        name="qwen-vl",
        model="Qwen-VL-Chat",
        paper={"max_new_tokens": 30, "num_beams": 1, "do_sample": False, "min_new_tokens": 8, "length_penalty": 0},
        generation={"temperature": 0.0},
        no_ops=("num_beams", "length_penalty"),
        dropped={"min_new_tokens": 8},
    ),
    "llava-1.5": DecodingPreset(
        name="llava-1.5",
        model="LLaVA-v1.5-13B",
        paper={
            "num_return_sequences": 1,
            "max_new_tokens": 30,
            "num_beams": 1,
            "do_sample": True,
            "top_p": None,
            "temperature": 0.2,
        },
        generation={"temperature": 0.2, "top_p": 1.0},
        no_ops=("num_return_sequences", "num_beams"),
    ),
}
"""MLLM-augmented captions Table 10 (§7.1), one preset per captioning MLLM of the paper."""


def resolve_decoding(value: str | Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``generate`` keywords for one model, and the description a caption record keeps.

    Args:
        value: None or ``"greedy"`` (greedy decoding), a :data:`TABLE10_DECODING` name, or explicit
            :class:`~lumir.models.chat.base.GenerationConfig` keywords (without ``max_new_tokens``).

    Example:
        >>> resolve_decoding("llava-1.5")
        ({'temperature': 0.2, 'top_p': 1.0}, {'preset': 'llava-1.5', 'temperature': 0.2, 'top_p': 1.0})
        >>> resolve_decoding(None)
        ({}, {'preset': 'greedy'})

    Raises:
        KeyError: an unknown preset name.
        ValueError: explicit keywords set ``max_new_tokens`` (the captioner's cap does).
    """
    if value is None or value == GREEDY:
        return {}, {"preset": GREEDY}
    if isinstance(value, str):
        try:
            preset = TABLE10_DECODING[value]
        except KeyError:
            raise KeyError(f"unknown decoding preset {value!r}; known: {[GREEDY, *TABLE10_DECODING]}") from None
        return dict(preset.generation), preset.to_dict()
    if "max_new_tokens" in value:
        raise ValueError("decoding keywords must not set max_new_tokens; the captioner's cap (T) sets it")
    return dict(value), {"preset": "custom", **value}
