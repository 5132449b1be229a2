"""Token pooling with attention masks, and L2 normalisation.

Every function takes ``hidden`` of shape ``(batch, seq, dim)`` and ``mask`` of shape ``(batch, seq)`` (1 for
real tokens, 0 for padding) and returns ``(batch, dim)``. The semantics follow sentence-transformers'
``models.Pooling`` (mean over real tokens with the count clamped at 1e-9; max over real tokens only; CLS = first
position) and the last-token pooling of decoder embedders (E5-Mistral, NV-Embed, VLM2Vec), which must work with
both left and right padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "POOLING_MODES",
    "cls_pool",
    "l2_normalize",
    "last_token_pool",
    "max_pool",
    "mean_pool",
    "mean_sqrt_len_pool",
    "pool",
]


def _mask(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.shape != hidden.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match hidden states {tuple(hidden.shape[:2])}")
    return mask.to(hidden.dtype).unsqueeze(-1)  # (batch, seq, 1)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real-token states: ``sum(h * m) / max(sum(m), 1e-9)``."""
    m = _mask(hidden, mask)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def mean_sqrt_len_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of the real-token states divided by the square root of their count (sentence-transformers)."""
    m = _mask(hidden, mask)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9).sqrt()


def max_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Element-wise max over the real-token states (padding never wins)."""
    m = _mask(hidden, mask)
    return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values


def cls_pool(hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The state at position 0 (BERT's ``[CLS]``); assumes right padding."""
    return hidden[:, 0]


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The state of the last real token of each row, for left- or right-padded batches."""
    _mask(hidden, mask)
    seq = mask.shape[1]
    # position of the last 1 in each row: flip, find the first 1, map back
    last = seq - 1 - mask.flip(1).to(torch.int64).argmax(1)  # (batch,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]


POOLING_MODES = {
    "cls": cls_pool,
    "max": max_pool,
    "mean": mean_pool,
    "mean_sqrt_len": mean_sqrt_len_pool,
    "lasttoken": last_token_pool,
}
"""Pooling functions by name, in sentence-transformers' concatenation order."""


def pool(hidden: torch.Tensor, mask: torch.Tensor, modes: str | Sequence[str] = "mean") -> torch.Tensor:
    """Pool with one mode, or several concatenated along the feature axis (sentence-transformers' order).

    Example:
        >>> h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
        >>> pool(h, torch.tensor([[1, 1, 0]]), "mean").tolist()
        [[2.0, 3.0]]
    """
    names = [modes] if isinstance(modes, str) else list(modes)
    if not names:
        raise ValueError(f"no pooling mode given; use some of {sorted(POOLING_MODES)}")
    unknown = [n for n in names if n not in POOLING_MODES]
    if unknown:
        raise ValueError(f"unknown pooling mode(s) {unknown}; use some of {sorted(POOLING_MODES)}")
    ordered = [n for n in POOLING_MODES if n in names]
    outs = [POOLING_MODES[n](hidden, mask) for n in ordered]
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows scaled to unit L2 norm (zero rows stay zero), as ``torch.nn.functional.normalize``."""
    return x / x.norm(p=2, dim=-1, keepdim=True).clamp(min=eps)
