"""Sample photos bundled with scikit-image, scikit-learn and matplotlib, each with a caption we wrote for it.

:data:`SAMPLE_PHOTOS` is the table in ``samples.tsv`` (photo id, source package, what to load, caption).
:func:`collect_samples` saves the photos of the installed packages as JPEG files (index directories store images by
path) and skips, with a warning, the packages that are not installed.
"""

from __future__ import annotations

import importlib
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from lumir.errors import DataFormatError
from lumir.types import ImageRef, Item

__all__ = [
    "DEMO_EXTRA",
    "SAMPLE_PHOTOS",
    "DemoWarning",
    "SamplePhoto",
    "caption_items",
    "collect_samples",
    "photo_items",
    "read_sample_table",
]

DEMO_EXTRA = "lumir[demo]"
"""The extra that installs every package the sample photos come from."""

SAMPLES_FILE = "samples.tsv"
"""The caption table shipped next to this module."""


class DemoWarning(UserWarning):
    """A sample-photo package or photo is missing; the demo goes on without it."""


MAX_SIDE = 1024
"""Saved photos are shrunk to fit ``MAX_SIDE`` x ``MAX_SIDE`` (the embedders look at 224 px anyway)."""


@dataclass(frozen=True)
class SamplePhoto:
    """One bundled photo: its id, the pip package that ships it, what to load, and our caption for it.

    ``key`` is a :mod:`skimage.data` function name (scikit-image), a file name of
    ``sklearn.datasets.load_sample_images()`` (scikit-learn), or a matplotlib sample-data file name.
    ``path`` is set once the photo is saved to disk by :func:`collect_samples`.
    """

    id: str
    package: str
    key: str
    caption: str
    path: Path | None = None


_MODULES = {"scikit-image": "skimage.data", "scikit-learn": "sklearn.datasets", "matplotlib": "matplotlib.cbook"}
"""Package -> the module its photos are loaded from."""


def read_sample_table(path: str | Path | None = None) -> tuple[SamplePhoto, ...]:
    """The photos listed in a TSV table (``id, package, key, caption``; ``#`` comments); default: ``samples.tsv``."""
    if path is None:
        text = (resources.files("lumir.demo") / SAMPLES_FILE).read_text(encoding="utf-8")
        where: str | Path = SAMPLES_FILE
    else:
        text, where = Path(path).read_text(encoding="utf-8"), path
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip() and line[0] != "#"]
    if not lines or lines[0][1].split("\t") != ["id", "package", "key", "caption"]:
        raise DataFormatError("expected the header 'id<TAB>package<TAB>key<TAB>caption'", path=where)
    out = []
    for lineno, line in lines[1:]:
        fields = line.split("\t")
        if len(fields) != 4 or not all(f.strip() for f in fields):
            raise DataFormatError(
                f"expected 4 non-empty tab-separated fields, got {len(fields)}", path=where, line=lineno
            )
        if fields[1] not in _MODULES:
            raise DataFormatError(
                f"unknown package {fields[1]!r}; expected one of {sorted(_MODULES)}", path=where, line=lineno
            )
        photo_id, package, key, caption = (f.strip() for f in fields)
        out.append(SamplePhoto(photo_id, package, key, caption))
    return tuple(out)


SAMPLE_PHOTOS: tuple[SamplePhoto, ...] = read_sample_table()
"""Real colour photos only (no drawings, logos or grey-scale test images), in a fixed order."""


def _load(module: Any, package: str, key: str) -> Any:
    """The photo as a PIL image (array photos) or a file path (photos shipped as files)."""
    from PIL import Image

    if package == "scikit-image":
        array = getattr(module, key)()
        if key == "stereo_motorcycle":  # (left, right, disparity): keep the left view
            array = array[0]
        return Image.fromarray(array)
    if package == "scikit-learn":
        by_name = {Path(f).name: Path(f) for f in module.load_sample_images().filenames}
        return by_name[key]
    return Path(module.get_sample_data(key, asfileobj=False))


def _save(photo: Any, target: Path) -> None:
    """Save a PIL image or an image file as an RGB JPEG no larger than :data:`MAX_SIDE`."""
    from PIL import Image

    if isinstance(photo, Path):
        with Image.open(photo) as img:
            if img.format == "JPEG" and max(img.size) <= MAX_SIDE:
                shutil.copyfile(photo, target)
                return
            photo = img.convert("RGB")
    img = photo.convert("RGB")
    img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    img.save(target, format="JPEG", quality=92)


def collect_samples(folder: str | Path, photos: Sequence[SamplePhoto] = SAMPLE_PHOTOS) -> list[SamplePhoto]:
    """Save the sample photos whose package is installed to ``folder/<id>.jpg``; return them with ``path`` set.

    A package that is not installed (or a photo that cannot be loaded) is skipped with a :class:`DemoWarning`
    naming the package and how to install it. Returns an empty list when none is available.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[SamplePhoto] = []
    modules: dict[str, Any] = {}
    for package in dict.fromkeys(p.package for p in photos):
        names = [p.id for p in photos if p.package == package]
        try:
            modules[package] = importlib.import_module(_MODULES[package])
        except ImportError as err:
            warnings.warn(
                f"{package} is not installed ({err}): skipping its {len(names)} sample photo(s) {', '.join(names)}; "
                f"install it with: pip install '{DEMO_EXTRA}' (or pip install {package})",
                DemoWarning,
                stacklevel=2,
            )
    for photo in photos:
        module = modules.get(photo.package)
        if module is None:
            continue
        target = folder / f"{photo.id}.jpg"
        try:
            _save(_load(module, photo.package, photo.key), target)
        except Exception as err:  # a sample missing from this version of the package must not stop the demo
            warnings.warn(f"skipping sample photo {photo.id!r} of {photo.package}: {err}", DemoWarning, stacklevel=2)
            continue
        out.append(SamplePhoto(photo.id, photo.package, photo.key, photo.caption, target))
    return out


def photo_items(photos: Sequence[SamplePhoto]) -> list[Item]:
    """One image item per saved photo (id = photo id, ``meta["source"]`` = its package)."""
    return [Item(p.id, image=ImageRef(str(_saved(p))), meta={"source": p.package}) for p in photos]


def caption_items(photos: Sequence[SamplePhoto]) -> list[Item]:
    """One text item per photo caption: id ``"<photo id>#0"``, ``meta["image"]`` = the photo id (Flickr8k's scheme)."""
    return [Item(f"{p.id}#0", text=p.caption, meta={"image": p.id, "source": p.package}) for p in photos]


def _saved(photo: SamplePhoto) -> Path:
    if photo.path is None:
        raise ValueError(f"sample photo {photo.id!r} has no file yet; save it with collect_samples() first")
    return photo.path
