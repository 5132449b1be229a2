"""The lumir-mini recipe end to end on a tiny Flickr8k-layout folder: train, save, reload as an embedder, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from lumir.cli.main import app
from lumir.embed import load_embedder
from lumir.errors import DataFormatError
from lumir.train.recipe import apply_overrides, load_recipe, run_recipe

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "mini" / "flickr8k.yaml"


def _tiny_recipe(tmp_path: Path, **train: object) -> dict[str, object]:
    recipe = load_recipe(RECIPE)
    overrides = [
        "data.split=train_tiny",
        f"features.cache_dir={tmp_path / 'features'}",
        f"output_dir={tmp_path / 'run'}",
        "model.dim=16",
        "train.epochs=3",
        "train.batch_size=8",
        "train.warmup_steps=1",
        *(f"train.{k}={v}" for k, v in train.items()),
    ]
    return apply_overrides(recipe, overrides)


def test_shipped_recipe_trains_on_train_4k_only() -> None:
    recipe = load_recipe(RECIPE)
    assert recipe["kind"] == "mini" and recipe["data"]["split"] == "train_4k"
    assert "test" not in json.dumps(recipe["data"])


def test_train_save_reload_and_embed(tiny_flickr8k: Path, tmp_path: Path) -> None:
    result = run_recipe(_tiny_recipe(tmp_path), data=tiny_flickr8k, show_progress=False)
    assert result.summary.epochs == 3 and result.summary.steps > 0
    losses = [r["epoch_loss"] for r in result.summary.history]
    assert losses[-1] < losses[0]
    assert (result.model_dir / "config.json").is_file() and (tmp_path / "run" / "recipe.yaml").is_file()
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["meta"]["data"] == {"dataset": "flickr8k", "split": "train_tiny", "images": 12, "captions": 60}
    embedder = load_embedder(f"mini:{result.model_dir}")
    assert load_embedder(embedder.spec()).spec() == embedder.spec()  # index folders rebuild it from the spec
    from lumir.data.flickr8k import load_flickr8k

    images, captions = load_flickr8k(tiny_flickr8k / "flickr8k", "train_tiny")
    img = embedder.embed(images[:3], role="candidate")
    txt = embedder.embed(captions[:3], role="query")
    assert img.shape == txt.shape == (3, 16)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(3))


def test_holdout_reports_validation_recall(tiny_flickr8k: Path, tmp_path: Path) -> None:
    recipe = apply_overrides(_tiny_recipe(tmp_path), ["data.holdout=4"])
    result = run_recipe(recipe, data=tiny_flickr8k, show_progress=False)
    assert set(result.validation) >= {"val_t2i_R@1", "val_i2t_R@10", "val_rsum"}
    assert result.summary.history[-1]["val_rsum"] == result.validation["val_rsum"]
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["meta"]["data"]["images"] == 8


def test_recipe_errors(tiny_flickr8k: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="refusing to train on the test split"):
        run_recipe(apply_overrides(_tiny_recipe(tmp_path), ["data.split=test_1k"]), data=tiny_flickr8k)
    with pytest.raises(ValueError, match="unknown train option"):
        run_recipe(apply_overrides(_tiny_recipe(tmp_path), ["train.epoch=1"]), data=tiny_flickr8k)
    with pytest.raises(ValueError, match="unknown head option"):
        run_recipe(apply_overrides(_tiny_recipe(tmp_path), ["model.text_head.depth=2"]), data=tiny_flickr8k)
    with pytest.raises(ValueError, match=r"unknown 'features' recipe key\(s\) \['view'\]"):
        run_recipe(apply_overrides(_tiny_recipe(tmp_path), ["features.view=[original]"]), data=tiny_flickr8k)
    with pytest.raises(ValueError, match="data.holdout must be in"):
        run_recipe(apply_overrides(_tiny_recipe(tmp_path), ["data.holdout=6"]), data=tiny_flickr8k)
    assert not (tmp_path / "features").exists()  # every check above fails before any feature is computed
    with pytest.raises(FileNotFoundError, match="--data"):
        run_recipe(_tiny_recipe(tmp_path), data=tmp_path / "nowhere")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: nope\n")
    with pytest.raises(DataFormatError, match="recipe kind 'nope'"):
        load_recipe(bad)
    bad.write_text("kind: [unclosed\n")
    with pytest.raises(DataFormatError, match="invalid YAML"):
        load_recipe(bad)
    with pytest.raises(ValueError, match="must look like"):
        apply_overrides({}, ["train.epochs"])


def test_cli_train_embedder(tiny_flickr8k: Path, tmp_path: Path) -> None:
    recipe_path = tmp_path / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump(_tiny_recipe(tmp_path)))
    out = tmp_path / "cli-run"
    args = ["train", "embedder", "--config", str(recipe_path), "--data", str(tiny_flickr8k), "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--set", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    assert "trained 2 epochs" in result.output and f"mini:{out / 'model'}" in result.output
    again = CliRunner().invoke(app, [*args, "--set", "train.epochs=2"])  # resumes: nothing left to do
    assert again.exit_code == 0 and "trained 2 epochs" in again.output
    changed = CliRunner().invoke(app, [*args, "--set", "train.lr=0.5"])
    assert changed.exit_code == 2 and "other train settings" in changed.output
    missing = CliRunner().invoke(app, ["train", "embedder", "--config", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 2 and "recipe not found" in missing.output


def _augment_file(path: Path, tiny_flickr8k: Path, *, model: str = "llm-a", per_image: int = 1) -> Path:
    """One paraphrase record per photo's first caption (an incomplete one for the cat crops) and one photo caption."""
    from lumir.data.flickr8k import load_flickr8k

    _, captions = load_flickr8k(tiny_flickr8k / "flickr8k", "train_tiny")
    lines, seen = [], {}
    for c in captions:
        photo = c.meta["image"]
        seen[photo] = seen.get(photo, 0) + 1
        if seen[photo] > per_image:
            continue
        complete = not photo.startswith("cat")
        lines.append(
            {
                "id": f"{c.id}#{model}",
                "source_id": c.id,
                "model": model,
                "kind": "llm-paraphrase",
                "prompt": "p",
                "T": 5,
                "raw": f"rewritten {c.text}",
                "text": f"rewritten {c.text}",
                "cut": False,
                "complete": complete,
            }
        )
    lines.append(
        {
            "id": "rocket_0.jpg#vlm",
            "source_id": "rocket_0.jpg",
            "model": "vlm",
            "kind": "mllm-caption",
            "prompt": "q",
            "T": 5,
            "raw": "a rocket",
            "text": "a tall rocket",
            "cut": True,
            "complete": True,
        }
    )
    path.write_text("\n".join(json.dumps(rec) for rec in lines) + "\n")
    return path


