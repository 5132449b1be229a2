"""Trainable projection heads over frozen features (lumir-mini, LiT-style "locked" towers).

A head maps a frozen tower's feature vector to the shared embedding space. It is described by a small JSON-able
config (``head.config()`` / :func:`build_head`), so a saved model reloads without code:

- ``standardize``: per-dimension ``(x - mean) / std`` with statistics measured on the training features and stored
  as buffers (frozen features mix scales: pooled early stages and the 1280-d head differ by orders of magnitude);
- ``select``: which slices of the cached feature vector the head reads (e.g. the EfficientNet head plus some stages);
- ``input_dropout``: dropout on the (standardised) frozen features, the strongest regulariser for frozen towers;
- ``kind="linear"`` (one matrix) or ``kind="mlp"`` (Linear → GELU → Dropout → Linear, plus a linear skip path).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["HEAD_KINDS", "ProjectionHead", "build_head"]

HEAD_KINDS = ("linear", "mlp")


class ProjectionHead(nn.Module):
    """Standardise, select, dropout and project a frozen feature vector (see the module docstring).

    Args:
        in_dim: width of the full (cached) feature vector.
        out_dim: embedding width.
        kind: ``"linear"`` or ``"mlp"``.
        hidden: MLP hidden width (default ``2 * out_dim``).
        select: ``[(start, stop), ...]`` slices of the feature vector to use (default: all of it).
        input_dropout: dropout probability on the standardised input features (training only).
        dropout: dropout after the MLP activation (training only).

    Raises:
        ValueError: unknown ``kind``, empty or out-of-range ``select``, dropout outside [0, 1).
    """

    index: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        kind: str = "linear",
        hidden: int | None = None,
        select: Sequence[Sequence[int]] | None = None,
        input_dropout: float = 0.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"head kind must be one of {HEAD_KINDS}, got {kind!r}")
        for name, p in (("input_dropout", input_dropout), ("dropout", dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        spans = [(int(a), int(b)) for a, b in (select or [(0, in_dim)])]
        if not spans or any(not 0 <= a < b <= in_dim for a, b in spans):
            raise ValueError(f"select spans must satisfy 0 <= start < stop <= in_dim={in_dim}, got {spans}")
        self.in_dim, self.out_dim, self.kind = in_dim, out_dim, kind
        self.spans = spans
        self.input_dropout_p, self.dropout_p = input_dropout, dropout
        width = sum(b - a for a, b in spans)
        self.hidden = hidden or 2 * out_dim
        index = torch.cat([torch.arange(a, b) for a, b in spans])
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        self.input_dropout = nn.Dropout(input_dropout)
        self.linear = nn.Linear(width, out_dim)
        self.mlp: nn.Sequential | None = None
        if kind == "mlp":
            self.mlp = nn.Sequential(
                nn.Linear(width, self.hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(self.hidden, out_dim)
            )

    @property
    def width(self) -> int:
        """Number of input features the head reads after ``select``."""
        return int(self.index.numel())

    def fit_standardizer(self, features: torch.Tensor, eps: float = 1e-6) -> None:
        """Set the standardisation statistics from training features ``(n, in_dim)``."""
        x = features[:, self.index].double()
        self.mean.copy_(x.mean(dim=0).float())
        self.std.copy_(x.std(dim=0).clamp_min(eps).float())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(n, in_dim)`` features → ``(n, out_dim)`` embeddings (not normalised)."""
        x = (features[:, self.index] - self.mean) / self.std
        x = self.input_dropout(x)
        out = self.linear(x)
        return out + self.mlp(x) if self.mlp is not None else out

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments; ``build_head(head.config())`` builds the same architecture."""
        return {
            "in_dim": self.in_dim,
            "out_dim": self.out_dim,
            "kind": self.kind,
            "hidden": self.hidden,
            "select": [list(s) for s in self.spans],
            "input_dropout": self.input_dropout_p,
            "dropout": self.dropout_p,
        }


def build_head(config: Mapping[str, Any]) -> ProjectionHead:
    """Build a :class:`ProjectionHead` from its :meth:`~ProjectionHead.config`.

    Raises:
        TypeError: unknown keys (the message lists the accepted ones).

    Example:
        >>> head = build_head({"in_dim": 8, "out_dim": 4, "kind": "mlp"})
        >>> build_head(head.config()).config() == head.config()
        True
    """
    known = {"in_dim", "out_dim", "kind", "hidden", "select", "input_dropout", "dropout"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise TypeError(f"unknown head option(s) {unknown}; accepted: {sorted(known)}")
    options = dict(config)
    return ProjectionHead(int(options.pop("in_dim")), int(options.pop("out_dim")), **options)
