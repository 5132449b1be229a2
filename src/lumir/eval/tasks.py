"""Retrieval tasks described as data, built through :data:`lumir.registry.TASKS`.

A task spec is a string (CLI-friendly) or a mapping (YAML-friendly):

=====================================  ==========================================================
``beir:PATH[:SPLIT]``                   a BEIR folder (e.g. SciFact), one task ``beir/<name>``
``scifact[:SPLIT]``                     ``beir:<data root>/beir-scifact``
``flickr8k[:PATH]``                     Flickr8k 1K test, text->image and image->text (5-caption protocol)
``flickr8k/t2i``, ``flickr8k/i2t``      one direction only
``flickr8k-union[/DIR][:SPLIT]``        photos + captions of a split in ONE pool, instructed queries, M.A.@1
``karpathy:JSON:IMAGE_ROOT``            ALBEF/BLIP Karpathy json, both directions (needs images)
``mbeir:ROOT[:TASK,TASK...]``           M-BEIR tasks from files (all found ones when none named)
``toy``                                 the coloured-shapes toy task from :mod:`lumir.testing.toy`
=====================================  ==========================================================

Mapping form: ``{"type": "beir", "path": "...", "split": "test"}``, ``{"type": "mbeir", "path": ROOT,
"tasks": ["mscoco_task0"], "pool": "local", "split": "test"}``, ``{"type": "flickr8k", "path": ..., "split": ...,
"direction": "t2i"}``, ``{"type": "flickr8k-union", "split": "test_1k", "instructions": true}``. Relative dataset
paths resolve against the data root: ``LUMIR_DATA`` or ``../shared/data``.
Every loaded task records the spec that rebuilds it (``task.spec()``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lumir.collections import RetrievalTask

__all__ = [
    "beir_tasks",
    "default_data_root",
    "flickr8k_tasks",
    "flickr8k_union_tasks",
    "karpathy_tasks",
    "load_tasks",
    "mbeir_tasks",
    "parse_task_spec",
]


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


# ---------------------------------------------------------------------------------------------- spec-string parsers
def parse_beir(rest: str) -> dict[str, Any]:
    """``PATH[:SPLIT]`` (SPLIT one of test, dev, train), or just ``SPLIT`` for ``scifact``."""
    if rest in ("test", "dev", "train"):
        return {"split": rest}
    path, _, split = rest.rpartition(":") if re.search(r":(test|dev|train)$", rest) else (rest, "", "")
    out: dict[str, Any] = {"split": split or "test"}
    if path:
        out["path"] = path
    return out


def parse_flickr8k(rest: str) -> dict[str, Any]:
    """``PATH`` of a Flickr8k folder (default ``flickr8k`` under the data root)."""
    return {"path": rest} if rest else {}


def parse_flickr8k_union(rest: str) -> dict[str, Any]:
    """``SPLIT`` (a name without ``/``, e.g. ``test_1k``) or ``PATH:SPLIT`` (or just a ``PATH`` with a ``/``).

    Example:
        >>> parse_flickr8k_union("test_1k"), parse_flickr8k_union("/d/f8k:train_4k")
        ({'split': 'test_1k'}, {'path': '/d/f8k', 'split': 'train_4k'})
    """
    if not rest:
        return {}
    path, colon, split = rest.rpartition(":")
    if colon and "/" not in split:
        return {"path": path, "split": split}
    return {"path": rest} if "/" in rest else {"split": rest}


def parse_karpathy(rest: str) -> dict[str, Any]:
    """``JSON:IMAGE_ROOT``."""
    json_path, _, image_root = rest.partition(":")
    return {"path": json_path, "image_root": image_root or None}


def parse_mbeir(rest: str) -> dict[str, Any]:
    """``ROOT[:TASK,TASK...]``."""
    root, _, names = rest.partition(":")
    return {"path": root, "tasks": [n for n in names.split(",") if n] or None}


def parse_directional(text: str) -> dict[str, Any] | None:
    """``flickr8k/t2i[:PATH]`` and ``karpathy/i2t:JSON:ROOT``: a task type with one direction."""
    head, _, rest = text.partition(":")
    kind, slash, direction = head.partition("/")
    parsers = {"flickr8k": parse_flickr8k, "karpathy": parse_karpathy, "flickr8k-union": parse_flickr8k_union}
    if not slash or kind.lower() not in parsers:
        return None
    options = parsers[kind.lower()](rest)
    return {"type": kind.lower(), **options, "direction": direction}


def parse_task_spec(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """Normalise a string or mapping task spec into a mapping with a ``type`` key.

    Example:
        >>> parse_task_spec("flickr8k/t2i")
        {'type': 'flickr8k', 'direction': 't2i'}
        >>> parse_task_spec("scifact")
        {'type': 'scifact', 'path': 'beir-scifact'}
    """
    from lumir.registry import TASKS

    return TASKS.normalize(spec)


# ---------------------------------------------------------------------------------------------- loaders
def _resolve(path: str | Path, data: str | Path | None) -> Path:
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    return default_data_root(data) / p


def _with_spec(tasks: Sequence[RetrievalTask], spec: Mapping[str, Any], **per_task: Any) -> list[RetrievalTask]:
    """The tasks, each recording the spec that rebuilds it (paired tasks: with its own direction)."""
    out = []
    for task in tasks:
        own = dict(spec)
        if "direction" in per_task:
            own["direction"] = task.name.rpartition("/")[2]
        out.append(dataclasses.replace(task, meta={**task.meta, "spec": own}))
    return out


def _direction(tasks: list[RetrievalTask], direction: str | None) -> list[RetrievalTask]:
    if direction is None:
        return tasks
    chosen = [t for t in tasks if t.name.endswith("/" + direction)]
    if not chosen:
        raise ValueError(f"no {direction!r} direction; available: {[t.name for t in tasks]}")
    return chosen


def beir_tasks(path: str | Path, split: str = "test", *, data: str | Path | None = None) -> list[RetrievalTask]:
    """One BEIR folder as a task ``beir/<name>``."""
    from lumir.data.beir import load_beir

    task = load_beir(_resolve(path, data), split=split)
    return _with_spec([task], {"type": "beir", "path": str(path), "split": split})


def flickr8k_tasks(
    path: str | Path = "flickr8k",
    split: str = "test_1k",
    direction: str | None = None,
    *,
    data: str | Path | None = None,
) -> list[RetrievalTask]:
    """``flickr8k/t2i`` and ``flickr8k/i2t`` of a split (or one ``direction``)."""
    from lumir.data.flickr8k import flickr8k_tasks as load

    tasks = _direction(load(_resolve(path, data), split=split), direction)
    return _with_spec(tasks, {"type": "flickr8k", "path": str(path), "split": split}, direction=True)


def flickr8k_union_tasks(
    path: str | Path = "flickr8k",
    split: str = "test_1k",
    direction: str | None = None,
    instructions: bool = True,
    *,
    data: str | Path | None = None,
) -> list[RetrievalTask]:
    """``flickr8k-union/t2i`` and ``flickr8k-union/i2t`` of a split (or one ``direction``): one pool of its
    photos and captions, instructed queries, each query's own item excluded
    (:func:`lumir.data.flickr8k.flickr8k_union_tasks`)."""
    from lumir.data.flickr8k import flickr8k_union_tasks as load

    tasks = _direction(load(_resolve(path, data), split=split, instructions=instructions), direction)
    spec = {"type": "flickr8k-union", "path": str(path), "split": split, "instructions": instructions}
    return _with_spec(tasks, spec, direction=True)


def karpathy_tasks(
    path: str | Path,
    image_root: str | Path | None = None,
    direction: str | None = None,
    *,
    data: str | Path | None = None,
) -> list[RetrievalTask]:
    """Karpathy-split image–text tasks (both directions, or one)."""
    from lumir.data.karpathy import karpathy_tasks as load

    if not image_root:
        raise ValueError("Karpathy retrieval tasks need the images: use karpathy:JSON:IMAGE_ROOT")
    tasks = _direction(load(_resolve(path, data), Path(image_root)), direction)
    spec = {"type": "karpathy", "path": str(path), "image_root": str(image_root)}
    return _with_spec(tasks, spec, direction=True)


def mbeir_tasks(
    path: str | Path,
    tasks: Sequence[str] | None = None,
    split: str = "test",
    pool: str = "local",
    *,
    data: str | Path | None = None,
) -> list[RetrievalTask]:
    """M-BEIR tasks (all found in ``split`` when ``tasks`` is None), with local or global pools."""
    from lumir.data.mbeir import list_mbeir_tasks, load_mbeir_pool, mbeir_pool_path, mbeir_task, parse_task_name

    root = _resolve(path, data)
    names = list(tasks or list_mbeir_tasks(root, split))
    shared = None  # the global pool (5.6M candidates in M-BEIR) is loaded once for all tasks
    if pool == "global":
        shared = load_mbeir_pool(mbeir_pool_path(root, "", split, "global"), root)
    loaded = [mbeir_task(root, *parse_task_name(n), split=split, pool=pool, corpus=shared) for n in names]  # type: ignore[arg-type]
    return [
        dataclasses.replace(
            t,
            meta={
                **t.meta,
                "spec": {"type": "mbeir", "path": str(path), "tasks": [t.name], "split": split, "pool": pool},
            },
        )
        for t in loaded
    ]


def load_tasks(spec: str | Mapping[str, Any], *, data: str | Path | None = None) -> list[RetrievalTask]:
    """Load the :class:`RetrievalTask` s a spec describes (see the module docstring).

    Example:
        >>> [t.name for t in load_tasks("toy")]
        ['toy/t2i']
        >>> load_tasks("toy")[0].spec()
        {'type': 'toy'}
    """
    import inspect

    from lumir.registry import TASKS

    options = TASKS.normalize(spec)
    if "data" in inspect.signature(TASKS.load(options["type"])).parameters:
        options["data"] = data
    tasks: list[RetrievalTask] = TASKS.build(options)
    return tasks
