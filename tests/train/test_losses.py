"""Contrastive losses vs hand-computed values, analytic identities (colpali's log(B) trick) and a reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lumir.train import LearnableTemperature, info_nce
from lumir.train.losses import MAX_LOGIT_SCALE


def _reference(
    query: torch.Tensor, candidate: torch.Tensor, scale: float, hard: torch.Tensor | None, symmetric: bool
) -> torch.Tensor:
    """UniIR clip_sf layout, row by row: logits [positive, own hard negatives, other in-batch positives], target 0."""
    q, c = F.normalize(query, dim=-1), F.normalize(candidate, dim=-1)
    h = F.normalize(hard, dim=-1) if hard is not None else None
    batch = q.shape[0]
    q2c = []
    for i in range(batch):
        cands = [c[i]] + ([*h[i]] if h is not None else []) + [c[j] for j in range(batch) if j != i]
        logits = scale * torch.stack([q[i] @ x for x in cands])
        q2c.append(F.cross_entropy(logits.unsqueeze(0), torch.tensor([0])))
    loss = torch.stack(q2c).mean()
    if symmetric:
        c2q = [
            F.cross_entropy((scale * torch.stack([c[j] @ q[i] for i in range(batch)])).unsqueeze(0), torch.tensor([j]))
            for j in range(batch)
        ]
        loss = (loss + torch.stack(c2q).mean()) / 2
    return loss


# --- hand-computed 2x2 cases -------------------------------------------------------------------------------------

# q = [[1, 0], [0, 1]], c = [[1, 0], [0.6, 0.8]] (unit rows), logit_scale 1: sim = q @ c.T = [[1, 0.6], [0, 0.8]].
# q->c  row 0: logits [1, 0.6], target 0: -1 + log(e^1 + e^0.6) = log(1 + e^-0.4) = 0.5130153
#       row 1: logits [0, 0.8], target 1: log(1 + e^-0.8) = 0.3711007            mean = 0.4420580
# c->q  (sim.T = [[1, 0], [0.6, 0.8]]) row 0: log(1 + e^-1) = 0.3132617
#       row 1: logits [0.6, 0.8], target 1: log(1 + e^-0.2) = 0.5981389          mean = 0.4557003
# symmetric = (0.4420580 + 0.4557003) / 2 = 0.4488791
Q2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
C2 = torch.tensor([[1.0, 0.0], [0.6, 0.8]])


def test_hand_2x2_one_directional() -> None:
    loss = info_nce(Q2, C2, logit_scale=1.0, symmetric=False)
    assert loss.item() == pytest.approx(0.4420580, abs=1e-6)


def test_hand_2x2_symmetric() -> None:
    loss = info_nce(Q2, C2, logit_scale=1.0)
    assert loss.item() == pytest.approx(0.4488791, abs=1e-6)


def test_hand_2x2_temperature_equals_logit_scale() -> None:
    # temperature 0.5 <=> logit_scale 2
    assert info_nce(Q2, C2, temperature=0.5).item() == pytest.approx(info_nce(Q2, C2, logit_scale=2.0).item())


def test_hand_2x2_unnormalised() -> None:
    # normalize=False, q = I, c = [[1, 0], [1, 1]]: sim = [[1, 1], [0, 1]]; logit_scale 2 -> logits [[2, 2], [0, 2]].
    # row 0: log(e^2 + e^2) - 2 = log 2 = 0.6931472; row 1: log(1 + e^-2) = 0.1269280; mean = 0.4100376
    c = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    loss = info_nce(Q2, c, logit_scale=2.0, symmetric=False, normalize=False)
    assert loss.item() == pytest.approx(0.4100376, abs=1e-6)
    # normalising changes c_1 to [0.7071, 0.7071], so the value differs
    assert info_nce(Q2, c, logit_scale=2.0, symmetric=False).item() != pytest.approx(0.4100376, abs=1e-3)


def test_hand_2x2_with_hard_negative() -> None:
    # q = c = I, one hard negative h = [0.6, 0.8] per query, logit_scale 1, one-directional.
    # row 0: logits [<q0,c0>, <q0,c1>, <q0,h>] = [1, 0, 0.6], target 0: log(1 + e^-1 + e^-0.4) = 0.7120668
    # row 1: logits [0, 1, 0.8], target 1: log(e^-1 + 1 + e^-0.2) = 0.7823525                 mean = 0.7472097
    hard = torch.tensor([[[0.6, 0.8]], [[0.6, 0.8]]])  # (B=2, n_neg=1, D=2)
    loss = info_nce(Q2, Q2, logit_scale=1.0, hard_negatives=hard, symmetric=False)
    assert loss.item() == pytest.approx(0.7472097, abs=1e-6)
    # symmetric: c->q on sim = I is log(1 + e^-1) = 0.3132617 per row -> (0.7472097 + 0.3132617) / 2
    sym = info_nce(Q2, Q2, logit_scale=1.0, hard_negatives=hard)
    assert sym.item() == pytest.approx((0.7472097 + 0.3132617) / 2, abs=1e-6)


# --- analytic identities -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 5, 16])
@pytest.mark.parametrize("symmetric", [True, False])
def test_identical_embeddings_give_log_batch(batch: int, symmetric: bool) -> None:
    # colpali's trick: all logits equal -> uniform softmax -> CE = log(B), whatever the scale
    x = torch.full((batch, 8), 0.3)
    loss = info_nce(x, x.clone(), temperature=0.05, symmetric=symmetric)
    assert loss.item() == pytest.approx(math.log(batch), abs=1e-5)


@pytest.mark.parametrize(("batch", "n_neg"), [(1, 1), (3, 2), (8, 7)])
def test_identical_embeddings_with_hard_negatives_give_log_b_plus_n(batch: int, n_neg: int) -> None:
    x = torch.ones(batch, 4)
    hard = torch.ones(batch, n_neg, 4)
    one_dir = info_nce(x, x, logit_scale=20.0, hard_negatives=hard, symmetric=False)
    assert one_dir.item() == pytest.approx(math.log(batch + n_neg), abs=1e-5)
    # hard negatives only enter q->c; c->q stays log(B)
    sym = info_nce(x, x, logit_scale=20.0, hard_negatives=hard)
    assert sym.item() == pytest.approx((math.log(batch + n_neg) + math.log(batch)) / 2, abs=1e-5)


def test_perfect_alignment_high_scale_is_near_zero() -> None:
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))  # orthonormal rows
    q = basis[:6] * 3.0  # norms do not matter after normalisation
    hard = -basis[:6].unsqueeze(1).expand(6, 2, 16)  # anti-aligned hard negatives
    assert info_nce(q, basis[:6], logit_scale=MAX_LOGIT_SCALE).item() < 1e-6
    assert info_nce(q, basis[:6], logit_scale=MAX_LOGIT_SCALE, hard_negatives=hard).item() < 1e-6


def test_symmetric_equals_one_directional_on_symmetric_similarity() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 5, generator=g)
    # candidate == query -> sim = x x^T is symmetric, so q->c and c->q are the same cross-entropy
    assert info_nce(x, x, temperature=0.1).item() == pytest.approx(
        info_nce(x, x, temperature=0.1, symmetric=False).item(), abs=1e-6
    )
    # and on a non-symmetric one they differ (hand case above: 0.4420580 vs 0.4488791)
    assert info_nce(Q2, C2, logit_scale=1.0).item() != pytest.approx(
        info_nce(Q2, C2, logit_scale=1.0, symmetric=False).item(), abs=1e-4
    )


def test_normalize_makes_loss_scale_invariant() -> None:
    g = torch.Generator().manual_seed(2)
    q, c = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    scales = torch.tensor([[0.5], [2.0], [10.0], [0.1]])
    assert info_nce(q * scales, c, temperature=0.07).item() == pytest.approx(
        info_nce(q, c, temperature=0.07).item(), abs=1e-5
    )


# --- reference implementation on random inputs -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("n_neg", [0, 3])
def test_matches_reference(seed: int, symmetric: bool, n_neg: int) -> None:
    g = torch.Generator().manual_seed(seed)
    batch, dim, scale = 5, 12, 1 / 0.07
    q, c = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
    hard = torch.randn(batch, n_neg, dim, generator=g) if n_neg else None
    got = info_nce(q, c, logit_scale=scale, hard_negatives=hard, symmetric=symmetric)
    want = _reference(q, c, scale, hard, symmetric)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_gradients_match_reference() -> None:
    g = torch.Generator().manual_seed(3)
    q = torch.randn(4, 8, generator=g, requires_grad=True)
    c = torch.randn(4, 8, generator=g, requires_grad=True)
    hard = torch.randn(4, 2, 8, generator=g, requires_grad=True)
    got = torch.autograd.grad(info_nce(q, c, logit_scale=10.0, hard_negatives=hard), (q, c, hard))
    want = torch.autograd.grad(_reference(q, c, 10.0, hard, True), (q, c, hard))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# --- learnable temperature ---------------------------------------------------------------------------------------


def test_learnable_temperature_init() -> None:
    temp = LearnableTemperature()
    assert temp.log_logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert temp.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-6)
    assert temp.temperature.item() == pytest.approx(0.07, rel=1e-6)
    assert temp().item() == pytest.approx(1 / 0.07, rel=1e-6)
    assert LearnableTemperature(0.05).logit_scale.item() == pytest.approx(20.0, rel=1e-6)
    assert [n for n, _ in temp.named_parameters()] == ["log_logit_scale"]


def test_learnable_temperature_clamped_at_100() -> None:
    temp = LearnableTemperature()
    with torch.no_grad():
        temp.log_logit_scale.fill_(math.log(500.0))
    assert temp.logit_scale.item() == pytest.approx(MAX_LOGIT_SCALE)
    assert temp.temperature.item() == pytest.approx(0.01)


def test_gradient_flows_to_temperature() -> None:
    g = torch.Generator().manual_seed(4)
    q, c = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    temp = LearnableTemperature()
    loss = info_nce(q, c, logit_scale=temp.logit_scale)
    loss.backward()
    grad = temp.log_logit_scale.grad
    assert grad is not None
    assert torch.isfinite(grad)
    assert grad.item() != 0.0
    before = temp.log_logit_scale.item()
    torch.optim.SGD(temp.parameters(), lr=0.1).step()
    assert temp.log_logit_scale.item() != before


def test_temperature_gradient_sign_on_aligned_batch() -> None:
    # perfectly separable batch: sharpening (higher scale) lowers the loss, so d loss / d log_scale < 0
    temp = LearnableTemperature(0.5)
    info_nce(torch.eye(4), torch.eye(4), logit_scale=temp.logit_scale).backward()
    assert temp.log_logit_scale.grad is not None
    assert temp.log_logit_scale.grad.item() < 0


def test_learnable_temperature_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="positive"):
        LearnableTemperature(0.0)
    with pytest.raises(ValueError, match="max_logit_scale"):
        LearnableTemperature(0.001)


# --- validation --------------------------------------------------------------------------------------------------


def test_requires_exactly_one_of_temperature_and_logit_scale() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        info_nce(Q2, C2)
    with pytest.raises(ValueError, match="exactly one"):
        info_nce(Q2, C2, temperature=0.1, logit_scale=10.0)
    with pytest.raises(ValueError, match="positive"):
        info_nce(Q2, C2, temperature=-0.1)
    with pytest.raises(ValueError, match="positive"):
        info_nce(Q2, C2, logit_scale=0.0)
    with pytest.raises(ValueError, match="scalar"):
        info_nce(Q2, C2, logit_scale=torch.ones(2))


def test_tensor_temperature_carries_gradient() -> None:
    tau = torch.tensor(0.5, requires_grad=True)
    loss = info_nce(Q2, C2, temperature=tau)
    assert loss.item() == pytest.approx(info_nce(Q2, C2, logit_scale=2.0).item())
    loss.backward()
    assert tau.grad is not None
    assert tau.grad.item() != 0.0


@pytest.mark.parametrize(
    ("query", "candidate", "hard"),
    [
        (torch.ones(2, 3), torch.ones(3, 3), None),
        (torch.ones(2, 3), torch.ones(2, 4), None),
        (torch.ones(3), torch.ones(3), None),
        (torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3)),
        (torch.ones(2, 3), torch.ones(2, 3), torch.ones(3, 1, 3)),
        (torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 1, 4)),
        (torch.ones(0, 3), torch.ones(0, 3), None),
    ],
)
def test_rejects_bad_shapes(query: torch.Tensor, candidate: torch.Tensor, hard: torch.Tensor | None) -> None:
    with pytest.raises(ValueError):
        info_nce(query, candidate, temperature=0.1, hard_negatives=hard)


# --- MM-Embed eq. 1: every hard negative of the batch is a negative for every query ------------------------------

# q = c = I (2x2), h_0 = [0.6, 0.8] (query 0's), h_1 = [0.8, 0.6] (query 1's), scale 1, query->candidate only.
# batch scope, row 0: logits [q0.c0, q0.c1, q0.h0, q0.h1] = [1, 0, 0.6, 0.8], target 0
#   -> -1 + log(e + 1 + e^0.6 + e^0.8); row 1 is [0, 1, 0.8, 0.6], target 1: the same value.
# query scope, row 0: [1, 0, 0.6] -> -1 + log(e + 1 + e^0.6); row 1: [0, 1, 0.6] -> the same.
HARD_PAIR = torch.tensor([[[0.6, 0.8]], [[0.8, 0.6]]])
BATCH_SCOPE = -1 + math.log(math.e + 1 + math.exp(0.6) + math.exp(0.8))
QUERY_SCOPE = -1 + math.log(math.e + 1 + math.exp(0.6))


def test_batch_scope_hand_computed() -> None:
    eye = torch.eye(2)
    loss = info_nce(eye, eye, logit_scale=1.0, hard_negatives=HARD_PAIR, hard_negative_scope="batch", symmetric=False)
    assert loss.item() == pytest.approx(BATCH_SCOPE, abs=1e-6)
    own = info_nce(eye, eye, logit_scale=1.0, hard_negatives=HARD_PAIR, symmetric=False)
    assert own.item() == pytest.approx(QUERY_SCOPE, abs=1e-6)


def test_batch_scope_accepts_a_flat_pool() -> None:
    eye = torch.eye(2)
    flat = HARD_PAIR.reshape(2, 2)
    loss = info_nce(eye, eye, logit_scale=1.0, hard_negatives=flat, hard_negative_scope="batch", symmetric=False)
    assert loss.item() == pytest.approx(BATCH_SCOPE, abs=1e-6)
    with pytest.raises(ValueError, match="hard_negatives must be"):
        info_nce(eye, eye, logit_scale=1.0, hard_negatives=flat, symmetric=False)  # flat needs the batch scope


def test_batch_scope_matches_a_loop_reference() -> None:
    gen = torch.Generator().manual_seed(3)
    q, c, h = torch.randn(5, 8, generator=gen), torch.randn(5, 8, generator=gen), torch.randn(5, 3, 8, generator=gen)
    qn, cn, hn = F.normalize(q, dim=-1), F.normalize(c, dim=-1), F.normalize(h.reshape(15, 8), dim=-1)
    rows = []
    for i in range(5):
        pool = torch.cat([cn, hn])  # D_B: all positives and all hard negatives of the batch
        rows.append(F.cross_entropy((20.0 * pool @ qn[i]).unsqueeze(0), torch.tensor([i])))
    expected = torch.stack(rows).mean()
    got = info_nce(q, c, logit_scale=20.0, hard_negatives=h, hard_negative_scope="batch", symmetric=False)
    assert got.item() == pytest.approx(expected.item(), abs=1e-5)


def test_exclude_drops_a_false_negative_but_never_the_positive() -> None:
    eye = torch.eye(2)
    exclude = torch.zeros(2, 4, dtype=torch.bool)
    exclude[0, 3] = True  # row 0 forgets h_1 -> [1, 0, 0.6]
    exclude[1, 1] = True  # the target column is ignored in the mask
    loss = info_nce(
        eye, eye, logit_scale=1.0, hard_negatives=HARD_PAIR, hard_negative_scope="batch", exclude=exclude,
        symmetric=False,
    )  # fmt: skip
    assert loss.item() == pytest.approx((QUERY_SCOPE + BATCH_SCOPE) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="exclude must have"):
        info_nce(eye, eye, logit_scale=1.0, exclude=torch.zeros(2, 3, dtype=torch.bool))


def test_unknown_scope_is_an_error() -> None:
    with pytest.raises(ValueError, match="hard_negative_scope"):
        info_nce(Q2, C2, logit_scale=1.0, hard_negative_scope="global")
