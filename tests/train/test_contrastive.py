"""Contrastive trainer: batching, schedule, config checks, learning, frozen parameters, logging, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from lumir.models.heads import ProjectionHead
from lumir.train.contrastive import (
    ContrastiveConfig,
    ContrastiveData,
    ContrastiveTrainer,
    cosine_lr,
    no_duplicate_batches,
)


def _paired_data(n_candidates: int = 48, captions_per: int = 3, d_q: int = 12, d_c: int = 20) -> ContrastiveData:
    """Queries are a fixed random linear map of their candidate's features plus noise: learnable structure."""
    g = torch.Generator().manual_seed(1)
    cands = torch.randn(n_candidates, 2, d_c, generator=g)
    cands[:, 1] = cands[:, 0] + 0.1 * torch.randn(n_candidates, d_c, generator=g)  # a second "view"
    mix = torch.randn(d_c, d_q, generator=g)
    positives = torch.arange(n_candidates).repeat_interleave(captions_per)
    queries = cands[positives, 0] @ mix + 0.3 * torch.randn(len(positives), d_q, generator=g)
    return ContrastiveData(queries, cands, positives)


def _heads(data: ContrastiveData, dim: int = 8) -> tuple[ProjectionHead, ProjectionHead]:
    torch.manual_seed(0)
    return ProjectionHead(data.queries.shape[1], dim), ProjectionHead(data.candidates.shape[2], dim, kind="mlp")


def _config(**overrides: object) -> ContrastiveConfig:
    values: dict[str, object] = {"epochs": 6, "batch_size": 16, "lr": 0.01, "warmup_steps": 2, "log_every": 1}
    values.update(overrides)
    return ContrastiveConfig.from_dict(values)


# --- batching and schedule ---------------------------------------------------------------------------------------


def test_no_duplicate_batches_cover_every_query_once_without_repeated_candidates() -> None:
    positives = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 5, 6])
    batches = no_duplicate_batches(positives, 4, torch.Generator().manual_seed(3))
    flat = torch.cat(batches).tolist()
    assert sorted(flat) == list(range(len(positives)))
    for b in batches:
        pos = positives[b].tolist()
        assert len(pos) == len(set(pos)) <= 4


def test_no_duplicate_batches_are_seeded() -> None:
    positives = torch.arange(30) % 7
    a = no_duplicate_batches(positives, 5, torch.Generator().manual_seed(0))
    b = no_duplicate_batches(positives, 5, torch.Generator().manual_seed(0))
    c = no_duplicate_batches(positives, 5, torch.Generator().manual_seed(1))
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    assert [x.tolist() for x in a] != [x.tolist() for x in c]


def test_cosine_lr_warmup_peak_and_end() -> None:
    assert cosine_lr(0, 100, 4, 2.0) == pytest.approx(0.5)
    assert cosine_lr(3, 100, 4, 2.0) == pytest.approx(2.0)
    assert cosine_lr(4, 100, 4, 2.0) == pytest.approx(2.0)
    assert cosine_lr(52, 100, 4, 2.0) == pytest.approx(1.0)
    assert cosine_lr(100, 100, 4, 2.0) == pytest.approx(0.0, abs=1e-12)


def test_drop_last_keeps_only_full_batches() -> None:
    data = _paired_data(n_candidates=20, captions_per=1)
    q, c = _heads(data)
    full = ContrastiveTrainer(q, c, data, _config(batch_size=8), "unused")
    assert full.steps_per_epoch == 2  # 20 queries: two batches of 8, the 4 left over are dropped
    kept = ContrastiveTrainer(q, c, data, _config(batch_size=8, drop_last=False), "unused")
    assert kept.steps_per_epoch == 3
    tiny = ContrastiveTrainer(q, c, data, _config(batch_size=64), "unused")
    assert tiny.steps_per_epoch == 1  # nothing would be full: the one partial batch is kept


# --- config and data checks --------------------------------------------------------------------------------------


def test_config_rejects_unknown_and_invalid_options() -> None:
    with pytest.raises(ValueError, match=r"unknown train option\(s\) \['epoch'\]"):
        ContrastiveConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="batch_size"):
        ContrastiveConfig(batch_size=1)
    with pytest.raises(ValueError, match="view_sampling"):
        ContrastiveConfig(view_sampling="all")
    with pytest.raises(ValueError, match="positive"):
        ContrastiveConfig(lr=0.0)


