"""Embedders: items to L2-normalised vectors, for queries (with task instructions) and candidates.

- :class:`TextEmbedder`: sentence-transformers folders (e.g. all-MiniLM-L6-v2) through ``transformers``.
- :class:`ClipEmbedder`: CLIP/SigLIP text, image and image+text items (UniIR CLIP_SF score fusion).
- :func:`load_embedder` / :func:`register_embedder`: build any embedder from a spec dict or string through
  :data:`lumir.registry.EMBEDDERS`.
"""

from __future__ import annotations

from lumir.embed.base import BaseEmbedder, EmbedInput
from lumir.embed.clip import ClipEmbedder
from lumir.embed.factories import embedder_types, load_embedder, register_embedder
from lumir.embed.instructions import InstructionSet, apply_instruction, format_string, mbeir_task_name
from lumir.embed.text import TextEmbedder
from lumir.models.text import minilm_path

__all__ = [
    "BaseEmbedder",
    "ClipEmbedder",
    "EmbedInput",
    "InstructionSet",
    "TextEmbedder",
    "apply_instruction",
    "embedder_types",
    "format_string",
    "load_embedder",
    "mbeir_task_name",
    "minilm_path",
    "register_embedder",
]
