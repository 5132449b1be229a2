"""Core value types: modalities, roles, lazy image references, items, queries, hits, qrels.

The vocabulary is fixed across lumir: *query* and *candidate* (M-BEIR's terms), *item* for either,
*k* for a cutoff, *rankings* and *qrels*.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Union

from lumir.errors import ImageLoadError

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["Hit", "ImageRef", "Item", "Modality", "Qrels", "Query", "Role", "Run", "as_image_ref"]

Qrels = dict[str, dict[str, int]]
"""query id -> {candidate id -> relevance grade}; the TREC lingua franca (pytrec_eval, ir_measures)."""

Run = dict[str, dict[str, float]]
"""query id -> {candidate id -> score}; what TREC run files hold."""


class Modality(str, Enum):
    """What an item is made of. Values equal M-BEIR's modality strings."""

    TEXT = "text"
    IMAGE = "image"
    IMAGE_TEXT = "image,text"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | Modality) -> Modality:
        """Parse a modality string, accepting M-BEIR's ``"image,text"`` and ``"text,image"`` spellings."""
        if isinstance(value, Modality):
            return value
        norm = ",".join(sorted(p.strip() for p in str(value).lower().split(",")))
        for member in cls:
            if member.value == norm:
                return member
        raise ValueError(f"unknown modality {value!r}; expected one of {[m.value for m in cls]}")


class Role(str, Enum):
    """Which side of retrieval an item is embedded for."""

    QUERY = "query"
    CANDIDATE = "candidate"

    def __str__(self) -> str:
        return self.value


ImageSource = Union[str, Path, bytes, "PILImage.Image"]


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A lazy reference to an image: a file path, encoded bytes, or an in-memory PIL image.

    Nothing is read until :meth:`load` is called, so corpora of millions of images cost only their paths.
    """

    source: ImageSource

    def load(self) -> PILImage.Image:
        """Decode the image and return it in RGB.

        Raises:
            ImageLoadError: the file is missing, not an image, corrupt, or a decompression bomb (more pixels than
                Pillow decodes safely); the message names it.
        """
        from PIL import Image, UnidentifiedImageError

        src = self.source
        if isinstance(src, Image.Image):
            return src if src.mode == "RGB" else src.convert("RGB")
        try:
            if isinstance(src, bytes):
                img = Image.open(io.BytesIO(src))
            else:
                path = Path(src)
                if not path.is_file():
                    raise ImageLoadError(f"image file not found: {path}")
                img = Image.open(path)
            img.load()
            return img.convert("RGB")
        except ImageLoadError:
            raise
        except Image.DecompressionBombError as err:  # Pillow refuses images over 2x MAX_IMAGE_PIXELS
            raise ImageLoadError(
                f"image {self.describe()} is too large to decode safely ({err}); resize it, or raise "
                "PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
            ) from err
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise ImageLoadError(f"cannot decode image {self.describe()}: {err}") from err

    @property
    def path(self) -> Path | None:
        """The file path when the image lives on disk, else None."""
        return Path(self.source) if isinstance(self.source, (str, Path)) else None

    def describe(self) -> str:
        """A short human-readable description for messages and reports."""
        if isinstance(self.source, (str, Path)):
            return str(self.source)
        if isinstance(self.source, bytes):
            return f"<{len(self.source)} bytes>"
        return f"<PIL image {self.source.size[0]}x{self.source.size[1]}>"


def as_image_ref(value: ImageRef | ImageSource | None) -> ImageRef | None:
    """Coerce a path, bytes, PIL image or ImageRef into an ImageRef (None stays None)."""
    if value is None or isinstance(value, ImageRef):
        return value
    return ImageRef(value)


@dataclass(frozen=True, slots=True)
class Item:
    """Any query or candidate content: text, an image, or both.

    Example:
        >>> Item("c1", text="a red square").modality
        <Modality.TEXT: 'text'>
    """

    id: str
    text: str | None = None
    image: ImageRef | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"item id must be a non-empty string, got {self.id!r}")
        if self.image is not None and not isinstance(self.image, ImageRef):
            object.__setattr__(self, "image", as_image_ref(self.image))
        if self.text is not None and not self.text.strip():
            if self.image is None:
                raise ValueError(f"item {self.id!r} has empty text and no image")
            object.__setattr__(self, "text", None)
        if self.text is None and self.image is None:
            raise ValueError(f"item {self.id!r} has neither text nor image")

    @property
    def modality(self) -> Modality:
        """Derived from which fields are set; never stored separately."""
        if self.text is not None and self.image is not None:
            return Modality.IMAGE_TEXT
        return Modality.IMAGE if self.image is not None else Modality.TEXT


@dataclass(frozen=True, slots=True)
class Query(Item):
    """A search request: an item plus the task instruction and task name that shape it.

    ``instruction`` overrides any instruction table for this one query; ``task`` (e.g. ``"mscoco_task0"``)
    selects the instruction, the candidate pool and the metrics. A rewrite is
    ``dataclasses.replace(query, text=new_text)``.
    """

    instruction: str | None = None
    task: str | None = None


class Hit(NamedTuple):
    """One ranked candidate of one query."""

    id: str
    score: float
    rank: int
