"""Frozen-tower feature caches: compute lumir-mini's tower outputs once, train heads on them for many epochs.

A cache is a folder:

- ``manifest.json``: format, tower, item ids, views (e.g. ``["original", "mirror"]``), feature width,
  extraction throughput, lumir/torch versions;
- ``features.npy``: float32 ``(n_items, n_views, dim)``.

Extraction is resumable: finished shards go to ``<folder>.partial/`` and a rerun skips them; the folder appears
atomically once complete. An existing cache is reused only when its ids, tower and views match the request; anything
else is an error rather than a silent recompute over someone's data.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lumir.config import atomic_path, atomic_write_text, versions
from lumir.errors import DataFormatError, ImageLoadError
from lumir.models.mini import (
    IMAGE_FEATURE_DIM,
    IMAGE_VIEWS,
    TEXT_FEATURE_DIM,
    ImageFeatureExtractor,
    text_tower_features,
)
from lumir.models.text import SentenceTransformerModel
from lumir.progress import progress
from lumir.types import Item

__all__ = [
    "FEATURE_CACHE_FORMAT",
    "FeatureCache",
    "cache_image_features",
    "cache_text_features",
    "text_features",
]

FEATURE_CACHE_FORMAT = "lumir-features/1"


@dataclass(frozen=True)
class FeatureCache:
    """A loaded feature cache: ``features[i, v]`` is item ``ids[i]`` under view ``views[v]``."""

    ids: list[str]
    views: list[str]
    features: np.ndarray
    manifest: dict[str, Any]

    @property
    def dim(self) -> int:
        """Feature width."""
        return int(self.features.shape[-1])

    @classmethod
    def load(cls, folder: str | Path) -> FeatureCache:
        """Open a cache folder (features memory-mapped read-only).

        Raises:
            FileNotFoundError: no such cache.
            DataFormatError: the manifest and the array disagree.
        """
        folder = Path(folder)
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"feature cache not found: {manifest_path}")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != FEATURE_CACHE_FORMAT:
            raise DataFormatError(f"not a lumir feature cache (format {manifest.get('format')!r})", path=manifest_path)
        features = np.load(folder / "features.npy", mmap_mode="r")
        ids, views = list(manifest["ids"]), list(manifest["views"])
        if features.shape[:2] != (len(ids), len(views)):
            raise DataFormatError(
                f"features.npy has shape {features.shape}, manifest lists {len(ids)} ids x {len(views)} views",
                path=folder / "features.npy",
            )
        return cls(ids, views, features, manifest)


def _ids_digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _check_reuse(
    folder: Path, ids: Sequence[str], tower: str, views: Sequence[str], dim: int | None = None
) -> FeatureCache | None:
    if not (folder / "manifest.json").is_file():
        return None
    cache = FeatureCache.load(folder)
    m = cache.manifest
    if (
        m.get("tower") != tower
        or cache.views != list(views)
        or m.get("ids_sha256") != _ids_digest(ids)
        or (dim is not None and cache.dim != dim)
    ):
        raise DataFormatError(
            f"existing cache was made for tower {m.get('tower')!r}, views {cache.views}, {len(cache.ids)} items, "
            f"width {cache.dim}; requested {tower!r}, views {list(views)}, {len(ids)} items, width {dim}. "
            "Use another folder or delete this one.",
            path=folder / "manifest.json",
        )
    return cache


def _build(
    folder: Path,
    ids: Sequence[str],
    *,
    tower: str,
    views: Sequence[str],
    dim: int,
    encode: Callable[[int, int], np.ndarray],
    shard_size: int,
    unit: str,
    source: dict[str, Any],
) -> FeatureCache:
    """Encode ``[start, stop)`` ranges shard by shard into ``<folder>.partial``, then publish the folder."""
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    key = {"tower": tower, "views": list(views), "ids_sha256": _ids_digest(ids), "shard_size": shard_size}
    key_path = partial / "key.json"
    if key_path.is_file() and json.loads(key_path.read_text(encoding="utf-8")) != key:
        shutil.rmtree(partial)  # shards of a different request: start over
        partial.mkdir(parents=True)
    atomic_write_text(key_path, json.dumps(key))
    n = len(ids)
    starts = list(range(0, n, shard_size))
    seconds, done_now = 0.0, 0
    with progress(total=n, desc=f"features {tower}", unit=unit, enabled=n >= 200) as bar:
        for start in starts:
            shard = partial / f"shard-{start:09d}.npy"
            stop = min(start + shard_size, n)
            if not shard.is_file():
                t0 = time.perf_counter()
                block = encode(start, stop)
                seconds += time.perf_counter() - t0
                done_now += stop - start
                with atomic_path(shard) as tmp, tmp.open("wb") as fh:
                    np.save(fh, block.astype(np.float32))
            bar.update(stop - start)
    features = (
        np.concatenate([np.load(partial / f"shard-{s:09d}.npy") for s in starts])
        if starts
        else (np.zeros((0, len(views), dim), np.float32))
    )
    manifest = {
        "format": FEATURE_CACHE_FORMAT,
        **key,
        "ids": list(ids),
        "dim": dim,
        "source": source,
        "throughput": {f"{unit}s_per_second": round(done_now / seconds, 1) if seconds else None, "items": done_now},
        "versions": versions(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "features.npy") as tmp, tmp.open("wb") as fh:
        np.save(fh, features)
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(partial, ignore_errors=True)
    return FeatureCache.load(folder)


def cache_image_features(
    items: Sequence[Item],
    folder: str | Path,
    *,
    extractor: ImageFeatureExtractor | None = None,
    mirror: bool = True,
    views: Sequence[str] | None = None,
    batch_size: int = ImageFeatureExtractor.batch_size,
    shard_size: int = 512,
) -> FeatureCache:
    """EfficientNet-Lite0 features of image items for several views of each photo.

    ``views`` names :data:`lumir.models.mini.IMAGE_VIEWS` (default: the original, plus the mirror image when
    ``mirror``).

    Raises:
        ImageLoadError: an image cannot be read; the message names the item.
        DataFormatError: ``folder`` holds a cache for other items, views or tower.
    """
    folder = Path(folder)
    ids = [it.id for it in items]
    views = list(views) if views is not None else (["original", "mirror"] if mirror else ["original"])
    unknown = [v for v in views if v not in IMAGE_VIEWS]
    if unknown or not views or views[0] != "original":
        raise ValueError(f"views must start with 'original' and come from {list(IMAGE_VIEWS)}, got {views}")
    if (cache := _check_reuse(folder, ids, "efficientnet-lite0", views, IMAGE_FEATURE_DIM)) is not None:
        return cache
    missing = [it.id for it in items if it.image is None]
    if missing:
        raise ValueError(f"{len(missing)} items have no image (first: {missing[:5]})")
    net = extractor or ImageFeatureExtractor()

    def encode(start: int, stop: int) -> np.ndarray:
        out = np.zeros((stop - start, len(views), net.dim), np.float32)
        for b in range(start, stop, batch_size):
            batch = items[b : min(b + batch_size, stop)]
            images = []
            for it in batch:
                assert it.image is not None
                try:
                    images.append(it.image.load())
                except ImageLoadError as err:
                    raise ImageLoadError(f"item {it.id!r}: {err}") from err
            pixels = net.pixels(images)
            for v, view in enumerate(views):
                out[b - start : b - start + len(batch), v] = net.from_pixels(pixels, view=view).numpy()
        return out

    return _build(
        folder,
        ids,
        tower="efficientnet-lite0",
        views=views,
        dim=net.dim,
        encode=encode,
        shard_size=shard_size,
        unit="image",
        source={"batch_size": batch_size, "optimized": net.channels_last},
    )


def text_features(model: SentenceTransformerModel, texts: Sequence[str], *, batch_size: int = 128) -> torch.Tensor:
    """MiniLM text features ``(n, 1536)`` (:func:`lumir.models.mini.text_tower_features`) in input order, batched
    longest-first to pad little."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = torch.zeros(len(texts), TEXT_FEATURE_DIM)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        out[idx] = text_tower_features(model, [texts[i] for i in idx])
    return out


