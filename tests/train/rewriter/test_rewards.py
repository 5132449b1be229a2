"""Rewards of the RL stages against hand-computed numbers (a table embedder with known vectors)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from lumir.collections import Corpus
from lumir.io.jsonl import write_items
from lumir.testing.fakes import ColorEmbedder, HashEmbedder
from lumir.train.rewriter.rewards import (
    CandidateVectors,
    RankReward,
    RewardFunction,
    SimilarityDeltaReward,
    build_reward,
    load_candidates,
    ranks,
)
from lumir.types import Item, Modality, Role

# 2-d vectors: the ground truth is the x axis; the query x scores 0.6 with it, the rewrite y 0.8.
TABLE = {
    "GT": (1.0, 0.0),
    "N1": (0.0, 1.0),
    "N2": (-1.0, 0.0),
    "N3": (0.0, -1.0),
    "q": (0.6, 0.8),
    "y": (0.8, 0.6),
    "y-long": (1.6, 1.2),  # same direction as y, not unit: cosine must normalise it
    "hack": (1.0, 1.0),  # closer to the ground truth *and* to N1: inflation, no rank gain
}


class TableEmbedder:
    """Text -> a fixed vector from TABLE; counts the items it embedded per role."""

    modalities = frozenset({Modality.TEXT})
    dim = 2

    def __init__(self) -> None:
        self.calls: dict[Role, int] = {Role.QUERY: 0, Role.CANDIDATE: 0}

    def embed(self, items: Sequence[Item], *, role: Role, batch_size: int = 32) -> torch.Tensor:
        self.calls[role] += len(items)
        return torch.tensor([TABLE[it.text or ""] for it in items], dtype=torch.float32)

    def spec(self) -> dict[str, Any]:
        return {"type": "table"}


def pool() -> Corpus:
    return Corpus([Item("gt", text="GT"), Item("n1", text="N1"), Item("n2", text="N2"), Item("n3", text="N3")])


def test_similarity_delta_is_eq4_with_hand_computed_numbers() -> None:
    reward = SimilarityDeltaReward(TableEmbedder(), pool(), negatives=3)
    assert isinstance(reward, RewardFunction)
    out = reward(["q", "q", "q"], ["y", "y-long", ""], ["gt", "gt", "gt"])
    # 20 * (0.8 - 0.6) = 4; the same direction scaled up is the same cosine; empty scores 0: 20 * (0 - 0.6) = -12
    assert out.rewards.tolist() == pytest.approx([4.0, 4.0, -12.0], abs=1e-5)
    # negatives of q: N1 0.8, N2 -0.6, N3 -0.8 (mean -0.2); of y: 0.6, -0.8, -0.6 (mean -4/15); of "": 0
    assert out.score_inflation == pytest.approx(((-4 / 15 + 0.2) * 2 + 0.2) / 3, abs=1e-6)
    assert out.extras["score_before"] == pytest.approx(0.6)
    assert out.extras["score_after"] == pytest.approx((0.8 + 0.8 + 0.0) / 3)
    # ranks: q is 2nd (N1 0.8 > 0.6); y is 1st; the empty rewrite ties everything at 0 and ranks last (4th)
    assert out.extras["rank_before"] == pytest.approx(2.0)
    assert out.extras["rank_after"] == pytest.approx((1 + 1 + 4) / 3)
    assert out.extras["top1"] == pytest.approx(2 / 3)
    assert out.extras["empty"] == pytest.approx(1 / 3)


def test_rank_reward_modes_and_hacking_rewrite() -> None:
    recip = RankReward(TableEmbedder(), pool(), negatives=3)
    delta = RankReward(TableEmbedder(), pool(), negatives=3, mode="delta", scale=3.0)
    rewrites = ["y", "", "hack"]
    r = recip(["q"] * 3, rewrites, ["gt"] * 3).rewards.tolist()
    d = delta(["q"] * 3, rewrites, ["gt"] * 3).rewards.tolist()
    # y: rank 2 -> 1; empty: 2 -> 4; hack: N1 ties the ground truth (0.7071 each) and counts above it: 2 -> 2
    assert r == pytest.approx([1 - 1 / 2, 1 / 4 - 1 / 2, 0.0])
    assert d == pytest.approx([3.0 * 1 / 3, 3.0 * -2 / 3, 0.0])
    # the similarity reward pays the hacking rewrite (0.7071 > 0.6) although it tells nothing apart better
    sim = SimilarityDeltaReward(TableEmbedder(), pool(), negatives=3)
    hacked = sim(["q"], ["hack"], ["gt"])
    assert hacked.rewards.item() == pytest.approx(20 * (2**-0.5 - 0.6), abs=1e-5)
    # and its score inflation shows it: mean over N1..N3 goes from -0.2 to (0.7071 - 0.7071 - 0.7071) / 3
    assert hacked.score_inflation == pytest.approx(-(2**-0.5) / 3 + 0.2, abs=1e-6)
    assert recip.spec()["mode"] == "reciprocal" and recip.spec()["type"] == "rank"


def test_rank_reward_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        RankReward(TableEmbedder(), pool(), mode="best")


def test_ranks_count_ties_against_the_ground_truth() -> None:
    gt = torch.tensor([0.5, 0.9, 0.0])
    neg = torch.tensor([[0.1, 0.2], [0.9, 0.95], [0.0, 0.0]])
    assert ranks(gt, neg).tolist() == [1, 3, 3]


def test_candidates_and_query_scores_are_embedded_once() -> None:
    embedder = TableEmbedder()
    reward = SimilarityDeltaReward(embedder, pool(), negatives=3)
    reward(["q", "q"], ["y", "y"], ["gt", "gt"])
    first = dict(embedder.calls)
    assert first[Role.CANDIDATE] == 4  # the ground truth and its three negatives, each once
    assert first[Role.QUERY] == 2  # "q" once, the two identical rewrites once
    reward(["q"], ["hack"], ["gt"])
    assert embedder.calls[Role.CANDIDATE] == 4  # cached
    assert embedder.calls[Role.QUERY] == 3  # only the new rewrite


def test_negatives_are_seeded_per_query_and_never_the_target() -> None:
    corpus = Corpus([Item(f"c{i}", text=f"caption {i}") for i in range(20)])
    a = SimilarityDeltaReward(HashEmbedder(dim=8), corpus, negatives=5, seed=1)
    b = SimilarityDeltaReward(HashEmbedder(dim=8), corpus, negatives=5, seed=1)
    c = SimilarityDeltaReward(HashEmbedder(dim=8), corpus, negatives=5, seed=2)
    for target in ("c0", "c7", "c19"):
        ids = a.negative_ids("a dog", target)
        assert len(ids) == 5 == len(set(ids)) and target not in ids
        assert ids == b.negative_ids("a dog", target)
    assert any(a.negative_ids("a dog", t) != c.negative_ids("a dog", t) for t in ("c0", "c7", "c19"))
    with pytest.raises(KeyError, match="not in the candidate pool"):
        a(["a dog"], ["a cat"], ["nope"])


def test_color_embedder_rewards_the_right_colour() -> None:
    corpus = Corpus([Item(c, text=c) for c in ("red", "blue", "green", "yellow")])
    reward = SimilarityDeltaReward(ColorEmbedder(), corpus, negatives=3)
    out = reward(["blue"] * 2, ["a red photo", "blue"], ["red"] * 2)
    assert out.rewards[0] > 0 and out.rewards[1] == pytest.approx(0.0, abs=1e-6)
    assert RankReward(ColorEmbedder(), corpus, negatives=3)(["blue"], ["red"], ["red"]).rewards.item() > 0


def test_candidate_vectors_accept_precomputed_and_check_shape() -> None:
    embedder = TableEmbedder()
    vecs = CandidateVectors(embedder, pool(), vectors=torch.tensor([[2.0, 0.0], [0, 1], [-1, 0], [0, -1]]))
    assert vecs.get(["gt"]).tolist() == [[1.0, 0.0]] and embedder.calls[Role.CANDIDATE] == 0
    with pytest.raises(ValueError, match="shape"):
        CandidateVectors(embedder, pool(), vectors=torch.zeros(3, 2))


def test_build_reward_from_a_recipe_block_with_vector_cache(tmp_path: Path) -> None:
    items = [Item(f"c{i}", text=f"photo {i}") for i in range(6)]
    write_items(tmp_path / "pool.jsonl", items)
    cache = tmp_path / "vectors" / "pool.pt"
    block = {
        "type": "rank",
        "embedder": {"type": "hash", "dim": 8},
        "candidates": {"type": "jsonl", "path": str(tmp_path / "pool.jsonl"), "limit": 5, "cache": str(cache)},
        "negatives": 3,
        "mode": "delta",
    }
    reward = build_reward(block)
    assert isinstance(reward, RankReward) and reward.mode == "delta"
    assert len(reward.pool.candidates) == 5 and cache.is_file()
    saved = torch.load(cache, weights_only=True)
    assert saved["ids"] == [f"c{i}" for i in range(5)] and saved["vectors"].shape == (5, 8)
    again = build_reward(block)  # reads the cache back: same vectors
    assert torch.allclose(again.pool.get(["c3"]), reward.pool.get(["c3"]))
    out = reward(["photo 1"], ["photo 1"], ["c1"])
    assert out.rewards.item() == 0.0 and out.extras["rank_after"] == 1.0
    with pytest.raises(ValueError, match="unknown reward type"):
        build_reward({**block, "type": "bleu"})
    with pytest.raises(ValueError, match=r"unknown similarity reward option\(s\) \['mode'\]"):
        build_reward({**block, "type": "similarity"})


def test_load_candidates_refuses_test_splits_and_limits(tiny_flickr8k: Path) -> None:
    with pytest.raises(ValueError, match="test split"):
        load_candidates({"type": "flickr8k", "path": str(tiny_flickr8k / "flickr8k"), "split": "test_1k"})
    with pytest.raises(ValueError, match="type"):
        load_candidates({"path": "x"})
    corpus = load_candidates(
        {"type": "flickr8k", "path": str(tiny_flickr8k / "flickr8k"), "split": "train_tiny", "limit": 5}
    )
    assert len(corpus) == 5 and corpus.source is not None and corpus.source["limit"] == 5
    assert all(item.image is not None for item in corpus)