def test_data_checks_shapes_and_ranges() -> None:
    with pytest.raises(ValueError, match="positives must have shape"):
        ContrastiveData(torch.zeros(3, 2), torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="out of range"):
        ContrastiveData(torch.zeros(2, 2), torch.zeros(2, 4), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="hard_negatives"):
        ContrastiveData(
            torch.zeros(2, 2), torch.zeros(2, 4), torch.tensor([0, 1]), torch.zeros(3, 1, dtype=torch.long)
        )
    assert ContrastiveData(torch.zeros(2, 2), torch.zeros(2, 4), torch.tensor([0, 1])).candidates.shape == (2, 1, 4)


# --- training ------------------------------------------------------------------------------------------------------


def _retrieval_accuracy(q: nn.Module, c: nn.Module, data: ContrastiveData) -> float:
    with torch.no_grad():
        qe = nn.functional.normalize(q.eval()(data.queries), dim=-1)
        ce = nn.functional.normalize(c.eval()(data.candidates[:, 0]), dim=-1)
    return float(((qe @ ce.T).argmax(dim=1) == data.positives).float().mean())


def test_training_lowers_the_loss_and_learns_the_pairing(tmp_path: Path) -> None:
    data = _paired_data()
    q, c = _heads(data)
    before = _retrieval_accuracy(q, c, data)
    summary = ContrastiveTrainer(q, c, data, _config(epochs=15), tmp_path).train(show_progress=False)
    losses = [r["epoch_loss"] for r in summary.history]
    assert losses[-1] < 0.5 * losses[0]
    after = _retrieval_accuracy(q, c, data)
    assert after > 0.8 > before + 0.3


def test_only_trainable_parameters_move_and_features_stay_untouched(tmp_path: Path) -> None:
    data = _paired_data()
    q, c = _heads(data)
    c.fit_standardizer(data.candidates[:, 0])
    c.linear.weight.requires_grad_(False)  # a frozen part of a head
    frozen_weight, stats = c.linear.weight.detach().clone(), c.std.clone()
    trainable_before = {n: p.detach().clone() for n, p in q.named_parameters()}
    features = data.candidates.clone()
    trainer = ContrastiveTrainer(q, c, data, _config(epochs=2, learnable_temperature=False), tmp_path)
    temperature_before = float(trainer.temperature.temperature)
    trainer.train(show_progress=False)
    torch.testing.assert_close(c.linear.weight, frozen_weight, rtol=0, atol=0)
    torch.testing.assert_close(c.std, stats, rtol=0, atol=0)
    torch.testing.assert_close(data.candidates, features, rtol=0, atol=0)
    assert float(trainer.temperature.temperature) == pytest.approx(temperature_before)
    assert all(not torch.equal(p, trainable_before[n]) for n, p in q.named_parameters())


def test_learnable_temperature_moves(tmp_path: Path) -> None:
    data = _paired_data()
    q, c = _heads(data)
    trainer = ContrastiveTrainer(q, c, data, _config(epochs=3, temperature=0.5), tmp_path)
    trainer.train(show_progress=False)
    assert float(trainer.temperature.temperature.detach()) < 0.5


def test_hard_negatives_enter_the_loss(tmp_path: Path) -> None:
    data = _paired_data()
    hard = (data.positives + 1) % data.candidates.shape[0]
    with_hard = ContrastiveData(data.queries, data.candidates, data.positives, hard[:, None])
    q, c = _heads(data)
    batch, g = torch.arange(8), torch.Generator().manual_seed(0)
    plain = ContrastiveTrainer(q, c, data, _config(view_sampling="first"), tmp_path).compute_loss(batch, g)
    hard_loss = ContrastiveTrainer(q, c, with_hard, _config(view_sampling="first"), tmp_path).compute_loss(batch, g)
    assert float(hard_loss.detach()) > float(plain.detach())  # one more negative per query can only raise the loss
    ContrastiveTrainer(q, c, with_hard, _config(epochs=1), tmp_path / "h").train(show_progress=False)


def test_view_sampling_first_ignores_other_views(tmp_path: Path) -> None:
    data = _paired_data()
    q, c = _heads(data)
    trainer = ContrastiveTrainer(q, c, data, _config(view_sampling="first"), tmp_path)
    picked = trainer._candidate_features(torch.arange(5), torch.Generator().manual_seed(0))
    torch.testing.assert_close(picked, data.candidates[:5, 0])
    random_views = ContrastiveTrainer(q, c, data, _config(), tmp_path)._candidate_features(
        torch.arange(48), torch.Generator().manual_seed(0)
    )
    is_first = (random_views == data.candidates[:, 0]).all(dim=1)
    is_second = (random_views == data.candidates[:, 1]).all(dim=1)
    assert bool((is_first | is_second).all()) and 0 < int(is_first.sum()) < 48


