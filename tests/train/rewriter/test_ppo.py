"""PPO (eq. 5) pieces against hand-computed values, and the whole stage on a tiny LM with a toy reward."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from lumir.io.jsonl import write_items
from lumir.rewrite.artifact import load_rewriter_model, read_manifest, save_rewriter
from lumir.testing.tiny import build_tiny_lm
from lumir.train.rewriter.common import EncodedBatch, apply_lora, sequence_logprobs
from lumir.train.rewriter.loop import load_policy, quiet_warnings
from lumir.train.rewriter.ppo import (
    AdaptiveKLController,
    PPOConfig,
    PPOTrainer,
    group_advantages,
    ppo_clip_loss,
    train_ppo,
)
from lumir.train.rewriter.rewards import RewardOutput
from lumir.train.rewriter.rl import load_reference
from lumir.train.rewriter.run import run_rewriter_recipe
from lumir.types import Item
from rewriter_files import write_jsonl

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
QUERIES = ["a red dog", "the blue cat", "a green square", "yellow circle", "a photo of a dog", "this image"]


class RedReward:
    """Toy reward the policy must learn: the share of the rewrite's words that are "red"."""

    def __call__(self, queries: Sequence[str], rewrites: Sequence[str], targets: Sequence[str]) -> RewardOutput:
        shares = [sum(w == "red" for w in t.split()) / max(1, len(t.split())) for t in rewrites]
        return RewardOutput(torch.tensor(shares), 0.0, {"empty": sum(not t for t in rewrites) / len(rewrites)})

    def spec(self) -> dict[str, Any]:
        return {"type": "red-share"}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run far faster on one thread than on two contended ones (and the results do not depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pro_init(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in PRO artifact: a LoRA adapter over the tiny base with non-zero (seeded) weights, so π_PRO != base."""
    model, tokenizer, _ = load_rewriter_model(tiny_base)
    with quiet_warnings():
        model = apply_lora(model, {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ALL_LINEAR})
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return save_rewriter(model, tokenizer, tmp_path_factory.mktemp("pro") / "model", stage="pro", base=tiny_base)


@pytest.fixture(scope="module")
def rl_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [{"id": f"q{i}", "prompt": q, "target": f"c{i % 4}"} for i, q in enumerate(QUERIES)]
    return write_jsonl(tmp_path_factory.mktemp("rl") / "rl.jsonl", rows)


# pure pieces -------------------------------------------------------------------------------------------------------


def test_ppo_clip_loss_hand_values_and_gradients() -> None:
    new = torch.tensor([1.5, 0.5, 1.0, 1.1]).log().requires_grad_()
    old = torch.zeros(4)
    adv = torch.tensor([1.0, -1.0, 2.0, -3.0])
    loss, frac = ppo_clip_loss(new, old, adv, clip=0.2)
    # ratios 1.5, 0.5, 1.0, 1.1 -> min(ρA, clip(ρ)A) = min(1.5, 1.2), min(-0.5, -0.8), 2, min(-3.3, -3.3)
    assert loss.item() == pytest.approx(-(1.2 - 0.8 + 2.0 - 3.3) / 4)
    assert frac.item() == pytest.approx(0.5)
    loss.backward()
    assert new.grad is not None
    # clipped terms pass no gradient; the others d(-ρA/4)/d(log ρ) = -ρA/4
    assert new.grad.tolist() == pytest.approx([0.0, 0.0, -2.0 / 4, 3.3 / 4])


def test_adaptive_kl_controller_follows_ziegler() -> None:
    kl = AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert kl.update(9.0, n_steps=10) == pytest.approx(0.1 * 1.02)  # error 0.5 clipped to 0.2
    assert kl.update(6.6, n_steps=10) == pytest.approx(0.1 * 1.02 * 1.01)  # error 0.1
    assert kl.update(0.0, n_steps=50) == pytest.approx(0.1 * 1.02 * 1.01 * 0.9)  # error -1 clipped to -0.2
    restored = AdaptiveKLController(1.0)
    restored.load_state_dict(kl.state_dict())
    assert restored.value == kl.value and restored.target == 6.0 and restored.horizon == 100
    fixed = AdaptiveKLController(0.1, target=None)
    assert fixed.update(100.0, n_steps=1000) == 0.1
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, target=0.0)


def test_group_advantages_subtract_the_group_mean() -> None:
    r = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 16.0])
    assert group_advantages(r, 3).tolist() == pytest.approx([-1.0, 0.0, 1.0, -2.0, -2.0, 4.0])
    norm = group_advantages(r, 3, normalize=True)
    assert norm.std().item() == pytest.approx(1.0) and norm.mean().item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="groups"):
        group_advantages(r, 4)


def test_ppo_config_rejects_unknown_and_invalid_options() -> None:
    assert PPOConfig.from_dict({"learning_rate": 1e-3}).learning_rate == 1e-3
    with pytest.raises(ValueError, match="unknown PPO options"):
        PPOConfig.from_dict({"lr": 1e-3})
    with pytest.raises(ValueError, match="group_size"):
        PPOConfig(group_size=1)


# rollouts on the tiny LM ------------------------------------------------------------------------------------------


def test_rollout_scores_exactly_the_sampled_tokens(pro_init: Path) -> None:
    policy = load_policy({"init": str(pro_init)})
    trainer = PPOTrainer(
        policy.model,
        load_reference(str(pro_init)),
        policy.tokenizer,
        RedReward(),
        PPOConfig(batch_size=2, group_size=3, max_new_tokens=5),
    )
    roll = trainer.rollout(["a red dog", "the blue cat and a photo"], ["c0", "c1"], seed=0)
    assert roll.queries == ["a red dog"] * 3 + ["the blue cat and a photo"] * 3 and roll.targets[3:] == ["c1"] * 3
    b = roll.batch
    eos = policy.tokenizer.eos_token_id
    for i in range(6):
        n = int(b.attention_mask[i].sum())
        assert b.attention_mask[i, :n].all() and not b.attention_mask[i, n:].any()  # right-padded
        comp = b.input_ids[i][b.completion_mask[i].bool()].tolist()
        assert 1 <= len(comp) <= 5 and (eos not in comp[:-1])
        body = comp[:-1] if comp[-1] == eos else comp
        assert int(roll.lengths[i]) == len(body)
        assert roll.texts[i] == policy.tokenizer.decode(body, skip_special_tokens=True).strip()
    # a padded row scores like the same row alone
    batched = trainer._logprobs(policy.model, b)
    for i in (0, 4):
        n = int(b.attention_mask[i].sum())
        alone = EncodedBatch(
            b.input_ids[i : i + 1, :n], b.attention_mask[i : i + 1, :n], b.completion_mask[i : i + 1, :n]
        )
        with torch.no_grad():
            assert batched[i].item() == pytest.approx(
                sequence_logprobs(policy.model, alone, normalize=False).item(), abs=1e-4
            )
    # before any update the policy is π_PRO: zero KL to the reference (not to the bare base)
    assert torch.allclose(batched, trainer._logprobs(trainer.reference, b), atol=1e-5)
    base, _ = build_tiny_lm()
    assert not torch.allclose(batched, trainer._logprobs(base, b), atol=1e-3)
    again = trainer.rollout(["a red dog", "the blue cat and a photo"], ["c0", "c1"], seed=0)
    assert again.texts == roll.texts and torch.equal(again.batch.input_ids, b.input_ids)


def _recipe(init: Path, data: Path, **train: Any) -> dict[str, Any]:
    return {
        "kind": "rewriter",
        "stage": "ppo",
        "model": {"init": str(init)},
        "data": {"train": str(data)},
        "train": {"batch_size": 4, "group_size": 4, "ppo_epochs": 2, "max_new_tokens": 5, "seed": 0, **train},
    }


def test_ppo_learns_a_toy_reward_and_moves_only_lora(
    pro_init: Path, rl_file: Path, tiny_base: Path, tmp_path: Path
) -> None:
    recipe = _recipe(pro_init, rl_file, learning_rate=0.05, kl_coef=0.01, kl_target=None, max_steps=12, save_steps=6)
    result = train_ppo(recipe, output_dir=tmp_path / "ppo", resume=False, reward=RedReward(), show_progress=False)
    log = [json.loads(ln) for ln in result.log_path.read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))
    for key in ("reward", "kl", "beta", "score_inflation", "loss", "clip_fraction", "length", "words", "empty"):
        assert key in log[0], key
    assert log[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # the reference is π_PRO
    first, last = (sum(r["reward"] for r in part) / 4 for part in (log[:4], log[-4:]))
    assert last > first + 0.25, (first, last)
    assert result.metrics["steps"] == 12 and result.metrics["reward_last"] > result.metrics["reward_first"]

    manifest = read_manifest(result.model_dir)
    assert manifest is not None and manifest["stage"] == "ppo" and manifest["adapter"] is True
    assert manifest["parent"] == str(pro_init.resolve()) and manifest["base"] == str(tiny_base.resolve())
    assert manifest["config"]["reward"] == {"type": "red-share"}
    assert (tmp_path / "ppo" / "recipe.yaml").is_file() and (tmp_path / "ppo" / "checkpoint.pt").is_file()
    trained, _, _ = load_rewriter_model(result.model_dir)
    start, _, _ = load_rewriter_model(pro_init)
    base, _ = build_tiny_lm()
    base_params = dict(base.named_parameters())
    start_params = dict(start.named_parameters())
    moved = 0
    for name, p in trained.named_parameters():
        if "lora_" in name:
            moved += int(not torch.equal(p, start_params[name]))
        else:
            plain = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p, base_params[plain]), name
    assert moved > 0


def test_resume_continues_exactly_with_a_recipe_reward(pro_init: Path, rl_file: Path, tmp_path: Path) -> None:
    write_items(tmp_path / "pool.jsonl", [Item(f"c{i}", text=f"photo {i}") for i in range(6)])
    recipe = _recipe(
        pro_init,
        rl_file,
        batch_size=2,
        group_size=2,
        ppo_epochs=1,
        learning_rate=0.01,
        save_steps=2,
        max_new_tokens=4,
        kl_horizon=100,  # β moves visibly
    )
    recipe["reward"] = {
        "type": "similarity",
        "embedder": {"type": "hash", "dim": 16},
        "candidates": {"type": "jsonl", "path": str(tmp_path / "pool.jsonl")},
        "negatives": 3,
    }
    whole = train_ppo({**recipe, "train": {**recipe["train"], "max_steps": 3}}, output_dir=tmp_path / "a",
                      resume=False, show_progress=False)  # fmt: skip
    train_ppo({**recipe, "train": {**recipe["train"], "max_steps": 2}}, output_dir=tmp_path / "b", show_progress=False)
    resumed = train_ppo({**recipe, "train": {**recipe["train"], "max_steps": 3}}, output_dir=tmp_path / "b",
                        show_progress=False)  # fmt: skip
    assert resumed.metrics["resumed_from_step"] == 2
    log_a = [json.loads(ln) for ln in whole.log_path.read_text().splitlines()]
    log_b = [json.loads(ln) for ln in resumed.log_path.read_text().splitlines()]
    assert [r["step"] for r in log_b] == [1, 2, 3]
    for ra, rb in zip(log_a, log_b, strict=True):
        for key in ("reward", "kl", "beta", "loss", "score_inflation"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=1e-9), (ra["step"], key)
    assert log_a[1]["beta"] != log_a[0]["beta"]  # the adaptive controller moved, and its state was restored
    a, _, _ = load_rewriter_model(whole.model_dir)
    b = dict(load_rewriter_model(resumed.model_dir)[0].named_parameters())
    for name, p in a.named_parameters():
        assert torch.allclose(p, b[name], atol=1e-6), name
    # through the stage dispatcher (what `lumir train rewriter` calls); no resume: the old log and checkpoint go
    fresh = run_rewriter_recipe(recipe, overrides=["train.max_steps=1"], output_dir=tmp_path / "b", resume=False)
    assert fresh.metrics["resumed_from_step"] == 0 and len(fresh.log_path.read_text().splitlines()) == 1
    manifest = read_manifest(fresh.model_dir)
    assert manifest is not None and manifest["config"]["overrides"] == {"set": ["train.max_steps=1"]}


def test_targets_missing_from_the_pool_fail_before_training(pro_init: Path, rl_file: Path, tmp_path: Path) -> None:
    write_items(tmp_path / "pool.jsonl", [Item(f"c{i}", text=f"photo {i}") for i in range(2)])
    recipe = _recipe(pro_init, rl_file)
    recipe["reward"] = {"embedder": "hash:8", "candidates": str(tmp_path / "pool.jsonl")}
    with pytest.raises(ValueError, match="not in the reward's candidate pool"):
        train_ppo(recipe, output_dir=tmp_path / "out", show_progress=False)
    with pytest.raises(ValueError, match="unknown 'train' recipe key|unknown PPO options"):
        train_ppo({**recipe, "train": {"lr": 1.0}}, output_dir=tmp_path / "out", show_progress=False)
