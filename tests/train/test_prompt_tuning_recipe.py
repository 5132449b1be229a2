"""``kind: prompt_tuning`` recipes end to end on a tiny CLIP built offline and a Karpathy-format toy set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lumir.data.knowledge import KnowledgeStore, normalize_text
from lumir.models.action_model import ActionAwareModel
from lumir.testing.tiny import save_tiny_clip
from lumir.testing.toy import color_image
from lumir.train.prompt_tuning_recipe import rescored_recall, run_prompt_tuning_recipe

COLORS = ("red", "blue", "green", "white", "black", "yellow", "orange", "purple")


def _world(tmp_path: Path) -> dict:
    images = tmp_path / "images"
    images.mkdir()
    entries, knowledge = [], []
    for c in COLORS:
        color_image(c).save(images / f"{c}.png")
        entries.append({"image": f"{c}.png", "caption": [f"a {c} square", f"the square is {c}"]})
        knowledge.append({"id": f"{c}.png#0", "caption": f"a {c} square", "triplets": [["square", "is", c]],
                          "states": [f"The square is painted {c}."], "valid": True})  # fmt: skip
    (tmp_path / "toy_train.json").write_text(json.dumps(entries))
    kpath = tmp_path / "k.jsonl"
    kpath.write_text("".join(json.dumps(r) + "\n" for r in knowledge))
    clip = save_tiny_clip(tmp_path / "clip")
    return {
        "kind": "prompt_tuning",
        "model": {
            "backbone": {"kind": "clip", "path": str(clip)},
            "prompt": {"num_triplets": 2, "heads": 2, "adapter_dim": 4},
        },
        "data": {
            "dataset": "karpathy",
            "annotations": str(tmp_path / "toy_train.json"),
            "images": str(images),
            "knowledge": [str(kpath)],
            "holdout": 2,
        },
        "features": {"cache_dir": str(tmp_path / "cache")},
        "eval": {"k": 3},
        "train": {"batch_size": 3, "stage1_epochs": 1, "stage2_epochs": 1, "warmup_steps": 1},
        "output_dir": str(tmp_path / "run"),
    }


def test_recipe_trains_saves_and_reports_holdout(tmp_path: Path) -> None:
    recipe = _world(tmp_path)
    result = run_prompt_tuning_recipe(recipe, show_progress=False)
    assert result["train_photos"] == 6 and result["train_captions"] == 6  # holdout photos never train
    assert result["holdout_captions"] == 2  # only captions with knowledge (the #0 ones)
    assert [e["stage"] for e in result["epochs"]] == ["stage1", "stage2"]
    assert all("val_t2i_R@1" in e and "val_i2t_R@1" in e for e in result["epochs"])
    assert set(result["holdout_first_stage"]) == {f"val_{d}_R@{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)}
    model = ActionAwareModel.load(Path(result["model"]))
    assert model.meta["train_photos"] == 6
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert len(list((tmp_path / "cache").rglob("inputs-*.pt"))) == 1
    # a second run resumes from the finished checkpoint: nothing retrains
    again = run_prompt_tuning_recipe(recipe, show_progress=False)
    assert again["steps"] == 0 and again["epochs"] == result["epochs"]


def test_recipe_refuses_test_splits_and_unknown_keys(tmp_path: Path) -> None:
    recipe = _world(tmp_path)
    with pytest.raises(ValueError, match="unknown prompt_tuning recipe keys"):
        run_prompt_tuning_recipe({**recipe, "optimizer": {}}, show_progress=False)
    test_file = tmp_path / "toy_test.json"
    test_file.write_text((tmp_path / "toy_train.json").read_text())
    with pytest.raises(ValueError, match="test split"):
        run_prompt_tuning_recipe({**recipe, "data": {**recipe["data"], "annotations": str(test_file)}})
    with pytest.raises(FileNotFoundError, match="knowledge file not found"):
        run_prompt_tuning_recipe({**recipe, "data": {**recipe["data"], "knowledge": [str(tmp_path / "nope.jsonl")]}})


def test_rescored_recall_equals_manual_reranking() -> None:
    from lumir.testing.tiny import build_tiny_clip

    model = ActionAwareModel.from_towers(*build_tiny_clip(), prompt={"num_triplets": 2, "heads": 2, "adapter_dim": 4})
    photos = [color_image(c) for c in COLORS[:5]]
    images = model.images(photos)
    images["base"] = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)  # a first stage with known scores
    texts = model.caption_embeddings([f"a {c} square" for c in COLORS[:5]])
    kb = model.knowledge([([("square", "is", c)], [""]) for c in COLORS[:5]])
    image_of = torch.arange(5)
    got = rescored_recall(model, images, kb, texts, image_of, k=3, ks=(1,))
    first = texts @ images["base"].T
    hits_t2i = hits_i2t = 0
    for q in range(5):
        top = first[q].topk(3).indices
        z = model.encode({n: v[top] for n, v in images.items()}, kb.index([q] * 3))
        hits_t2i += int(top[(z * texts[q]).sum(-1).argmax()] == q)
        top = first[:, q].topk(3).indices
        z = model.encode({n: v[[q] * 3] for n, v in images.items()}, kb.index(top))
        hits_i2t += int(top[(z * texts[top]).sum(-1).argmax()] == q)
    assert got == {"t2i_R@1": 100.0 * hits_t2i / 5, "i2t_R@1": 100.0 * hits_i2t / 5}
    only = rescored_recall(model, images, kb, texts, image_of, k=3, ks=(1,), first_stage_only=True)
    assert only["t2i_R@1"] == 100.0 * float((first.argmax(dim=1) == image_of).float().mean())


def test_knowledge_store_lookup(tmp_path: Path) -> None:
    from lumir.errors import DataFormatError

    path = tmp_path / "k.jsonl"
    path.write_text(json.dumps({"id": "a#0", "caption": "A dog runs .", "triplets": [["dog", "runs", "park"]],
                                "states": []}) + "\n")  # fmt: skip
    store = KnowledgeStore(path)
    assert store.record(text="a dog runs.")["id"] == "a#0"  # type: ignore[index]
    assert store.record(id="a#0") is not None and store.record(text="a cat") is None
    assert store.knowledge(store.by_id["a#0"]) == ([("dog", "runs", "park")], [""])
    assert normalize_text(" A  dog , runs .") == "a dog, runs."
    path.write_text('{"id": "a#0", "caption": "x", "triplets": []}\n{"id": "b#0", "trip')
    with pytest.raises(DataFormatError, match="line 2"):
        KnowledgeStore(path)


def test_cli_train_prompt(tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from lumir.cli.main import app

    recipe = _world(tmp_path)
    recipe["train"]["schedule"] = "one-stage"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    res = CliRunner().invoke(app, ["train", "prompt", "--config", str(path), "--set", "train.stage1_epochs=1"])
    assert res.exit_code == 0, res.output
    assert "model: " in res.output and "--rerank action-aware:model=" in res.output
    assert (tmp_path / "run" / "model" / "lumir_action_model.json").is_file()
    bad = CliRunner().invoke(app, ["train", "prompt", "--config", str(path), "--set", "train.schedule=three"])
    assert bad.exit_code != 0 and "schedule" in bad.output and "Traceback" not in bad.output
