"""``kind: rewriter`` recipes: profile/override resolution, stage dispatch, the shipped recipes and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lumir.cli.main import app
from lumir.registry import RECIPES
from lumir.rewrite.artifact import read_manifest
from lumir.train.recipe import load_recipe, run_recipe
from lumir.train.rewriter import run
from lumir.train.rewriter.run import resolve_rewriter_recipe, stage_runner
from rewriter_files import tiny_recipe

REPO = Path(__file__).resolve().parents[3]


def test_shipped_recipes_hold_the_papers_hyperparameters() -> None:
    sft = load_recipe(REPO / "recipes" / "rewriter" / "sft.yaml")
    assert (sft["kind"], sft["stage"]) == ("rewriter", "sft")
    assert {k: sft["train"][k] for k in ("learning_rate", "batch_size", "epochs")} == {
        "learning_rate": 1e-5, "batch_size": 32, "epochs": 10}  # fmt: skip
    pro = load_recipe(REPO / "recipes" / "rewriter" / "pro.yaml")
    assert (pro["kind"], pro["stage"]) == ("rewriter", "pro") and pro["model"]["init"]
    assert {k: pro["train"][k] for k in ("learning_rate", "batch_size", "epochs", "rank_length")} == {
        "learning_rate": 5e-7, "batch_size": 16, "epochs": 5, "rank_length": 5}  # fmt: skip
    for recipe in (sft, pro):
        cpu = resolve_rewriter_recipe(recipe, profile="cpu")
        assert cpu["model"]["lora"]["r"] > 0 and cpu["train"]["epochs"] <= 3
        from lumir.train.rewriter.loop import train_config
        from lumir.train.rewriter.pro import PRO_DEFAULTS

        train_config(cpu["train"], PRO_DEFAULTS if recipe["stage"] == "pro" else None)  # every key is known


def test_profile_applies_before_set_and_is_recorded() -> None:
    recipe = {
        "kind": "rewriter",
        "stage": "sft",
        "train": {"epochs": 10, "learning_rate": 1e-5},
        "profiles": {"cpu": {"train.epochs": 2, "train.learning_rate": 1e-4}},
    }
    resolved = resolve_rewriter_recipe(recipe, profile="cpu", overrides=["train.epochs=1"])
    assert resolved["train"] == {"epochs": 1, "learning_rate": 1e-4} and "profiles" not in resolved
    assert resolved["overrides"] == {
        "profile": "cpu",
        "profile_values": {"train.epochs": 2, "train.learning_rate": 1e-4},
        "set": ["train.epochs=1"],
    }
    assert "overrides" not in resolve_rewriter_recipe(recipe)
    with pytest.raises(ValueError, match=r"no profile 'gpu'; its profiles: \['cpu'\]"):
        resolve_rewriter_recipe(recipe, profile="gpu")
    with pytest.raises(ValueError, match="is for stage 'sft' but stage 'pro'"):
        resolve_rewriter_recipe(recipe, stage="pro")
    with pytest.raises(ValueError, match="names no stage"):
        resolve_rewriter_recipe({"kind": "rewriter"})
    assert resolve_rewriter_recipe({"kind": "rewriter"}, stage="pro")["overrides"] == {"stage": "pro"}
    with pytest.raises(ValueError, match="unknown rewriter stage 'dpo'"):
        resolve_rewriter_recipe({"kind": "rewriter"}, stage="dpo")
    with pytest.raises(ValueError, match="not a rewriter recipe"):
        resolve_rewriter_recipe({"kind": "mini"})


def test_stage_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert stage_runner("sft").__name__ == "train_sft" and stage_runner("pro").__name__ == "train_pro"
    monkeypatch.setitem(run.STAGES, "ppo", "lumir.train.rewriter.not_written_yet:train_ppo")
    with pytest.raises(ImportError, match="stage 'ppo' is not available"):
        stage_runner("ppo")
    assert RECIPES.load("rewriter") is run.run_rewriter_recipe


def test_run_recipe_and_cli(tiny_base: Path, sft_file: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe("sft", tiny_base, sft_file, max_steps=2)
    result = run_recipe(recipe, ["train.max_steps=1"], output_dir=tmp_path / "api", resume=False)
    assert result.metrics["steps"] == 1

    recipe["profiles"] = {"tiny": {"train.max_steps": 3, "train.learning_rate": 1e-2}}
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out = tmp_path / "cli"
    args = [
        "train",
        "rewriter",
        "--stage",
        "sft",
        "--config",
        str(path),
        "--profile",
        "tiny",
        "--set",
        "train.max_steps=2",
        "-o",
        str(out),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "trained 2 steps" in res.output and f"model: {out / 'model'}" in res.output
    assert f"--rewrite trained:{out / 'model'}" in res.output and "recipes/rewriter/pro.yaml" in res.output
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["train"]["max_steps"] == 2 and saved["train"]["learning_rate"] == 1e-2
    assert saved["overrides"]["profile"] == "tiny" and saved["overrides"]["set"] == ["train.max_steps=2"]
    manifest = read_manifest(out / "model")
    assert manifest is not None and manifest["config"]["overrides"] == saved["overrides"]
    assert json.loads((out / "result.json").read_text())["metrics"]["steps"] == 2

    bad = CliRunner().invoke(app, ["train", "rewriter", "--stage", "pro", "--config", str(path), "-o", str(out)])
    assert bad.exit_code == 2 and "is for stage 'sft'" in bad.output
