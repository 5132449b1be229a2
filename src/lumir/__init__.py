"""lumir: LLM-enhanced Universal Multimodal Information Retrieval.

The public API is imported lazily so ``import lumir`` stays fast and heavy backends load only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Modality": "lumir.types",
    "Role": "lumir.types",
    "ImageRef": "lumir.types",
    "Item": "lumir.types",
    "Query": "lumir.types",
    "Hit": "lumir.types",
    "Qrels": "lumir.types",
    "Corpus": "lumir.collections",
    "Rankings": "lumir.collections",
    "RetrievalTask": "lumir.collections",
    "load_embedder": "lumir.embed",
    "FlatIndex": "lumir.index",
    "FaissIndex": "lumir.index",
    "VectorStore": "lumir.index",
    "build_index": "lumir.index",
    "open_index": "lumir.index",
    "DenseRetriever": "lumir.retrieve",
    "Pipeline": "lumir.pipeline",
    "PipelineSpec": "lumir.pipeline",
    "build_pipeline": "lumir.pipeline",
    "build": "lumir.registry",
    "evaluate": "lumir.eval",
    "EvalResult": "lumir.eval",
    "load_tasks": "lumir.eval",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lumir' has no attribute {name!r}")
