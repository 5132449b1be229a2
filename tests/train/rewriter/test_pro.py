"""PRO (eq. 3) on a tiny offline LM from an SFT artifact: batches, loss falling, LoRA-only, reload, resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback, set_seed

from lumir.rewrite.artifact import load_rewriter_model, read_manifest, save_rewriter
from lumir.train.rewriter.common import apply_lora
from lumir.train.rewriter.loop import load_policy
from lumir.train.rewriter.pro import PROCollator, _sorted_rows, candidate_logps, train_pro
from rewriter_files import LORA, tiny_recipe


@pytest.fixture(scope="module")
def sft_adapter(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained LoRA adapter saved as an SFT artifact (PRO only needs a starting point)."""
    model, tokenizer, _ = load_rewriter_model(tiny_base)
    set_seed(1)
    return save_rewriter(
        apply_lora(model, LORA), tokenizer, tmp_path_factory.mktemp("sft") / "model", stage="sft", base=tiny_base
    )


def _pro_recipe(base: Path, data: Path, init: Path, **train: Any) -> dict[str, Any]:
    recipe = tiny_recipe("pro", base, data, **train)
    recipe["model"] = {"base": str(base), "init": str(init), "lora": None}
    return recipe


class Frozen(TrainerCallback):
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.after = {n: p.detach().clone() for n, p in model.named_parameters()}


def test_rows_are_ranked_cut_and_collated(tiny_base: Path) -> None:
    rows = _sorted_rows(
        [
            {"prompt": "a dog", "rewrites": ["b", "a", "c"], "scores": [0.2, 0.9, 0.5]},
            {"prompt": "a cat", "rewrites": ["x"], "scores": [1.0]},
        ],
        rank_length=2,
    )
    assert rows == [{"prompt": "a dog", "rewrites": ["a", "c"], "scores": [0.9, 0.5]}]  # best 2, single dropped
    _, tokenizer, _ = load_rewriter_model(tiny_base)
    batch = PROCollator(tokenizer, rank_length=3)(
        [
            {"prompt": "a red dog", "rewrites": ["the red dog", "a dog", "a photo"], "scores": [0.9, 0.5, 0.1]},
            {"prompt": "a cat", "rewrites": ["the cat", "a cat"], "scores": [0.7, 0.7]},
        ]
    )
    assert batch["input_ids"].shape[0] == 5  # only real candidates are encoded
    assert batch["slots"].tolist() == [0, 1, 2, 3, 4]
    assert batch["mask"].tolist() == [[True, True, True], [True, True, False]]
    torch.testing.assert_close(batch["rewards"], torch.tensor([[0.9, 0.5, 0.1], [0.7, 0.7, 0.0]]))
    model, _, _ = load_rewriter_model(tiny_base)
    logps = candidate_logps(model, batch)
    assert logps.shape == (2, 3) and logps[1, 2] == 0 and bool((logps[0] < 0).all())


def test_pro_trains_the_sft_adapter_and_reloads(
    tiny_base: Path, pro_file: Path, sft_adapter: Path, tmp_path: Path
) -> None:
    frozen = Frozen()
    result = train_pro(_pro_recipe(tiny_base, pro_file, sft_adapter), output_dir=tmp_path / "run", callbacks=[frozen])
    records = [json.loads(ln) for ln in result.log_path.read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert train[-1]["loss"] < train[0]["loss"]
    assert {"top1", "pair_acc"} <= set(train[0])
    assert frozen.trainable and all("lora_" in n for n in frozen.trainable)
    for name, before in frozen.before.items():
        assert torch.equal(before, frozen.after[name]) == (name not in frozen.trainable), name
    manifest = read_manifest(result.model_dir)
    assert manifest is not None and manifest["stage"] == "pro" and manifest["adapter"] is True
    assert manifest["parent"] == str(sft_adapter.resolve()) and manifest["base"] == str(tiny_base.resolve())
    assert manifest["metrics"]["rank_length"] == 5 and manifest["metrics"]["train_lists"] == 4
    model, _, _ = load_rewriter_model(result.model_dir)
    loaded = dict(model.named_parameters())
    for name in frozen.trainable:
        torch.testing.assert_close(loaded[name], frozen.after[name])


def test_pro_resumes_and_reports_the_holdout(
    tiny_base: Path, pro_file: Path, sft_adapter: Path, tmp_path: Path
) -> None:
    class Interrupt(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if state.global_step == 3 and logs and "loss" in logs:
                raise KeyboardInterrupt

    recipe = _pro_recipe(tiny_base, pro_file, sft_adapter, batch_size=3, micro_batch_size=1)
    recipe["data"]["holdout"] = 1
    with pytest.raises(KeyboardInterrupt):
        train_pro(recipe, output_dir=tmp_path / "run", callbacks=[Interrupt()])
    result = train_pro(recipe, output_dir=tmp_path / "run")
    steps = [json.loads(ln)["step"] for ln in result.log_path.read_text().splitlines() if '"train"' in ln]
    assert steps == [1, 2, 3, 4] and result.metrics["resumed_from_step"] == 2
    assert result.metrics["holdout_lists"] == 1 and result.metrics["eval_loss"] > 0
    assert 0 <= result.metrics["eval_top1"] <= 1 and 0 <= result.metrics["eval_pair_acc"] <= 1


def test_policy_sources(tiny_base: Path, sft_adapter: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    full_model, tokenizer, _ = load_rewriter_model(tiny_base)
    full = save_rewriter(full_model, tokenizer, tmp_path / "full", stage="sft", base=tiny_base)
    fresh = load_policy({"init": str(full), "lora": LORA})  # a new adapter over the full SFT model
    assert fresh.base == str(full.resolve()) and fresh.parent == str(full.resolve())
    assert hasattr(fresh.model, "peft_config")
    whole = load_policy({"init": str(full), "lora": None})  # full fine-tuning goes on; base stays the origin
    assert whole.base == str(tiny_base.resolve()) and not hasattr(whole.model, "peft_config")
    with caplog.at_level(logging.WARNING):
        kept = load_policy({"init": str(sft_adapter), "lora": {"r": 8}})
    assert "ignored" in caplog.text and kept.base == str(tiny_base.resolve())
    assert all(p.requires_grad == ("lora_" in n) for n, p in kept.model.named_parameters())
    with pytest.raises(ValueError, match=r"unknown 'model.lora' recipe key"):
        load_policy({"base": str(tiny_base), "lora": {"rank": 4}})
