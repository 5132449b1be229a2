"""Pooling functions vs manual loops on toy tensors."""

from __future__ import annotations

import math

import pytest
import torch

from lumir.models.pooling import (
    cls_pool,
    l2_normalize,
    last_token_pool,
    max_pool,
    mean_pool,
    mean_sqrt_len_pool,
    pool,
)


@pytest.fixture
def toy() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 4, generator=g)  # (batch, seq, dim)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])  # right padding
    return hidden, mask


def _real(hidden: torch.Tensor, mask: torch.Tensor, row: int) -> torch.Tensor:
    return torch.stack([hidden[row, t] for t in range(hidden.shape[1]) if mask[row, t] == 1])


def test_mean_pool_matches_manual(toy: tuple[torch.Tensor, torch.Tensor]) -> None:
    hidden, mask = toy
    expected = torch.stack([_real(hidden, mask, r).mean(0) for r in range(3)])
    torch.testing.assert_close(mean_pool(hidden, mask), expected)


def test_mean_sqrt_len_pool_matches_manual(toy: tuple[torch.Tensor, torch.Tensor]) -> None:
    hidden, mask = toy
    expected = torch.stack([_real(hidden, mask, r).sum(0) / math.sqrt(int(mask[r].sum())) for r in range(3)])
    torch.testing.assert_close(mean_sqrt_len_pool(hidden, mask), expected)


def test_max_pool_ignores_padding(toy: tuple[torch.Tensor, torch.Tensor]) -> None:
    hidden, mask = toy
    hidden = hidden.clone()
    hidden[0, 3:] = 100.0  # padding with huge values must never win
    expected = torch.stack([_real(hidden, mask, r).max(0).values for r in range(3)])
    torch.testing.assert_close(max_pool(hidden, mask), expected)


def test_cls_pool_is_first_position(toy: tuple[torch.Tensor, torch.Tensor]) -> None:
    hidden, mask = toy
    torch.testing.assert_close(cls_pool(hidden, mask), hidden[:, 0])


def test_last_token_pool_right_padding(toy: tuple[torch.Tensor, torch.Tensor]) -> None:
    hidden, mask = toy
    expected = torch.stack([hidden[0, 2], hidden[1, 4], hidden[2, 0]])
    torch.testing.assert_close(last_token_pool(hidden, mask), expected)


def test_last_token_pool_left_padding(toy: tuple[torch.Tensor, torch.Tensor]) -> None:
    hidden, _ = toy
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    torch.testing.assert_close(last_token_pool(hidden, mask), hidden[:, 4])


def test_pool_concatenates_in_sentence_transformers_order(toy: tuple[torch.Tensor, torch.Tensor]) -> None:
    hidden, mask = toy
    out = pool(hidden, mask, ["mean", "cls"])  # order given does not matter: cls, max, mean, ...
    torch.testing.assert_close(out, torch.cat([cls_pool(hidden, mask), mean_pool(hidden, mask)], dim=-1))
    assert out.shape == (3, 8)


def test_pool_rejects_unknown_mode(toy: tuple[torch.Tensor, torch.Tensor]) -> None:
    hidden, mask = toy
    with pytest.raises(ValueError, match="weightedmean"):
        pool(hidden, mask, "weightedmean")
    with pytest.raises(ValueError, match="no pooling mode"):
        pool(hidden, mask, [])


def test_mask_shape_mismatch_is_an_error(toy: tuple[torch.Tensor, torch.Tensor]) -> None:
    hidden, mask = toy
    with pytest.raises(ValueError, match="mask shape"):
        mean_pool(hidden, mask[:, :4])


def test_l2_normalize_unit_rows_and_zero_rows() -> None:
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    out = l2_normalize(x)
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8], [0.0, 0.0]]))
    torch.testing.assert_close(out, torch.nn.functional.normalize(x, dim=-1))
