"""Retrieval tasks described as data: a small spec language over the dataset loaders.

A task spec is a string (CLI-friendly) or a mapping (YAML-friendly):

=====================================  ==========================================================
``beir:PATH[:SPLIT]``                   a BEIR folder (e.g. SciFact), one task ``beir/<name>``
``scifact``                             ``beir:<data root>/beir-scifact``
``flickr8k[:PATH]``                     Flickr8k 1K test, text->image and image->text (5-caption protocol)
``flickr8k/t2i``, ``flickr8k/i2t``      one direction only
``karpathy:JSON[:IMAGE_ROOT]``          ALBEF/BLIP Karpathy json, both directions (needs images)
``mbeir:ROOT[:TASK,TASK...]``           M-BEIR tasks from files (all found ones when none named)
``toy``                                 the coloured-shapes toy task from :mod:`lumir.testing.toy`
=====================================  ==========================================================

Mapping form: ``{"type": "beir", "path": "...", "split": "test"}``, ``{"type": "mbeir", "path": ROOT,
"tasks": ["mscoco_task0"], "pool": "local", "split": "test"}``, ``{"type": "flickr8k", "path": ..., "split": ...}``.
Relative dataset names resolve against the data root: ``LUMIR_DATA`` or ``../shared/data``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lumir.collections import RetrievalTask

__all__ = ["default_data_root", "load_tasks", "parse_task_spec"]


def default_data_root(data: str | Path | None = None) -> Path:
    """Where shared datasets live: ``data`` if given, else ``$LUMIR_DATA``, else ``../shared/data``.

    Raises:
        FileNotFoundError: naming the places tried and what to pass.
    """
    tried = []
    for cand in (data, os.environ.get("LUMIR_DATA"), Path.cwd().parent / "shared" / "data"):
        if cand is None or cand == "":
            continue
        p = Path(cand).expanduser()
        tried.append(str(p))
        if p.is_dir():
            return p
    raise FileNotFoundError(
        f"data folder not found (tried: {', '.join(tried) or 'nothing'}); "
        "pass --data PATH or set LUMIR_DATA to the folder holding flickr8k/ and beir-scifact/"
    )


def parse_task_spec(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """Normalise a string or mapping task spec into a mapping with a ``type`` key."""
    if isinstance(spec, Mapping):
        if "type" not in spec:
            raise ValueError(f"task spec {dict(spec)!r} needs a 'type' (beir, flickr8k, karpathy, mbeir, toy)")
        return dict(spec)
    head, _, rest = spec.partition(":")
    # Windows drive letters are not a concern here; paths may contain ':' only after the first field.
    kind, _, direction = head.partition("/")
    kind = kind.lower()
    if kind == "scifact":
        return {"type": "beir", "path": "beir-scifact", "split": rest or "test"}
    if kind == "beir":
        path, _, split = rest.rpartition(":") if re.search(r":(test|dev|train)$", rest) else (rest, "", "")
        return {"type": "beir", "path": path, "split": split or "test"}
    if kind == "flickr8k":
        return {"type": "flickr8k", "path": rest or "flickr8k", "direction": direction or None}
    if kind == "karpathy":
        json_path, _, image_root = rest.partition(":")
        return {
            "type": "karpathy",
            "path": json_path,
            "image_root": image_root or None,
            "direction": direction or None,
        }
    if kind == "mbeir":
        root, _, names = rest.partition(":")
        return {"type": "mbeir", "path": root, "tasks": [n for n in names.split(",") if n] or None}
    if kind == "toy":
        return {"type": "toy"}
    raise ValueError(f"unknown task spec {spec!r}; expected one of beir:, scifact, flickr8k, karpathy:, mbeir:, toy")


def _resolve(path: str, data: str | Path | None) -> Path:
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    return default_data_root(data) / p


def _direction(tasks: list[RetrievalTask], direction: str | None) -> list[RetrievalTask]:
    if direction is None:
        return tasks
    chosen = [t for t in tasks if t.name.endswith("/" + direction)]
    if not chosen:
        raise ValueError(f"no {direction!r} direction; available: {[t.name for t in tasks]}")
    return chosen


def load_tasks(spec: str | Mapping[str, Any], *, data: str | Path | None = None) -> list[RetrievalTask]:
    """Load the :class:`RetrievalTask` s a spec describes (see the module docstring).

    Example:
        >>> [t.name for t in load_tasks("toy")]
        ['toy/t2i']
    """
    s = parse_task_spec(spec)
    kind = s["type"]
    if kind == "toy":
        from lumir.testing.toy import toy_t2i_task

        return [toy_t2i_task()]
    if kind == "beir":
        from lumir.data.beir import load_beir

        return [load_beir(_resolve(s["path"], data), split=s.get("split", "test"))]
    if kind == "flickr8k":
        from lumir.data.flickr8k import flickr8k_tasks

        tasks = flickr8k_tasks(_resolve(s.get("path", "flickr8k"), data), split=s.get("split", "test_1k"))
        return _direction(tasks, s.get("direction"))
    if kind == "karpathy":
        from lumir.data.karpathy import karpathy_tasks

        if not s.get("image_root"):
            raise ValueError("Karpathy retrieval tasks need the images: use karpathy:JSON:IMAGE_ROOT")
        tasks = karpathy_tasks(_resolve(s["path"], data), Path(s["image_root"]))
        return _direction(tasks, s.get("direction"))
    if kind == "mbeir":
        from lumir.data.mbeir import list_mbeir_tasks, load_mbeir_pool, mbeir_pool_path, mbeir_task, parse_task_name

        root = _resolve(s["path"], data)
        split = s.get("split", "test")
        names = s.get("tasks") or list_mbeir_tasks(root, split)
        pool = s.get("pool", "local")
        shared = None  # the global pool (5.6M candidates in M-BEIR) is loaded once for all tasks
        if pool == "global":
            shared = load_mbeir_pool(mbeir_pool_path(root, "", split, "global"), root)
        return [mbeir_task(root, *parse_task_name(n), split=split, pool=pool, corpus=shared) for n in names]
    raise ValueError(f"unknown task type {kind!r}")