def test_logs_summary_and_checkpoint_are_written(tmp_path: Path) -> None:
    data = _paired_data()
    q, c = _heads(data)
    trainer = ContrastiveTrainer(
        q, c, data, _config(epochs=2), tmp_path, on_epoch_end=lambda t, e: {"val_metric": float(e)}
    )
    summary = trainer.train(show_progress=False)
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    epochs = [x for x in lines if "epoch_loss" in x]
    assert len(steps) == summary.steps == 2 * trainer.steps_per_epoch
    assert [e["epoch"] for e in epochs] == [1, 2] and [e["val_metric"] for e in epochs] == [1.0, 2.0]
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == summary.steps
    assert (tmp_path / "checkpoint.pt").is_file()


class _InterruptError(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    data = _paired_data()
    config = _config(epochs=4)
    q_ref, c_ref = _heads(data)
    c_ref.input_dropout.p = 0.3  # dropout exercises the saved RNG state
    ContrastiveTrainer(q_ref, c_ref, data, config, tmp_path / "ref").train(show_progress=False)

    def stop_at_two(trainer: ContrastiveTrainer, epoch: int) -> dict[str, float]:
        if epoch == 2:
            raise _InterruptError
        return {}

    q1, c1 = _heads(data)
    c1.input_dropout.p = 0.3
    with pytest.raises(_InterruptError):
        ContrastiveTrainer(q1, c1, data, config, tmp_path / "run", on_epoch_end=stop_at_two).train(show_progress=False)
    q2, c2 = _heads(data)  # a fresh process: new heads, state comes from the checkpoint (end of epoch 1)
    c2.input_dropout.p = 0.3
    summary = ContrastiveTrainer(q2, c2, data, config, tmp_path / "run").train(show_progress=False)
    assert summary.resumed_from_epoch == 1 and summary.epochs == 4
    for a, b in zip(
        list(q_ref.parameters()) + list(c_ref.parameters()), list(q2.parameters()) + list(c2.parameters()), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert epochs == sorted(epochs)  # the interrupted epoch's lines were dropped, not duplicated


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    data = _paired_data()
    q, c = _heads(data)
    ContrastiveTrainer(q, c, data, _config(epochs=1), tmp_path).train(show_progress=False)
    with pytest.raises(ValueError, match="other train settings"):
        ContrastiveTrainer(q, c, data, _config(epochs=1, lr=0.5), tmp_path).train(show_progress=False)
    ContrastiveTrainer(q, c, data, _config(epochs=1, lr=0.5), tmp_path).train(resume=False, show_progress=False)


# --- MGQRe §3.5: random query rewriting ---------------------------------------------------------------------------


def test_rewrite_p_swaps_queries_for_their_cached_rewrites(tmp_path: Path) -> None:
    data = _paired_data()
    rewritten = torch.full_like(data.queries, 7.0)
    has = torch.arange(len(data.queries)) % 2 == 0  # only even queries have a rewrite
    data = ContrastiveData(data.queries, data.candidates, data.positives, rewritten=rewritten, has_rewrite=has)
    batch, g = torch.arange(len(data.queries)), torch.Generator().manual_seed(0)
    always = ContrastiveTrainer(*_heads(data), data, _config(rewrite_p=1.0), tmp_path / "a")
    feats = always._query_features(batch, g)
    assert torch.equal(feats[has], rewritten[has]) and torch.equal(feats[~has], data.queries[~has])
    never = ContrastiveTrainer(*_heads(data), data, _config(rewrite_p=0.0), tmp_path / "n")
    assert torch.equal(never._query_features(batch, g), data.queries)
    some = ContrastiveTrainer(*_heads(data), data, _config(rewrite_p=0.6), tmp_path / "s")
    swapped = (some._query_features(batch, g) == 7.0).all(dim=1)
    assert not swapped[~has].any() and 0.4 < swapped[has].float().mean() < 0.8
    with pytest.raises(ValueError, match="rewrite_p"):
        _config(rewrite_p=1.5)
    with pytest.raises(ValueError, match="rewritten must match"):
        ContrastiveData(data.queries, data.candidates, data.positives, rewritten=rewritten[:3])
