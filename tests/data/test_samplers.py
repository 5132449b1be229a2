"""ExampleBatchSampler: no duplicate item in a batch, task-homogeneous batches, uniform source mixing, epochs."""

from __future__ import annotations

from collections import Counter

import pytest

from lumir.data.samplers import ExampleBatchSampler, fill_batches


def _keys(n: int, shared_every: int = 3) -> list[frozenset[str]]:
    # example i holds query i and candidate i // shared_every: neighbours share a candidate
    return [frozenset({f"q{i}", f"c{i // shared_every}"}) for i in range(n)]


def test_no_batch_holds_an_item_twice_and_every_example_appears_once() -> None:
    keys = _keys(30)
    sampler = ExampleBatchSampler(keys, 4, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(30))
    for b in batches:
        items = [k for i in b for k in keys[i]]
        assert len(items) == len(set(items))
    assert len(sampler) == len(batches)


def test_fill_batches_hand_case() -> None:
    keys = [frozenset({"a"}), frozenset({"a"}), frozenset({"a", "b"}), frozenset({"c"}), frozenset({"d"})]
    assert fill_batches([0, 1, 2, 3, 4], keys, 2) == [[0, 3], [1, 4], [2]]


def test_epochs_differ_and_are_reproducible() -> None:
    a, b = ExampleBatchSampler(_keys(40, 1), 8, seed=0), ExampleBatchSampler(_keys(40, 1), 8, seed=0)
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    b.set_epoch(1)
    assert first != second and second == list(b)


def test_task_homogeneous_batches() -> None:
    groups = ["t2i" if i % 3 else "i2t" for i in range(36)]
    sampler = ExampleBatchSampler(_keys(36, 1), 4, groups=groups, homogeneous=True, seed=2)
    batches = list(sampler)
    assert all(len({groups[i] for i in b}) == 1 for b in batches)
    assert {groups[b[0]] for b in batches} == {"t2i", "i2t"}


def test_uniform_mixture_samples_sources_equally() -> None:
    # 90 multimodal and 10 text examples: uniform weights draw each source about half the time
    groups = ["mm"] * 90 + ["text"] * 10
    sampler = ExampleBatchSampler(_keys(100, 1), 10, groups=groups, weights="uniform", seed=0)
    counts = Counter(groups[i] for e in range(20) for i in (sampler.set_epoch(e), [j for b in sampler for j in b])[1])
    share = counts["text"] / sum(counts.values())
    assert 0.45 < share < 0.55
    plain = ExampleBatchSampler(_keys(100, 1), 10, groups=groups, seed=0)
    assert Counter(groups[i] for b in plain for i in b)["text"] == 10  # without weights: each example once


def test_weighted_mixture_and_errors() -> None:
    groups = ["a"] * 50 + ["b"] * 50
    sampler = ExampleBatchSampler(_keys(100, 1), 10, groups=groups, weights={"a": 3, "b": 1}, seed=0)
    share_a = Counter(groups[i] for b in sampler for i in b)["a"] / 100
    assert 0.65 < share_a < 0.85
    with pytest.raises(ValueError, match="missing"):
        ExampleBatchSampler(_keys(100, 1), 10, groups=groups, weights={"a": 1})
    with pytest.raises(ValueError, match="need the examples' groups"):
        ExampleBatchSampler(_keys(10, 1), 2, homogeneous=True)
    with pytest.raises(ValueError, match="no training examples"):
        ExampleBatchSampler([], 2)


def test_drop_last_keeps_only_full_batches() -> None:
    sampler = ExampleBatchSampler(_keys(10, 1), 4, drop_last=True)
    assert [len(b) for b in sampler] == [4, 4]
