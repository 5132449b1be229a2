"""LamRA-Rank losses (§3.4) against values computed by hand on tiny logits."""

from __future__ import annotations

import math

import pytest
import torch

from lumir.train.reranker import answer_loss, lamra_rank_loss, listwise_loss, pointwise_loss


def _ce(row: list[float], target: int) -> float:
    """-log softmax(row)[target], by hand."""
    return -(row[target] - math.log(sum(math.exp(v) for v in row)))


def test_answer_loss_is_full_vocabulary_cross_entropy() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, math.log(2.0)]])
    expected = (_ce([1.0, 2.0, 3.0], 0) + _ce([0.0, 0.0, math.log(2.0)], 2)) / 2  # (2.4076 + 0.6931) / 2
    assert float(answer_loss(logits, torch.tensor([0, 2]))) == pytest.approx(expected, abs=1e-6)
    assert float(answer_loss(logits[1:], torch.tensor([2]))) == pytest.approx(math.log(2.0), abs=1e-6)  # 2/4
    with pytest.raises(ValueError, match=r"\(B, V\)"):
        answer_loss(torch.zeros(3), torch.tensor([0]))


def test_pointwise_loss_is_yes_on_positives_plus_no_on_negatives() -> None:
    # vocabulary [NO, YES, other]; two queries
    pos = torch.tensor([[0.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
    neg = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    yes_part = (_ce([0.0, 2.0, 0.0], 1) + math.log(3.0)) / 2
    no_part = (_ce([3.0, 0.0, 0.0], 0) + math.log(3.0)) / 2
    got = float(pointwise_loss(pos, neg, yes_id=1, no_id=0))
    assert got == pytest.approx(yes_part + no_part, abs=1e-6)
    assert got == pytest.approx(((0.2395 + 1.0986) + (0.0949 + 1.0986)) / 2, abs=1e-3)  # the numbers themselves
    # a perfect reranker has (almost) no loss; swapping the answers costs a lot
    sure_yes, sure_no = torch.tensor([[-20.0, 20.0]]), torch.tensor([[20.0, -20.0]])
    assert float(pointwise_loss(sure_yes, sure_no, yes_id=1, no_id=0)) < 1e-6
    assert float(pointwise_loss(sure_no, sure_yes, yes_id=1, no_id=0)) > 79


def test_listwise_loss_targets_the_positive_position_token() -> None:
    # vocabulary ["1", "2", "3", "x"]; the positive is at position 2, then at position 3
    logits = torch.tensor([[0.0, math.log(3.0), 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    expected = (_ce([0.0, math.log(3.0), 0.0, 0.0], 1) + math.log(4.0)) / 2  # (-log(3/6) + log 4) / 2
    assert float(listwise_loss(logits, torch.tensor([1, 2]))) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx((math.log(2.0) + math.log(4.0)) / 2)


def test_lamra_rank_loss_is_the_sum_of_both_terms() -> None:
    pos, neg = torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0]])
    lst, target = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([2])
    point = float(pointwise_loss(pos, neg, yes_id=1, no_id=0))
    lists = float(listwise_loss(lst, target))
    both = float(lamra_rank_loss((pos, neg), (lst, target), yes_id=1, no_id=0))
    assert both == pytest.approx(point + lists, abs=1e-6)
    assert both == pytest.approx(_ce([0.0, 2.0, 0.0], 1) + math.log(3.0) + _ce([1.0, 0.0, 0.0], 2), abs=1e-6)
    weighted = float(lamra_rank_loss((pos, neg), (lst, target), yes_id=1, no_id=0, point_weight=2, list_weight=0.5))
    assert weighted == pytest.approx(2 * point + 0.5 * lists, abs=1e-6)
    assert float(lamra_rank_loss(None, (lst, target), yes_id=1, no_id=0)) == pytest.approx(lists)
    assert float(lamra_rank_loss((pos, neg), None, yes_id=1, no_id=0)) == pytest.approx(point)
    with pytest.raises(ValueError, match="pointwise or the listwise"):
        lamra_rank_loss(None, None, yes_id=1, no_id=0)


def test_losses_have_gradients_only_through_the_logits() -> None:
    logits = torch.zeros(2, 3, requires_grad=True)
    pointwise_loss(logits[:1], logits[1:], yes_id=1, no_id=0).backward()
    assert logits.grad is not None
    # d CE / d logits = softmax - onehot: [1/3, -2/3, 1/3] for YES, [-2/3, 1/3, 1/3] for NO
    torch.testing.assert_close(logits.grad, torch.tensor([[1 / 3, -2 / 3, 1 / 3], [-2 / 3, 1 / 3, 1 / 3]]))
