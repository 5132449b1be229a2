"""Dataset loaders: each turns a dataset as distributed into lumir core types (Items, Queries, RetrievalTasks).

- :mod:`lumir.data.beir`: BEIR text-retrieval folders.
- :mod:`lumir.data.flickr8k`: Flickr8k images and captions, t2i / i2t tasks.
- :mod:`lumir.data.karpathy`: Karpathy-split caption files in the ALBEF/BLIP format (COCO, Flickr30K).
- :mod:`lumir.data.folder`: a folder of images with optional caption sidecars.
- :mod:`lumir.data.mbeir`: M-BEIR queries, pools, qrels and instructions, read as UniIR reads them.
- :mod:`lumir.data.sources`: ``load_corpus(path, fmt="auto")`` picks the right loader from a path's layout.

The formats are documented in ``docs/formats.md``.
"""

from __future__ import annotations

from lumir.data.beir import load_beir
from lumir.data.flickr8k import flickr8k_tasks, load_flickr8k
from lumir.data.folder import load_image_folder
from lumir.data.karpathy import karpathy_tasks, load_karpathy
from lumir.data.mbeir import (
    list_mbeir_tasks,
    load_mbeir_instructions,
    load_mbeir_pool,
    load_mbeir_qrels,
    load_mbeir_queries,
    mbeir_task,
    parse_task_name,
)
from lumir.data.sources import SOURCE_FORMATS, detect_format, load_corpus

__all__ = [
    "SOURCE_FORMATS",
    "detect_format",
    "flickr8k_tasks",
    "karpathy_tasks",
    "list_mbeir_tasks",
    "load_beir",
    "load_corpus",
    "load_flickr8k",
    "load_image_folder",
    "load_karpathy",
    "load_mbeir_instructions",
    "load_mbeir_pool",
    "load_mbeir_qrels",
    "load_mbeir_queries",
    "mbeir_task",
    "parse_task_name",
]