def test_augmented_captions_add_pairs_and_scale_epochs(tiny_flickr8k: Path, tmp_path: Path) -> None:
    aug = _augment_file(tmp_path / "aug.jsonl", tiny_flickr8k)
    recipe = apply_overrides(_tiny_recipe(tmp_path, epochs=10), [f"data.augmented=[{aug}, {aug}]"])
    result = run_recipe(recipe, data=tiny_flickr8k, show_progress=False)
    meta = json.loads((result.model_dir / "config.json").read_text())["meta"]
    # 12 photos x 5 raw captions; 9 complete paraphrases (the 3 cat crops are incomplete) + 1 photo caption;
    # the second copy of the file adds nothing
    assert meta["augmentation"] == {
        "files": [str(aug), str(aug)],
        "records": 26,
        "used": 10,
        "by_model": {"llm-a": 9, "vlm": 1},
        "kinds": ["llm-paraphrase", "mllm-caption"],
        "require_complete": True,
        "raw_pairs": 60,
        "pairs": 70,
        "k": 1.1667,
        "epochs_raw": 10,
        "epochs": 9,
    }
    assert result.summary.epochs == 9
    caches = [p.name for p in (tmp_path / "features").iterdir()]
    assert sum(name.startswith("flickr8k-train_tiny-augmented-") for name in caches) == 1

    loose = apply_overrides(
        _tiny_recipe(tmp_path, epochs=10),
        [
            f"data.augmented={aug}",
            "data.require_complete=false",
            "data.scale_epochs=false",
            f"output_dir={tmp_path / 'r2'}",
        ],
    )
    meta2 = json.loads(
        (run_recipe(loose, data=tiny_flickr8k, show_progress=False).model_dir / "config.json").read_text()
    )
    assert meta2["meta"]["augmentation"]["used"] == 13 and meta2["meta"]["augmentation"]["pairs"] == 73
    assert "epochs" not in meta2["meta"]["augmentation"] and meta2["meta"]["training"]["epochs"] == 10


