"""The PPO/GRPO recipes (paper values, valid profiles) and the RL query data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lumir.train.rewriter.grpo import GRPO_DEFAULTS, grpo_arguments
from lumir.train.rewriter.loop import check_keys, train_config
from lumir.train.rewriter.ppo import PPOConfig
from lumir.train.rewriter.rl import RL_RECIPE_KEYS, read_queries, summarize_log
from lumir.train.rewriter.run import resolve_rewriter_recipe
from rewriter_files import write_jsonl

RECIPES = Path(__file__).resolve().parents[3] / "recipes" / "rewriter"


def _has_path(recipe: dict[str, Any], dotted: str) -> bool:
    node: Any = recipe
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("stage", ["ppo", "grpo"])
def test_rl_recipes_carry_the_paper_values_and_valid_profiles(stage: str, tmp_path: Path) -> None:
    recipe = yaml.safe_load((RECIPES / f"{stage}.yaml").read_text(encoding="utf-8"))
    assert recipe["kind"] == "rewriter" and recipe["stage"] == stage
    check_keys(recipe, RL_RECIPE_KEYS, block="recipe")
    train = recipe["train"]  # MGQRe §4.1.3, PPO phase
    assert (train["learning_rate"], train["batch_size"], train["epochs"], train["kl_coef"]) == (5e-6, 32, 1, 0.1)
    reward = recipe["reward"]
    assert (reward["type"], reward["scale"], reward["embedder"]) == ("similarity", 20, "mini")
    assert not str(reward["candidates"]["split"]).startswith("test")
    assert recipe["model"]["init"] == "runs/rewriter/pro/model"
    for key in recipe["profiles"]["cpu"]:
        assert _has_path(recipe, key), f"profile key {key!r} names nothing in {stage}.yaml"
    for resolved in (recipe, resolve_rewriter_recipe(recipe, profile="cpu")):
        if stage == "ppo":
            PPOConfig.from_dict(resolved["train"])
        else:
            grpo_arguments(train_config(resolved["train"], GRPO_DEFAULTS), tmp_path)
    assert resolve_rewriter_recipe(recipe, profile="cpu")["train"]["batch_size"] == 8


def test_read_queries_takes_rows_or_pair_records(tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "rl.jsonl", [{"id": "a", "prompt": " a dog ", "target": "p1"},
                                               {"id": "b", "prompt": "a cat", "target": "p2"}])  # fmt: skip
    records = write_jsonl(tmp_path / "records.jsonl", [{"id": "c", "query": "a red car", "target": "p3", "rank": 4}])
    got = read_queries({"train": [str(rows), str(records)]})
    assert [(e.id, e.query, e.target) for e in got] == [("a", "a dog", "p1"), ("b", "a cat", "p2"),
                                                          ("c", "a red car", "p3")]  # fmt: skip
    assert len(read_queries({"train": str(rows), "limit": 1})) == 1
    with pytest.raises(ValueError, match="unknown 'data' recipe key"):
        read_queries({"train": str(rows), "holdout": 0.1})
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "x", "prompt": "  ", "target": "p"}])
    with pytest.raises(ValueError, match="non-empty"):
        read_queries({"train": str(bad)})
    with pytest.raises(ValueError, match="data.train is required"):
        read_queries({})


def test_summarize_log_first_and_last_windows() -> None:
    records = [{"step": i, "reward": float(i), "kl": 0.5, "beta": 0.1 + i / 100} for i in range(1, 5)]
    out = summarize_log(records, window=2)
    assert out == {"steps": 4, "reward_first": 1.5, "reward_last": 3.5, "kl_first": 0.5, "kl_last": 0.5,
                   "beta_last": 0.14}  # fmt: skip
    assert summarize_log([]) == {"steps": 0}
