"""SFT (eq. 1) on a tiny offline LM: what trl renders, loss falling, LoRA-only updates, reload, resume, holdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer, TrainerCallback

from lumir.rewrite.artifact import load_rewriter_model, read_manifest
from lumir.train.rewriter.common import encode_completions, prompt_text
from lumir.train.rewriter.sft import sft_example, train_sft
from rewriter_files import tiny_recipe


class Snapshot(TrainerCallback):
    """Every parameter at the start and at the end of training, and which ones were trainable."""

    def __init__(self) -> None:
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}
        self.trainable: set[str] = set()

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.after = {n: p.detach().clone() for n, p in model.named_parameters()}


class Interrupt(TrainerCallback):
    """Stops a run (as a crash would) once ``step`` has been logged."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if state.global_step == self.step and logs and "loss" in logs:
            raise KeyboardInterrupt(f"interrupted at step {self.step}")


def _train_records(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if r["kind"] == "train"]


def test_rendered_example_is_the_inference_prompt_plus_the_rewrite(tiny_base: Path) -> None:
    from trl.data_utils import apply_chat_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    query, rewrite = "a red dog", "the red dog in a photo"
    rendered = apply_chat_template(sft_example(query, rewrite), tokenizer)  # what SFTTrainer tokenises
    assert rendered["prompt"] == prompt_text(tokenizer, query)
    full = rendered["prompt"] + rendered["completion"]
    assert full.startswith(prompt_text(tokenizer, query) + rewrite)
    tail = full[len(prompt_text(tokenizer, query) + rewrite) :]
    assert tail.strip() == tokenizer.eos_token  # only the template's end of turn follows the rewrite
    # token level: SFT's completion tokens start with what PRO/PPO score (rewrite + EOS)
    enc = encode_completions(tokenizer, [query], [rewrite])
    scored = enc.input_ids[0][enc.completion_mask[0].bool()].tolist()
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    n_prompt = len(tokenizer(rendered["prompt"], add_special_tokens=False)["input_ids"])
    assert ids[:n_prompt] == enc.input_ids[0][:n_prompt].tolist()
    assert ids[n_prompt : n_prompt + len(scored)] == scored


def test_sft_trains_lora_only_and_reloads(tiny_base: Path, sft_file: Path, tmp_path: Path) -> None:
    snap = Snapshot()
    result = train_sft(tiny_recipe("sft", tiny_base, sft_file), output_dir=tmp_path / "run", callbacks=[snap])
    losses = [r["loss"] for r in _train_records(result.log_path)]
    assert [r["step"] for r in _train_records(result.log_path)] == [1, 2, 3, 4]
    assert losses[-1] < losses[0] and result.metrics["train_loss"] == losses[-1]
    assert snap.trainable and all("lora_" in n for n in snap.trainable)
    for name, before in snap.before.items():
        moved = not torch.equal(before, snap.after[name])
        assert moved == ("lora_B" in name or ("lora_A" in name)), name  # base weights never move
    manifest = read_manifest(result.model_dir)
    assert manifest is not None and manifest["stage"] == "sft" and manifest["adapter"] is True
    assert manifest["base"] == str(tiny_base.resolve()) and manifest["parent"] is None
    assert manifest["config"]["train"]["max_steps"] == 4 and manifest["metrics"]["steps"] == 4
    assert not (result.model_dir / "model.safetensors").exists()  # an adapter, not a copy of the base
    model, _, _ = load_rewriter_model(result.model_dir)
    loaded = dict(model.named_parameters())
    for name in snap.trainable:
        torch.testing.assert_close(loaded[name], snap.after[name])
    assert (tmp_path / "run" / "recipe.yaml").is_file() and (tmp_path / "run" / "result.json").is_file()


def test_resume_continues_from_the_checkpoint(tiny_base: Path, sft_file: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe("sft", tiny_base, sft_file)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_sft(recipe, output_dir=out, callbacks=[Interrupt(3)])
    interrupted = _train_records(out / "log.jsonl")
    assert [r["step"] for r in interrupted] == [1, 2, 3] and (out / "checkpoints" / "checkpoint-2").is_dir()
    result = train_sft(recipe, output_dir=out)
    records = _train_records(result.log_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # step 3 redone once, steps 1-2 not repeated
    assert result.metrics["resumed_from_step"] == 2 and result.metrics["steps"] == 4
    assert records[2]["loss"] == pytest.approx(interrupted[2]["loss"], rel=1e-5)  # same state, same batch
    again = train_sft(recipe, output_dir=out, resume=False)  # starts over
    assert again.metrics["resumed_from_step"] == 0 and len(_train_records(again.log_path)) == 4


def test_holdout_reports_eval_loss_and_full_finetuning(tiny_base: Path, sft_file: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe("sft", tiny_base, sft_file, max_steps=2, batch_size=3)
    recipe["data"]["holdout"] = 0.25
    recipe["model"]["lora"] = None
    result = train_sft(recipe, output_dir=tmp_path / "run")
    assert result.metrics["train_rows"] == 3 and result.metrics["holdout_rows"] == 1
    assert result.metrics["eval_loss"] > 0
    manifest = read_manifest(result.model_dir)
    assert manifest is not None and manifest["adapter"] is False
    assert (result.model_dir / "model.safetensors").is_file()
    evals = [json.loads(ln) for ln in result.log_path.read_text().splitlines() if '"eval"' in ln]
    assert evals and evals[-1]["eval_loss"] == pytest.approx(result.metrics["eval_loss"])


def test_recipe_errors(tiny_base: Path, sft_file: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe("sft", tiny_base, sft_file)
    with pytest.raises(ValueError, match=r"unknown 'train' recipe key\(s\) \['epoch'\]"):
        train_sft({**recipe, "train": {"epoch": 1}}, output_dir=tmp_path)
    with pytest.raises(ValueError, match="must divide"):
        train_sft({**recipe, "train": {"batch_size": 4, "micro_batch_size": 3}}, output_dir=tmp_path)
    with pytest.raises(ValueError, match="keeps all"):
        train_sft({**recipe, "data": {"train": str(sft_file), "holdout": 4}}, output_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"data\.train"):
        train_sft({**recipe, "data": {"train": str(tmp_path / "nope.jsonl")}}, output_dir=tmp_path)
