"""GRPO / RLOO through trl with lumir's reward callable: the adapter, a few steps, the artifact, resume."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from lumir.rewrite.artifact import load_rewriter_model, read_manifest, save_rewriter
from lumir.train.rewriter.common import apply_lora
from lumir.train.rewriter.grpo import GRPO_DEFAULTS, grpo_arguments, reward_funcs_adapter, train_grpo
from lumir.train.rewriter.loop import quiet_warnings, train_config
from lumir.train.rewriter.rewards import RewardOutput
from rewriter_files import write_jsonl


class RedReward:
    """The share of "red" words; records what it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str], list[str]]] = []

    def __call__(self, queries: Sequence[str], rewrites: Sequence[str], targets: Sequence[str]) -> RewardOutput:
        self.calls.append((list(queries), list(rewrites), list(targets)))
        shares = [sum(w == "red" for w in t.split()) / max(1, len(t.split())) for t in rewrites]
        return RewardOutput(torch.tensor(shares), 0.25, {"top1": 0.5})

    def spec(self) -> dict[str, Any]:
        return {"type": "red-share"}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pro_adapter(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, tokenizer, _ = load_rewriter_model(tiny_base)
    with quiet_warnings():
        model = apply_lora(model, {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return save_rewriter(model, tokenizer, tmp_path_factory.mktemp("pro") / "model", stage="pro", base=tiny_base)


def test_reward_adapter_speaks_trls_signature() -> None:
    reward = RedReward()
    fn = reward_funcs_adapter(reward)
    logged: dict[str, float] = {}
    out = fn(
        prompts=[[{"role": "user", "content": "x"}]] * 2,
        completions=[[{"role": "assistant", "content": " red red "}], "a red dog"],
        completion_ids=[[1], [2]],
        query=["a dog", "a cat"],
        target=["c0", "c1"],
        log_metric=lambda k, v: logged.__setitem__(k, v),
        trainer_state=None,
    )
    assert out == pytest.approx([1.0, 1 / 3])
    assert reward.calls == [(["a dog", "a cat"], ["red red", "a red dog"], ["c0", "c1"])]
    assert logged == {"score_inflation": 0.25, "top1": 0.5}


def test_grpo_arguments_count_queries_and_reject_bad_options(tmp_path: Path) -> None:
    cfg = train_config({"batch_size": 4, "micro_batch_size": 2, "group_size": 3, "kl_coef": 0.2}, GRPO_DEFAULTS)
    args = grpo_arguments(cfg, tmp_path)
    assert args.per_device_train_batch_size == 6 and args.gradient_accumulation_steps == 2
    assert args.num_generations == 3 and args.beta == 0.2 and args.epsilon == 0.2
    assert args.output_dir == str(tmp_path / "checkpoints")
    rloo = grpo_arguments({**cfg, "algorithm": "rloo"}, tmp_path)
    assert type(rloo).__name__ == "RLOOConfig"
    with pytest.raises(ValueError, match="algorithm"):
        grpo_arguments({**cfg, "algorithm": "ppo"}, tmp_path)
    with pytest.raises(ValueError, match="unknown 'train' recipe key"):
        train_config({"lr": 1.0}, GRPO_DEFAULTS)


def _recipe(init: Path, data: Path, **train: Any) -> dict[str, Any]:
    return {
        "kind": "rewriter",
        "stage": "grpo",
        "model": {"init": str(init)},
        "data": {"train": str(data)},
        "train": {
            "batch_size": 2,
            "group_size": 2,
            "max_new_tokens": 4,
            "learning_rate": 0.05,
            "seed": 0,
            "save_steps": 2,
            "device": "cpu",
            **train,
        },
    }


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_grpo_runs_saves_a_reloadable_rewriter_and_resumes(
    algorithm: str, pro_adapter: Path, tiny_base: Path, tmp_path: Path
) -> None:
    rows = [{"id": f"q{i}", "prompt": q, "target": f"c{i}"} for i, q in enumerate(["a red dog", "the blue cat"])]
    data = write_jsonl(tmp_path / "rl.jsonl", rows)
    reward = RedReward()
    recipe = _recipe(pro_adapter, data, algorithm=algorithm, max_steps=2)
    result = train_grpo(recipe, output_dir=tmp_path / "out", resume=False, reward=reward, show_progress=False)
    log = [json.loads(ln) for ln in result.log_path.read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    for key in ("reward", "kl", "beta", "score_inflation", "loss", "length", "top1"):
        assert key in log[0], key
    assert log[0]["score_inflation"] == pytest.approx(0.25) and log[0]["beta"] == 0.1
    # the reward saw each query with its own target, G = 2 rewrites per query
    queries, _, targets = reward.calls[0]
    assert sorted(zip(queries, targets, strict=True)) == sorted([("a red dog", "c0"), ("the blue cat", "c1")] * 2)

    manifest = read_manifest(result.model_dir)
    assert manifest is not None and manifest["stage"] == "grpo" and manifest["adapter"] is True
    assert manifest["parent"] == str(pro_adapter.resolve()) and manifest["base"] == str(tiny_base.resolve())
    assert manifest["config"]["train"]["algorithm"] == algorithm
    assert not (result.model_dir / "ref").exists()  # trl's frozen reference copy is not saved
    trained, _, _ = load_rewriter_model(result.model_dir)
    start = dict(load_rewriter_model(pro_adapter)[0].named_parameters())
    lora = [n for n, _ in trained.named_parameters() if "lora_" in n]
    assert lora and all(".ref." not in n for n in lora)
    assert any(not torch.equal(p, start[n]) for n, p in trained.named_parameters() if "lora_" in n)
    assert all(torch.equal(p, start[n]) for n, p in trained.named_parameters() if "lora_" not in n)

    if algorithm == "grpo":  # resume: continue the same folder to step 3
        more = train_grpo({**recipe, "train": {**recipe["train"], "max_steps": 3}}, output_dir=tmp_path / "out",
                          reward=RedReward(), show_progress=False)  # fmt: skip
        assert more.metrics["resumed_from_step"] == 2 and more.metrics["steps"] == 3
        assert [json.loads(ln)["step"] for ln in more.log_path.read_text().splitlines()] == [1, 2, 3]
