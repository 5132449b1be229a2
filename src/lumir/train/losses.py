"""Contrastive losses for training embedders: pure tensor functions, no module state.

``info_nce`` is the InfoNCE / CLIP loss with in-batch negatives (Radford et al. 2021, "Learning Transferable
Visual Models From Natural Language Supervision", https://arxiv.org/abs/2103.00020), optionally symmetric and
optionally with per-query hard negatives as in UniIR's ``clip_sf`` (Wei et al. 2023, "UniIR: Training and
Benchmarking Universal Multimodal Information Retrievers", https://arxiv.org/abs/2311.17136).
``LearnableTemperature`` holds CLIP's learnable ``log(1 / τ)`` so a trainer can optimise the temperature.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HARD_NEGATIVE_SCOPES", "MAX_LOGIT_SCALE", "LearnableTemperature", "info_nce"]

HARD_NEGATIVE_SCOPES = ("query", "batch")
"""Whose hard negatives a query is contrasted with: its own (UniIR ``clip_sf``) or every one in the batch (MM-Embed
eq. 1)."""

MAX_LOGIT_SCALE = 100.0
"""CLIP clamps its logit scale at 100 (temperature 0.01) to keep training stable."""


def _as_scalar(name: str, value: float | torch.Tensor) -> torch.Tensor:
    """A 0-d tensor from a float or one-element tensor (autograd kept); Python numbers must be positive.

    Tensor values are not compared with 0 so a GPU-resident logit scale costs no host sync per step;
    ``LearnableTemperature`` keeps its scale positive by construction.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        return value.reshape(())
    if not value > 0:
        raise ValueError(f"{name} must be a positive scalar, got {value!r}")
    return torch.tensor(float(value))


def _logit_scale(temperature: float | torch.Tensor | None, logit_scale: float | torch.Tensor | None) -> torch.Tensor:
    """Exactly one of ``temperature`` / ``logit_scale`` → the scalar multiplier ``1 / τ``."""
    if (temperature is None) == (logit_scale is None):
        raise ValueError("pass exactly one of temperature= or logit_scale= (logit_scale = 1 / temperature)")
    if temperature is not None:
        return 1.0 / _as_scalar("temperature", temperature)
    assert logit_scale is not None
    return _as_scalar("logit_scale", logit_scale)


