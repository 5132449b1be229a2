"""Thin adapters over ``transformers`` models (no retrieval logic): local-only loading, pooling, towers.

Submodules are imported on use: :mod:`lumir.models.hub` (local resolution, device/dtype),
:mod:`lumir.models.pooling`, :mod:`lumir.models.text` (sentence-transformers folders) and
:mod:`lumir.models.clip` (CLIP/SigLIP towers).
"""

from __future__ import annotations

from lumir.models.hub import resolve_device, resolve_dtype, resolve_local_model

__all__ = ["resolve_device", "resolve_dtype", "resolve_local_model"]
