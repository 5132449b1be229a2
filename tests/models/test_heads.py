"""Projection heads: config round trip, standardisation, feature selection, dropout, option checks."""

from __future__ import annotations

import pytest
import torch

from lumir.models.heads import ProjectionHead, build_head


def test_config_round_trip_builds_the_same_architecture() -> None:
    head = ProjectionHead(10, 4, kind="mlp", hidden=6, select=[[0, 3], [5, 9]], input_dropout=0.5, dropout=0.1)
    clone = build_head(head.config())
    assert clone.config() == head.config()
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in head.state_dict().items()}
    clone.load_state_dict(head.state_dict())
    head.eval(), clone.eval()
    x = torch.randn(3, 10)
    torch.testing.assert_close(clone(x), head(x))


def test_select_reads_only_the_chosen_slices() -> None:
    head = ProjectionHead(6, 2, select=[[1, 3], [4, 5]]).eval()
    assert head.width == 3
    x = torch.randn(2, 6)
    changed = x.clone()
    changed[:, [0, 3, 5]] += 100.0  # columns outside the selection
    torch.testing.assert_close(head(changed), head(x))
    manual = head.linear(x[:, [1, 2, 4]])
    torch.testing.assert_close(head(x), manual)


def test_standardizer_uses_training_statistics() -> None:
    head = ProjectionHead(3, 2).eval()
    feats = torch.tensor([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0]])
    head.fit_standardizer(feats)
    torch.testing.assert_close(head.mean, torch.tensor([2.0, 20.0, 5.0]))
    assert head.std[0] == pytest.approx(2**0.5) and head.std[1] == pytest.approx(10 * 2**0.5)
    assert head.std[2] == pytest.approx(1e-6)  # a constant feature: clamped, not a division by zero
    torch.testing.assert_close(head(feats[:1]), head.linear(torch.tensor([[-(2**-0.5), -(2**-0.5), 0.0]])))
    assert "mean" in head.state_dict() and "std" in head.state_dict()  # statistics are saved with the weights


def test_mlp_head_adds_a_linear_skip_path() -> None:
    head = ProjectionHead(4, 3, kind="mlp").eval()
    assert head.mlp is not None
    x = torch.randn(5, 4)
    torch.testing.assert_close(head(x), head.linear(x) + head.mlp(x))


def test_dropout_only_in_training_mode() -> None:
    head = ProjectionHead(50, 8, input_dropout=0.5)
    x = torch.randn(4, 50)
    head.train()
    assert not torch.allclose(head(x), head(x))
    head.eval()
    torch.testing.assert_close(head(x), head(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "transformer"}, "head kind must be one of"),
        ({"select": [[0, 20]]}, "select spans"),
        ({"select": [[3, 3]]}, "select spans"),
        ({"input_dropout": 1.0}, "input_dropout must be in"),
        ({"dropout": -0.1}, "dropout must be in"),
    ],
)
def test_invalid_options_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProjectionHead(10, 4, **kwargs)  # type: ignore[arg-type]


def test_build_head_names_unknown_options() -> None:
    with pytest.raises(TypeError, match=r"unknown head option\(s\) \['depth'\]"):
        build_head({"in_dim": 4, "out_dim": 2, "depth": 3})