def test_augmented_captions_of_holdout_photos_stay_out(tiny_flickr8k: Path, tmp_path: Path) -> None:
    aug = _augment_file(tmp_path / "aug.jsonl", tiny_flickr8k)
    recipe = apply_overrides(_tiny_recipe(tmp_path), [f"data.augmented={aug}", "data.holdout=4"])
    result = run_recipe(recipe, data=tiny_flickr8k, show_progress=False)
    meta = json.loads((result.model_dir / "config.json").read_text())["meta"]
    # the last 4 photos (rocket crops + astronaut_2 ... in file order) keep their captions out of training
    assert meta["data"]["captions"] == 40 and meta["augmentation"]["raw_pairs"] == 40
    assert meta["augmentation"]["pairs"] == 40 + 5  # astronaut_0/1 and coffee_0..2 paraphrases only


def test_augmented_caption_errors(tiny_flickr8k: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data.augmented"):
        run_recipe(
            apply_overrides(_tiny_recipe(tmp_path), [f"data.augmented={tmp_path / 'no.jsonl'}"]), data=tiny_flickr8k
        )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source_id": "x", "model": "m", "kind": "llm-paraphrase"}\nnot json\n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl.*line 2"):
        run_recipe(apply_overrides(_tiny_recipe(tmp_path), [f"data.augmented={bad}"]), data=tiny_flickr8k)
    other = tmp_path / "other.jsonl"
    other.write_text(
        json.dumps(
            {
                "id": "z#m",
                "source_id": "z",
                "model": "m",
                "kind": "llm-paraphrase",
                "prompt": "",
                "T": 3,
                "text": "words",
                "complete": True,
            }
        )
        + "\n"
    )
    with pytest.raises(ValueError, match="none of the 1 records"):
        run_recipe(apply_overrides(_tiny_recipe(tmp_path), [f"data.augmented={other}"]), data=tiny_flickr8k)


def test_tiny_vlm_captions_train_through_the_recipe(tiny_flickr8k: Path, tmp_path: Path) -> None:
    """The whole captioning path: a pool of two tiny LLaVAs captions the photos, the recipe trains on them."""
    from lumir.augment.caption import MultiViewCaptioner
    from lumir.data.flickr8k import load_flickr8k
    from lumir.models.chat.hf import TransformersChatModel
    from lumir.testing.tiny import build_tiny_llava

    images, _ = load_flickr8k(tiny_flickr8k / "flickr8k", "train_tiny")
    pool = {f"llava-{s}": TransformersChatModel(*build_tiny_llava(seed=s)) for s in (0, 1)}
    out = tmp_path / "captions.jsonl"
    MultiViewCaptioner(pool, max_new_tokens=6, batch_size=4).run(images, out, progress=False)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    usable = sum(bool(r["text"].strip()) for r in records)
    assert len(records) == 24 and usable > 0
    recipe = apply_overrides(_tiny_recipe(tmp_path), [f"data.augmented={out}", "data.require_complete=false"])
    result = run_recipe(recipe, data=tiny_flickr8k, show_progress=False)
    aug = json.loads((result.model_dir / "config.json").read_text())["meta"]["augmentation"]
    assert aug["kinds"] == ["mllm-caption"] and aug["used"] == usable and aug["pairs"] == 60 + usable
    assert set(aug["by_model"]) <= {"llava-0", "llava-1"}


def test_cached_rewrites_replace_training_captions(tiny_flickr8k: Path, tmp_path: Path) -> None:
    from lumir.data.flickr8k import load_flickr8k

    _, captions = load_flickr8k(tiny_flickr8k / "flickr8k", "train_tiny")
    path = tmp_path / "rewrites.jsonl"
    rows = [{"id": c.id, "text": f"a clear photo: {c.text}", "original": c.text} for c in captions[:20]]
    rows.append({"id": captions[20].id, "text": captions[20].text, "original": captions[20].text, "fallback": "echo"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = apply_overrides(_tiny_recipe(tmp_path), [f"data.rewrites={{path: {path}, p: 0.6}}"])
    result = run_recipe(recipe, data=tiny_flickr8k, show_progress=False)
    meta = json.loads((result.model_dir / "config.json").read_text())["meta"]
    assert meta["rewriting"] == {"path": str(path), "records": 21, "captions_with_rewrite": 20, "p": 0.6}
    assert sum(p.name.startswith("rewrites-") for p in (tmp_path / "features").iterdir()) == 1
    path.write_text("not json\n")
    with pytest.raises(DataFormatError, match="line 1"):
        run_recipe(apply_overrides(recipe, [f"output_dir={tmp_path / 'r3'}"]), data=tiny_flickr8k, show_progress=False)
