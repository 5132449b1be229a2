"""Score fusion of first-stage and reranker scores: LamRA §3.5, ``S = α·S_ret + (1 − α)·S_rank``.

Normalisation before fusing (per query, over the K reranked candidates):

- ``"none"`` (default, as in LamRA): S_ret is the retriever's score (cosine similarity for lumir's normalised
  embedders, in [−1, 1]) and S_rank the reranker's probability in [0, 1], added as they are;
- ``"minmax"``: each of S_ret and S_rank is rescaled to [0, 1] over the query's K candidates first (a constant
  vector becomes all zeros), so α weighs the two *orders* rather than their raw ranges.

α = 1 keeps the first-stage order; α = 0 is the reranker alone. Per-task overrides take precedence, so one
pipeline can trust the reranker on composed queries and the retriever elsewhere (MM-Embed §5.3.3 finds
reranking helps tasks 6–8 and hurts tasks 1–5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["NORMALIZATIONS", "FusionConfig", "fuse_scores", "minmax"]

NORMALIZATIONS = ("none", "minmax")


def minmax(x: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1]; a constant (or empty) vector becomes zeros.

    Example:
        >>> minmax(np.array([2.0, 4.0, 3.0])).tolist()
        [0.0, 1.0, 0.5]
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    return np.zeros_like(x) if hi - lo <= 0 else (x - lo) / (hi - lo)


def fuse_scores(s_ret: np.ndarray, s_rank: np.ndarray, alpha: float = 0.5, normalize: str = "none") -> np.ndarray:
    """``α·S_ret + (1 − α)·S_rank`` after the chosen per-query normalisation (LamRA §3.5).

    Example:
        >>> fuse_scores(np.array([0.8, 0.6]), np.array([0.1, 0.9]), alpha=0.5).round(3).tolist()
        [0.45, 0.75]
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"fusion weight alpha must be in [0, 1], got {alpha}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {normalize!r}; use one of {NORMALIZATIONS}")
    a = np.asarray(s_ret, dtype=np.float64)
    b = np.asarray(s_rank, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"retrieval scores {a.shape} and rerank scores {b.shape} differ in shape")
    if normalize == "minmax":
        a, b = minmax(a), minmax(b)
    return alpha * a + (1.0 - alpha) * b


@dataclass(frozen=True)
class FusionConfig:
    """How reranker scores are combined with first-stage scores.

    Attributes:
        alpha: weight of the first-stage score; None means the reranker's own default (MM-Embed True/False: 0,
            LamRA: 0.5) — a config that leaves it unset never changes a reranker's α.
        normalize: ``"none"`` or ``"minmax"`` (see the module docstring).
        per_task: task name -> alpha, overriding ``alpha`` for queries of that task.
    """

    alpha: float | None = None
    normalize: str = "none"
    per_task: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        alphas = {"default": self.alpha, **self.per_task}
        for name, a in alphas.items():
            if a is not None and not 0.0 <= float(a) <= 1.0:
                raise ValueError(f"fusion alpha for {name!r} must be in [0, 1], got {a}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalisation {self.normalize!r}; use one of {NORMALIZATIONS}")

    def with_default(self, alpha: float) -> FusionConfig:
        """This config with ``alpha`` filled in when it is unset."""
        return self if self.alpha is not None else FusionConfig(alpha, self.normalize, dict(self.per_task))

    def alpha_for(self, task: str | None) -> float:
        """The weight for a query of ``task``.

        Raises:
            ValueError: no α is set (call :meth:`with_default` first).
        """
        if task and task in self.per_task:
            return float(self.per_task[task])
        if self.alpha is None:
            raise ValueError("FusionConfig.alpha is unset; the reranker fills in its default with with_default()")
        return float(self.alpha)

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "normalize": self.normalize, "per_task": dict(self.per_task)}