def cache_text_features(
    items: Sequence[Item],
    folder: str | Path,
    *,
    model: SentenceTransformerModel | None = None,
    batch_size: int = 128,
    shard_size: int = 4096,
) -> FeatureCache:
    """all-MiniLM-L6-v2 features of text items (one view).

    Raises:
        ValueError: an item has no text.
        DataFormatError: ``folder`` holds a cache for other items or tower.
    """
    folder = Path(folder)
    ids = [it.id for it in items]
    if (cache := _check_reuse(folder, ids, "all-MiniLM-L6-v2", ["original"], TEXT_FEATURE_DIM)) is not None:
        return cache
    missing = [it.id for it in items if not it.text]
    if missing:
        raise ValueError(f"{len(missing)} items have no text (first: {missing[:5]})")
    if model is None:
        from lumir.models.text import minilm_path

        model = SentenceTransformerModel.from_folder(minilm_path())
    st = model

    def encode(start: int, stop: int) -> np.ndarray:
        texts = [str(it.text) for it in items[start:stop]]
        return text_features(st, texts, batch_size=batch_size).numpy()[:, None, :]

    return _build(
        folder,
        ids,
        tower="all-MiniLM-L6-v2",
        views=["original"],
        dim=TEXT_FEATURE_DIM,
        encode=encode,
        shard_size=shard_size,
        unit="caption",
        source={"batch_size": batch_size, "max_seq_length": st.max_seq_length},
    )
