"""File formats: lumir jsonl items/queries, TREC runs and qrels, images.

The formats are documented in ``docs/formats.md``.
"""

from __future__ import annotations

from lumir.io.images import IMAGE_EXTENSIONS, find_bad_images, load_image, thumbnail_data_uri
from lumir.io.jsonl import atomic_writer, iter_jsonl, read_items, read_queries, write_items
from lumir.io.trec import check_qrels, read_qrels, read_run, write_qrels, write_run

__all__ = [
    "IMAGE_EXTENSIONS",
    "atomic_writer",
    "check_qrels",
    "find_bad_images",
    "iter_jsonl",
    "load_image",
    "read_items",
    "read_qrels",
    "read_queries",
    "read_run",
    "thumbnail_data_uri",
    "write_items",
    "write_qrels",
    "write_run",
]