def info_nce(
    query: torch.Tensor,
    candidate: torch.Tensor,
    *,
    temperature: float | torch.Tensor | None = None,
    logit_scale: float | torch.Tensor | None = None,
    hard_negatives: torch.Tensor | None = None,
    hard_negative_scope: str = "query",
    exclude: torch.Tensor | None = None,
    symmetric: bool = True,
    normalize: bool = True,
) -> torch.Tensor:
    """InfoNCE with in-batch negatives (CLIP's contrastive loss), optionally symmetric and with hard negatives.

    Row ``i`` of ``candidate`` is the positive for row ``i`` of ``query``; every other candidate in the batch is a
    negative. With ``normalize`` the embeddings are L2-normalised so the similarity is cosine, then
    ``logits = logit_scale * q @ c.T`` and the loss is cross-entropy with targets ``arange(B)`` (CLIP, Radford et
    al. 2021, https://arxiv.org/abs/2103.00020). ``symmetric=True`` averages the query→candidate and
    candidate→query cross-entropies, as CLIP does for image→text and text→image.

    With ``hard_negatives`` each query's logits are extended by its own hard negatives (query→candidate direction
    only): ``[in-batch candidates (B), own hard negatives (n_neg)]`` with target ``i``. UniIR's ``clip_sf`` orders
    them ``[positive, hard negatives, other in-batch positives]`` with target 0; cross-entropy is invariant to
    that permutation, so the two are the same loss (UniIR, Wei et al. 2023, https://arxiv.org/abs/2311.17136).

    With ``hard_negative_scope="batch"`` every hard negative in the batch is a negative for every query, exactly
    MM-Embed's eq. 1 (Lin et al. 2024, §4.1): the denominator runs over D_B = (c1+, c1-, ..., cB+, cB-), all
    positives and all hard negatives of the batch. The logits are ``[in-batch candidates (B), all hard negatives
    (M)]`` with target ``i``; ``hard_negatives`` may then also be a flat ``(M, D)`` tensor (queries may have
    different numbers of negatives). ``exclude`` (B, B + M) masks logits out of the denominator (True = drop), e.g.
    another query's positive or hard negative that is also a labelled positive of query ``i``; the target column is
    never dropped.

    Inputs:
        ``query`` (B, D) and ``candidate`` (B, D), aligned pairs; ``hard_negatives`` (B, n_neg, D), for the batch
        scope also (M, D), or None.

    Relations:
        With identical embeddings for every item the loss is ``log(B)`` (``log(B + n_neg)`` one-directional with
        hard negatives): the colpali sanity check. ``symmetric=False`` is the one-directional loss used by
        sentence-transformers' ``MultipleNegativesRankingLoss`` (scale = 1 / temperature).

    Args:
        query: Query embeddings, shape (B, D).
        candidate: Positive candidate embeddings, shape (B, D); row ``i`` matches query ``i``.
        temperature: Softmax temperature τ > 0; the logits are divided by it. Exclusive with ``logit_scale``.
        logit_scale: Multiplier ``1 / τ`` > 0, e.g. ``LearnableTemperature().logit_scale`` (gradients flow).
        hard_negatives: Per-query hard negatives, shape (B, n_neg, D), appended to the query→candidate logits.
        hard_negative_scope: ``"query"`` (each query sees its own hard negatives; UniIR) or ``"batch"`` (each query
            sees all of them; MM-Embed eq. 1).
        exclude: Optional boolean mask over the query→candidate logits, shape (B, B [+ n_neg or M]); True entries
            are left out of the softmax (a known false negative). The candidate→query direction is not masked.
        symmetric: Average the query→candidate and candidate→query losses (CLIP); else query→candidate only.
        normalize: L2-normalise all embeddings first (cosine similarity); pass False if they already are.

    Returns:
        Scalar loss tensor (mean over the batch).

    Raises:
        ValueError: On shape mismatches, an empty batch, or unless exactly one of temperature / logit_scale is a
            scalar (Python numbers must also be positive).

    Example:
        >>> import torch
        >>> q = torch.eye(3)
        >>> round(info_nce(q, q, logit_scale=100.0).item(), 6)
        0.0
        >>> ones = torch.ones(4, 2)
        >>> round(info_nce(ones, ones, temperature=0.07).item(), 6) == round(math.log(4), 6)
        True
    """
    if query.ndim != 2 or candidate.shape != query.shape:
        raise ValueError(
            f"query and candidate must both be (batch, dim); got {tuple(query.shape)} and {tuple(candidate.shape)}"
        )
    batch, dim = query.shape
    if batch == 0:
        raise ValueError("info_nce needs a non-empty batch")
    if hard_negative_scope not in HARD_NEGATIVE_SCOPES:
        raise ValueError(f"hard_negative_scope must be one of {HARD_NEGATIVE_SCOPES}, got {hard_negative_scope!r}")
    if hard_negatives is not None:
        flat_ok = hard_negative_scope == "batch" and hard_negatives.ndim == 2 and hard_negatives.shape[1] == dim
        per_query_ok = hard_negatives.ndim == 3 and hard_negatives.shape[0] == batch and hard_negatives.shape[2] == dim
        if not (flat_ok or per_query_ok):
            flat = " or (n, dim) with hard_negative_scope='batch'" if hard_negative_scope == "batch" else ""
            raise ValueError(
                f"hard_negatives must be (batch={batch}, n_neg, dim={dim}){flat}; got {tuple(hard_negatives.shape)}"
            )
    scale = _logit_scale(temperature, logit_scale).to(device=query.device)
    if normalize:
        query = F.normalize(query, dim=-1)
        candidate = F.normalize(candidate, dim=-1)
        if hard_negatives is not None:
            hard_negatives = F.normalize(hard_negatives, dim=-1)

    sim = query @ candidate.T  # (B, B): sim[i, j] = <q_i, c_j>; the diagonal holds the positives
    targets = torch.arange(batch, device=query.device)  # (B,)
    q2c = sim
    if hard_negatives is not None and hard_negative_scope == "batch":
        pool = hard_negatives.reshape(-1, dim)  # (M, D): every hard negative of the batch
        q2c = torch.cat([sim, query @ pool.T], dim=1)  # (B, B + M)
    elif hard_negatives is not None:
        hard = torch.einsum("bd,bnd->bn", query, hard_negatives)  # (B, n_neg): <q_i, h_{i,k}>
        q2c = torch.cat([sim, hard], dim=1)  # (B, B + n_neg); target i still points at c_i
    logits = scale * q2c
    if exclude is not None:
        if exclude.shape != q2c.shape:
            raise ValueError(f"exclude must have the logits' shape {tuple(q2c.shape)}, got {tuple(exclude.shape)}")
        drop = exclude.to(device=q2c.device, dtype=torch.bool).clone()
        drop[targets, targets] = False  # the positive always stays
        logits = logits.masked_fill(drop, float("-inf"))
    loss = F.cross_entropy(logits, targets)
    if symmetric:
        c2q = sim.T  # (B, B): row j scores candidate j against every query; hard negatives are not queries
        loss = (loss + F.cross_entropy(scale * c2q, targets)) / 2
    return loss


class LearnableTemperature(nn.Module):
    """CLIP's learnable temperature: stores ``log(1 / τ)`` and exposes ``logit_scale = exp(·)`` clamped at 100.

    CLIP (Radford et al. 2021, https://arxiv.org/abs/2103.00020) initialises τ = 0.07 and clamps the logit scale
    at 100 so training stays stable; the parameter is log-parameterised so it stays positive. Pass
    ``logit_scale`` to :func:`info_nce` (``info_nce(q, c, logit_scale=temp.logit_scale)``) and add the module's
    parameters to the optimiser.

    Args:
        temperature: Initial temperature τ > 0 (CLIP: 0.07).
        max_logit_scale: Upper clamp on ``1 / τ`` (CLIP: 100).

    Raises:
        ValueError: If ``temperature`` is not positive or the initial scale exceeds ``max_logit_scale``.

    Example:
        >>> temp = LearnableTemperature()
        >>> round(temp.logit_scale.item(), 4), round(temp.temperature.item(), 4)
        (14.2857, 0.07)
    """

    def __init__(self, temperature: float = 0.07, max_logit_scale: float = MAX_LOGIT_SCALE) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if 1.0 / temperature > max_logit_scale:
            raise ValueError(f"initial logit scale 1/{temperature} exceeds max_logit_scale={max_logit_scale}")
        self.max_logit_scale = max_logit_scale
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @property
    def logit_scale(self) -> torch.Tensor:
        """``exp(log_logit_scale)`` clamped to at most ``max_logit_scale``; a 0-d tensor that carries gradients."""
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    @property
    def temperature(self) -> torch.Tensor:
        """The current temperature ``1 / logit_scale`` (0-d tensor)."""
        return 1.0 / self.logit_scale

    def forward(self) -> torch.Tensor:
        """Return :attr:`logit_scale`, so the module can be called like any other."""
        return self.logit_scale

    def extra_repr(self) -> str:
        """Show the current temperature in ``repr``."""
        return f"temperature={self.temperature.item():.4g}, max_logit_scale={self.max_logit_scale}"
