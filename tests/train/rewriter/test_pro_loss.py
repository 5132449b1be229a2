"""pro_loss (MGQRe eq. 3) against values computed by hand, and the ranking counts."""

from __future__ import annotations

import math

import pytest
import torch

from lumir.train.rewriter.pro import pro_loss, ranking_accuracy


def _t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_two_candidates_is_a_scaled_bradley_terry() -> None:
    # k = 2: T_1^2 = T_1^1 = 1/(r1 - r2) = 2, so the loss is -log σ((π1 - π2)(r1 - r2)) = softplus(-(−1 + 2)·0.5)
    loss = pro_loss(_t([-1.0, -2.0]), _t([0.9, 0.4]))
    assert float(loss) == pytest.approx(math.log1p(math.exp(-0.5)), abs=1e-12)


def test_three_candidates_by_hand() -> None:
    a, b, c = -1.0, -1.5, -0.5
    r1, r2, r3 = 1.0, 0.7, 0.2
    # j = 1: T_1^2 = 1/0.3, T_1^3 = 1/0.8, T_1^1 = min = 1/0.8
    e1 = math.exp(a * 0.8)
    term1 = -math.log(e1 / (e1 + math.exp(b * 0.3) + math.exp(c * 0.8)))
    # j = 2: T_2^3 = T_2^2 = 1/0.5
    e2 = math.exp(b * 0.5)
    term2 = -math.log(e2 / (e2 + math.exp(c * 0.5)))
    loss = pro_loss(_t([a, b, c]), _t([r1, r2, r3]))
    assert float(loss) == pytest.approx(term1 + term2, abs=1e-12)


def test_batch_mean_and_mask_match_rows_alone() -> None:
    full = _t([-1.0, -1.5, -0.5], [-2.0, -1.0, 123.0])
    rewards = _t([1.0, 0.7, 0.2], [0.8, 0.3, 0.0])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    alone = [pro_loss(_t([-1.0, -1.5, -0.5]), _t([1.0, 0.7, 0.2])), pro_loss(_t([-2.0, -1.0]), _t([0.8, 0.3]))]
    loss = pro_loss(full, rewards, mask)
    assert float(loss) == pytest.approx(float(sum(alone)) / 2, abs=1e-12)  # the padded 123.0 is ignored
    # the padded reward may even break the order: masked entries are not checked
    assert float(pro_loss(full, _t([1.0, 0.7, 0.2], [0.8, 0.3, 9.0]), mask)) == pytest.approx(float(loss))


def test_a_tie_means_no_preference() -> None:
    loss = pro_loss(_t([-1.0, -3.0]), _t([0.5, 0.5]), tie_eps=1e-6)
    # gap floored at eps: softplus(-(π1 - π2)·eps) ≈ log 2
    assert float(loss) == pytest.approx(math.log1p(math.exp(-2.0 * 1e-6)), abs=1e-12)
    logps = _t([-1.0, -3.0]).requires_grad_()
    pro_loss(logps, _t([0.5, 0.5])).backward()
    assert logps.grad is not None and logps.grad.abs().max() < 1e-5
    # a tie below the best: the tied pair adds exp(π·eps) ≈ 1 terms, still finite and ordered
    assert torch.isfinite(pro_loss(_t([-1.0, -2.0, -2.5]), _t([0.9, 0.3, 0.3])))


def test_gradient_raises_the_best_and_lowers_the_worst() -> None:
    logps = _t([-2.0, -1.0, -0.5]).requires_grad_()
    pro_loss(logps, _t([0.9, 0.5, 0.1])).backward()
    assert logps.grad is not None
    assert logps.grad[0, 0] < 0 < logps.grad[0, 2]  # descent raises π_1 and lowers π_3
    # a step of gradient descent lowers the loss
    with torch.no_grad():
        stepped = logps - 0.1 * logps.grad
    assert pro_loss(stepped, _t([0.9, 0.5, 0.1])) < pro_loss(logps.detach(), _t([0.9, 0.5, 0.1]))


def test_sft_weight_adds_the_best_candidates_nll() -> None:
    logps, rewards = _t([-1.0, -2.0], [-3.0, -0.5]), _t([0.9, 0.4], [0.8, 0.2])
    base = pro_loss(logps, rewards)
    assert float(pro_loss(logps, rewards, sft_weight=0.5)) == pytest.approx(float(base) + 0.5 * 2.0, abs=1e-12)


def test_unordered_lists_and_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="best-first"):
        pro_loss(_t([-1.0, -2.0]), _t([0.1, 0.4]))
    with pytest.raises(ValueError, match=r"\(B, k\)"):
        pro_loss(torch.zeros(2), torch.zeros(2))


def test_ranking_accuracy_counts() -> None:
    logps = _t([-1.0, -2.0, -0.5], [-0.1, -0.2, 0.0])
    counts = ranking_accuracy(logps, _t([3.0, 2.0, 1.0], [3.0, 3.0, 0.0]), torch.tensor([[1, 1, 1], [1, 1, 0]]))
    # row 1: best not on top; pairs (1,2) right, (1,3) wrong, (2,3) wrong. row 2: best on top; its one pair is a tie
    assert counts == {"lists": 2, "top1_hits": 1, "pairs": 3, "pair_hits": 1}
