"""Open-vocabulary image embeddings from an ImageNet classifier: ConSE (Norouzi et al., ICLR 2014).

ConSE ("convex combination of semantic embeddings") places an image in a text embedding space without training:
take the classifier's ``top`` most probable classes, and average the text embeddings of their names weighted by
their probabilities::

    c(image) = normalize( sum_{i in top-T} p_i * s(class_i) )

``s`` is a sentence embedding of the class name (here all-MiniLM-L6-v2, optionally of the name in templates such as
``"a photo of a {}."``, averaged). A text is embedded by the same sentence model, so ``<s(text), c(image)>`` scores
any text against any photo, including words the trained heads never saw ("espresso", "moped", "tabby cat").

lumir-mini keeps one vector per item by concatenating its trained-heads embedding ``h`` and this open-vocabulary
embedding ``o`` (both unit length), weighted by ``w`` (:func:`fuse`)::

    v = [ sqrt(w) * h , sqrt(1 - w) * o ]        <v, v'> = w <h, h'> + (1 - w) <o, o'>

so inner-product search over fused vectors ranks by the weighted sum of the two similarities for every modality
pair (text or photo or photo+text on either side).

**Confidence gate** (optional, :class:`GateConfig`): a photo's ConSE part is first scaled by
``g = clip((c - low) / (high - low), 0, 1) ** power``, ``c`` the classifier's confidence (:func:`confidence`: top-1
probability, top-T mass or 1 - normalised entropy), and the row is then normalised (:func:`fuse_gated`), so a photo
the classifier recognises (a tabby cat, an espresso) brings its ConSE part in while a photo of people (no ImageNet
class, spread probabilities) relies on the heads: its effective heads weight is ``w / (w + (1 - w) g^2)``. Texts keep
their ConSE part. The class names (1,000, CLIP's cleaned ImageNet names, MIT
licence, from open_clip) ship in ``lumir/assets/imagenet_classes.tsv``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lumir.errors import DataFormatError

__all__ = [
    "CONFIDENCE_MEASURES",
    "GATED_OPEN_VOCAB",
    "IMAGENET_CLASSES_FILE",
    "GateConfig",
    "OpenVocabConfig",
    "center_vectors",
    "class_prompts",
    "class_vectors",
    "confidence",
    "conse_vectors",
    "fuse",
    "fuse_gated",
    "gate_values",
    "imagenet_class_names",
    "mean_probabilities",
    "read_class_names",
    "top_probabilities",
]

IMAGENET_CLASSES_FILE = "imagenet_classes.tsv"
"""File name, in ``lumir/assets``, of the 1,000 ImageNet class names in class-index order."""


def read_class_names(path: str | Path) -> list[str]:
    """Class names from an ``index<TAB>name`` table (``#`` comment lines and one header line), in index order.

    Raises:
        DataFormatError: a malformed line, or indices that are not 0, 1, 2, ... in order.
    """
    path = Path(path)
    names: list[str] = []
    header_seen = False
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        if not header_seen:
            header_seen = True
            if line.split("\t") != ["index", "name"]:
                raise DataFormatError(f"expected the header 'index<TAB>name', got {line!r}", path=path, line=lineno)
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1].strip() or parts[0] != str(len(names)):
            raise DataFormatError(f"expected '{len(names)}<TAB>name', got {line!r}", path=path, line=lineno)
        names.append(parts[1])
    return names


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names shipped with lumir, in class-index order (EfficientNet-Lite0's outputs).

    Example:
        >>> names = imagenet_class_names()
        >>> len(names), names[281], names[967]
        (1000, 'tabby cat', 'espresso')
    """
    names = read_class_names(Path(str(resources.files("lumir") / "assets" / IMAGENET_CLASSES_FILE)))
    if len(names) != 1000:
        raise DataFormatError(f"expected 1000 ImageNet class names, found {len(names)}", path=IMAGENET_CLASSES_FILE)
    return tuple(names)


def mean_probabilities(*logits: torch.Tensor) -> torch.Tensor:
    """The mean of the softmax probabilities of several views' ``(n, classes)`` logits (e.g. a photo and its mirror).

    Example:
        >>> mean_probabilities(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3.0)]])).tolist()
        [[0.375, 0.625]]
    """
    if not logits:
        raise ValueError("mean_probabilities needs at least one logits tensor")
    return torch.stack([x.float().softmax(dim=-1) for x in logits]).mean(dim=0)


def top_probabilities(probs: torch.Tensor, top: int) -> torch.Tensor:
    """``probs`` ``(n, classes)`` with everything but each row's ``top`` largest entries set to 0 (not renormalised:
    the ConSE vector is normalised afterwards, so only the ratios matter).

    Example:
        >>> top_probabilities(torch.tensor([[0.1, 0.6, 0.3]]), 2)
        tensor([[0.0000, 0.6000, 0.3000]])
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if top >= probs.shape[-1]:
        return probs.clone()
    values, indices = probs.topk(top, dim=-1)
    return torch.zeros_like(probs).scatter_(-1, indices, values)


def conse_vectors(probs: torch.Tensor, class_vecs: torch.Tensor, top: int) -> torch.Tensor:
    """ConSE embeddings ``(n, d)``: the normalised probability-weighted sum of the ``top`` most probable classes'
    embeddings (``class_vecs`` ``(classes, d)``, one row per class in the classifier's order).

    Example:
        >>> s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
        >>> v = conse_vectors(torch.tensor([[0.3, 0.6, 0.1]]), s, top=2)  # 0.3*[1,0] + 0.6*[0,1], normalised
        >>> [round(x, 4) for x in v[0].tolist()]
        [0.4472, 0.8944]
    """
    if probs.shape[-1] != class_vecs.shape[0]:
        raise ValueError(f"{probs.shape[-1]} class probabilities but {class_vecs.shape[0]} class embeddings")
    return F.normalize(top_probabilities(probs, top) @ class_vecs.to(probs.dtype), dim=-1)


def class_prompts(names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every template filled with every name, template-major: ``[t0(n0), t0(n1), ..., t1(n0), ...]``.

    Example:
        >>> class_prompts(["cat", "dog"], ["{}", "a photo of a {}."])
        ['cat', 'dog', 'a photo of a cat.', 'a photo of a dog.']
    """
    if not templates:
        raise ValueError("at least one template is needed, e.g. '{}'")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"each template needs exactly one '{{}}' for the class name, got {bad}")
    return [t.format(name) for t in templates for name in names]


def class_vectors(
    encode: Callable[[Sequence[str]], torch.Tensor],
    names: Sequence[str],
    templates: Sequence[str],
    *,
    batch_size: int = 256,
) -> torch.Tensor:
    """One unit vector per class ``(len(names), d)``: the normalised mean over ``templates`` of the normalised
    ``encode`` outputs of the filled-in templates (CLIP's prompt ensembling).

    Example:
        >>> enc = lambda texts: torch.tensor([[float(len(t)), 1.0] for t in texts])
        >>> [round(x, 4) for x in class_vectors(enc, ["ab"], ["{}"])[0].tolist()]  # [2, 1] normalised
        [0.8944, 0.4472]
    """
    prompts = class_prompts(names, templates)
    parts = [
        F.normalize(encode(prompts[i : i + batch_size]).float(), dim=-1) for i in range(0, len(prompts), batch_size)
    ]
    per_template = torch.cat(parts).view(len(templates), len(names), -1)
    return F.normalize(per_template.mean(dim=0), dim=-1)


def fuse(heads: torch.Tensor, open_vocab: torch.Tensor, weight: float) -> torch.Tensor:
    """``[sqrt(w) * normalize(heads), sqrt(1 - w) * normalize(open_vocab)]``: unit vectors whose inner products are
    ``w`` times the heads' cosine plus ``1 - w`` times the open-vocabulary cosine.

    Example:
        >>> v = fuse(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0]]), 0.36)
        >>> [round(x, 4) for x in v[0].tolist()], round(float(v.norm()), 4)
        ([0.36, 0.48, 0.0, 0.8], 1.0)
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    if heads.shape[0] != open_vocab.shape[0]:
        raise ValueError(f"{heads.shape[0]} heads rows but {open_vocab.shape[0]} open-vocabulary rows")
    return torch.cat(
        [math.sqrt(weight) * F.normalize(heads, dim=-1), math.sqrt(1.0 - weight) * F.normalize(open_vocab, dim=-1)],
        dim=-1,
    )


CONFIDENCE_MEASURES = ("top1", "topk", "entropy")
"""How :func:`confidence` reads a photo's class probabilities: ``top1`` the largest probability, ``topk`` the mass of
the ``top`` largest, ``entropy`` 1 - entropy / log(number of classes) (1 = one class, 0 = uniform)."""


def confidence(probs: torch.Tensor, measure: str, top: int = 1) -> torch.Tensor:
    """How confidently the classifier recognises something: ``(n,)`` in [0, 1] from ``(n, classes)`` probabilities
    (see :data:`CONFIDENCE_MEASURES`).

    Example:
        >>> p = torch.tensor([[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]])
        >>> [round(x, 4) for x in confidence(p, "top1").tolist()], confidence(p, "topk", top=2)[0].item()
        ([0.5, 0.3333], 0.800000011920929)
        >>> [round(x, 4) for x in confidence(p, "entropy").tolist()]
        [0.0628, 0.0]
    """
    if measure == "top1":
        return probs.max(dim=-1).values
    if measure == "topk":
        return probs.topk(min(top, probs.shape[-1]), dim=-1).values.sum(dim=-1)
    if measure == "entropy":
        p = probs.clamp_min(0.0)
        entropy = -(p * p.clamp_min(1e-30).log()).sum(dim=-1)
        return (1.0 - entropy / math.log(probs.shape[-1])).clamp(0.0, 1.0)
    raise ValueError(f"unknown confidence measure {measure!r}; known: {', '.join(CONFIDENCE_MEASURES)}")


def gate_values(conf: torch.Tensor, low: float, high: float, power: float = 1.0) -> torch.Tensor:
    """``clip((conf - low) / (high - low), 0, 1) ** power``: 0 at or below ``low``, 1 at or above ``high``
    (``low = 0, high = 1``: ``conf ** power``).

    Example:
        >>> gate_values(torch.tensor([0.1, 0.4, 0.5, 0.9]), 0.2, 0.6).tolist()
        [0.0, 0.5, 0.75, 1.0]
    """
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"gate needs 0 <= low < high <= 1, got low={low}, high={high}")
    if power <= 0:
        raise ValueError(f"gate power must be > 0, got {power}")
    return ((conf - low) / (high - low)).clamp(0.0, 1.0) ** power


def fuse_gated(heads: torch.Tensor, open_vocab: torch.Tensor, weight: float, gate: torch.Tensor) -> torch.Tensor:
    """``normalize([sqrt(w) * normalize(heads), sqrt(1 - w) * g * normalize(open_vocab)])`` with ``g`` ``(n,)`` per
    row: g = 1 is :func:`fuse`, g = 0 is the heads vector alone (padded with zeros). Against an ungated unit vector
    ``[sqrt(w) h', sqrt(1 - w) o']`` the inner product is ``(w <h, h'> + (1 - w) g <o, o'>) / sqrt(w + (1 - w) g^2)``.

    Example:
        >>> v = fuse_gated(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0]]), 0.36, torch.tensor([0.0]))
        >>> [round(x, 4) for x in v[0].tolist()]
        [0.6, 0.8, 0.0, 0.0]
    """
    if gate.shape != (heads.shape[0],):
        raise ValueError(f"gate must have shape ({heads.shape[0]},), got {tuple(gate.shape)}")
    fused = fuse(heads, open_vocab, weight)
    dim = heads.shape[-1]
    scaled = torch.cat([fused[:, :dim], fused[:, dim:] * gate.to(fused.dtype)[:, None]], dim=-1)
    return F.normalize(scaled, dim=-1)


def center_vectors(vectors: torch.Tensor, mean: torch.Tensor | None) -> torch.Tensor:
    """``normalize(vectors - mean)`` (``mean`` None: just normalise). With ``mean`` the average class-name embedding,
    this removes the component all MiniLM embeddings of short English phrases share, so that unrelated texts and
    photos score near 0 instead of at a common positive baseline.

    Example:
        >>> center_vectors(torch.tensor([[1.0, 1.0]]), torch.tensor([0.0, 1.0])).tolist()
        [[1.0, 0.0]]
    """
    return F.normalize(vectors if mean is None else vectors - mean.to(vectors.dtype), dim=-1)


@dataclass(frozen=True)
class GateConfig:
    """The confidence gate on a photo's ConSE part (:func:`confidence`, :func:`gate_values`).

    Attributes:
        measure: one of :data:`CONFIDENCE_MEASURES` (``topk`` uses the open-vocabulary ``top``).
        low: confidence at or below which the photo's ConSE part is off (g = 0).
        high: confidence at or above which it is fully on (g = 1).
        power: exponent applied to the clipped ramp.
    """

    measure: str = "top1"
    low: float = 0.0
    high: float = 1.0
    power: float = 1.0

    def __post_init__(self) -> None:
        if self.measure not in CONFIDENCE_MEASURES:
            raise ValueError(f"unknown gate measure {self.measure!r}; known: {', '.join(CONFIDENCE_MEASURES)}")
        gate_values(torch.zeros(1), self.low, self.high, self.power)  # validates the numbers

    def __call__(self, probs: torch.Tensor, top: int) -> torch.Tensor:
        """The gate ``(n,)`` of photos with class probabilities ``probs`` ``(n, classes)``."""
        return gate_values(confidence(probs, self.measure, top), self.low, self.high, self.power)

    def to_dict(self) -> dict[str, Any]:
        return {"measure": self.measure, "low": self.low, "high": self.high, "power": self.power}

    @classmethod
    def parse(cls, value: Mapping[str, Any] | GateConfig | None) -> GateConfig | None:
        """None = no gate; a mapping = the defaults updated with its keys (``measure``, ``low``, ``high``,
        ``power``)."""
        if value is None or isinstance(value, GateConfig):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"open_vocab gate must be a mapping of settings or null, got {value!r}")
        known = ("measure", "low", "high", "power")
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown open_vocab gate key(s) {unknown}; known: {', '.join(known)}")
        return cls(
            measure=str(value.get("measure", cls.measure)),
            low=float(value.get("low", cls.low)),
            high=float(value.get("high", cls.high)),
            power=float(value.get("power", cls.power)),
        )


@dataclass(frozen=True)
class OpenVocabConfig:
    """Settings of lumir-mini's open-vocabulary path (chosen on a Flickr8k training holdout; see BENCHMARKS.md).

    Attributes:
        weight: ``w``, the weight of the trained heads' similarity; ``1 - w`` goes to the ConSE similarity.
        top: how many of the most probable ImageNet classes form an image's ConSE vector.
        templates: templates the class names are embedded in (averaged), each with one ``{}``.
        center: subtract the mean class-name embedding from both sides (texts and ConSE vectors) before
            normalising (:func:`center_vectors`), which removes the direction every class name and caption shares.
        mirror: average the class probabilities of the photo and its mirror image (False: the photo's alone).
        gate: the confidence gate on photos' ConSE parts (:class:`GateConfig`), or None (every photo fully on).
    """

    weight: float = 0.8
    top: int = 10
    templates: tuple[str, ...] = ("a photo of a {}.",)
    center: bool = True
    mirror: bool = False
    gate: GateConfig | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"open_vocab weight must be in [0, 1], got {self.weight}")
        if self.top < 1:
            raise ValueError(f"open_vocab top must be >= 1, got {self.top}")
        class_prompts(["x"], self.templates)  # validates the templates

    def to_dict(self) -> dict[str, Any]:
        """The JSON form recorded in embedder specs: ``{"weight", "top", "templates", "center", "mirror"}``, plus
        ``"gate"`` when there is one (so ungated specs are those written before the gate existed)."""
        out: dict[str, Any] = {
            "weight": self.weight,
            "top": self.top,
            "templates": list(self.templates),
            "center": self.center,
            "mirror": self.mirror,
        }
        if self.gate is not None:
            out["gate"] = self.gate.to_dict()
        return out

    @classmethod
    def parse(cls, value: bool | int | str | Mapping[str, Any] | OpenVocabConfig | None) -> OpenVocabConfig | None:
        """An ``open_vocab`` option as settings, or None for off: ``True``/``1`` = the defaults, ``False``/``0``/
        ``None`` = off, ``"gated"`` = :data:`GATED_OPEN_VOCAB`, a mapping = the defaults updated with its keys
        (``weight``, ``top``, ``templates``, ``center``, ``mirror``, ``gate``; no ``gate`` key = no gate).

        Example:
            >>> OpenVocabConfig.parse(0) is None, OpenVocabConfig.parse({"top": 5}).top
            (True, 5)
        """
        if isinstance(value, OpenVocabConfig):
            return value
        if value is None or value is False or (isinstance(value, int) and not isinstance(value, bool) and value == 0):
            return None
        if value is True or (isinstance(value, int) and value == 1):
            return cls()
        if value == "gated":
            return GATED_OPEN_VOCAB
        if isinstance(value, Mapping):
            known = ("weight", "top", "templates", "center", "mirror", "gate")
            unknown = sorted(set(value) - set(known))
            if unknown:
                raise ValueError(f"unknown open_vocab key(s) {unknown}; known: {', '.join(known)}")
            templates = value.get("templates", cls.templates)
            if isinstance(templates, str):
                templates = (templates,)
            return cls(
                weight=float(value.get("weight", cls.weight)),
                top=int(value.get("top", cls.top)),
                templates=tuple(str(t) for t in templates),
                center=bool(value.get("center", cls.center)),
                mirror=bool(value.get("mirror", cls.mirror)),
                gate=GateConfig.parse(value.get("gate")),
            )
        raise ValueError(f"open_vocab must be true/false (or 1/0), 'gated' or a mapping of settings, got {value!r}")


GATED_OPEN_VOCAB = OpenVocabConfig(
    weight=0.8, top=3, center=False, mirror=True, gate=GateConfig(measure="top1", low=0.0, high=1.0, power=0.5)
)
"""The confidence-gated settings (``mini:open_vocab=gated``): rule 3 of ``benchmarks/mini_open_vocab_gate.py`` on
the training holdouts. Each photo's ConSE part is scaled by the square root of its top-1 ImageNet probability;
"a photo of a {}.", T = 3, photo + mirror probabilities, not centred, w = 0.8 (BENCHMARKS.md)."""
