"""EmbedderTrainer on real (tiny, offline) transformers models through MLLMEmbedder: a LoRA text embedder and a
tiny LLaVA trained on images; the saved adapter reloads through the registry to identical vectors; recipes run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lumir.data.examples import TrainingExample, write_examples
from lumir.embed.factories import load_embedder
from lumir.embed.mllm import MLLMEmbedder
from lumir.testing.tiny import save_tiny_llava, save_tiny_lm
from lumir.train.embedder import EmbedderTrainConfig, EmbedderTrainer, trainable_weights
from lumir.train.rewriter.common import apply_lora
from lumir.types import Item, Query, Role

pytest.importorskip("peft")

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 20)}


def _text_examples() -> list[TrainingExample]:
    words = ["red dog", "blue cat", "green car", "small tree", "big sky", "the photo", "a match", "this image"]
    return [
        TrainingExample(Query(f"q{i}", text=w), Item(f"d{i}", text=f"{w} {w}"), (Item(f"n{i}", text=words[i - 1]),))
        for i, w in enumerate(words)
    ]


def _config(**kw: object) -> EmbedderTrainConfig:
    base: dict[str, object] = {"batch_size": 4, "lr": 5e-3, "logging_steps": 1, "save_steps": 1000, "seed": 0}
    base.update(kw)
    return EmbedderTrainConfig(**base)  # type: ignore[arg-type]


def test_lora_text_embedder_trains_saves_and_reloads(tmp_path: Path) -> None:
    base = save_tiny_lm(tmp_path / "base")
    embedder = MLLMEmbedder.from_pretrained(base, preset="lamra")
    embedder.model = apply_lora(embedder.model, LORA, task_type=None)
    frozen = {n: p.detach().clone() for n, p in embedder.model.named_parameters() if not p.requires_grad}
    before = trainable_weights(embedder.model)
    assert before and all("lora_" in n for n in before)
    data = _text_examples()
    trainer = EmbedderTrainer(embedder, data, _config(epochs=12, grad_cache_chunk=3), tmp_path / "run")
    first = trainer.batch_loss(data[:4]).item()
    result = trainer.train()
    last = trainer.batch_loss(data[:4]).item()
    assert last < first
    after = trainer.module.backbone.named_parameters()
    for name, param in after:
        if name in frozen:
            assert torch.equal(param, frozen[name]), f"frozen weight {name} moved"
    assert any(not torch.equal(before[n], p) for n, p in trainable_weights(embedder.model).items())
    items = [Item("a", text="red dog"), Item("b", text="a green car in the sky")]
    vectors = embedder.embed(items, role=Role.CANDIDATE)
    reloaded = load_embedder(f"mllm:{result['model_dir']}")
    assert torch.allclose(reloaded.embed(items, role=Role.CANDIDATE), vectors, atol=1e-5)
    assert (Path(result["model_dir"]) / "adapter_config.json").is_file()  # an adapter, not a full copy


def test_a_tiny_vision_language_model_trains_on_images(tmp_path: Path) -> None:
    from PIL import Image

    embedder = MLLMEmbedder.from_pretrained(save_tiny_llava(tmp_path / "llava"), preset="lamra")
    lora = {**LORA, "target_modules": r".*language_model.*\.(q_proj|v_proj)"}  # vision tower stays frozen
    embedder.model = apply_lora(embedder.model, lora, task_type=None)
    names = [n for n, p in embedder.model.named_parameters() if p.requires_grad]
    assert names and not any("vision" in n for n in names)
    data = []
    for name, rgb in COLOURS.items():
        path = tmp_path / f"{name}.png"
        Image.new("RGB", (32, 32), rgb).save(path)
        data.append(TrainingExample(Query(f"q-{name}", text=f"a {name} photo"), Item(name, image=str(path))))
    trainer = EmbedderTrainer(embedder, data, _config(epochs=10, lr=2e-2), tmp_path / "run")
    first = trainer.batch_loss(data).item()
    trainer.train()
    assert trainer.batch_loss(data).item() < first
    vectors = embedder.embed([d.positive for d in data], role=Role.CANDIDATE)
    assert vectors.shape == (4, embedder.dim) and torch.allclose(vectors.norm(dim=1), torch.ones(4), atol=1e-5)


def test_embedder_recipe_runs_and_continues_a_stage(tmp_path: Path) -> None:
    from lumir.train.recipe import run_recipe

    base = save_tiny_lm(tmp_path / "base")
    write_examples(tmp_path / "pairs.jsonl", _text_examples())
    recipe = {
        "kind": "embedder",
        "model": {"path": str(base), "preset": "lamra", "max_length": 16, "lora": LORA},
        "data": {"sources": [{"name": "pairs", "kind": "examples", "path": str(tmp_path / "pairs.jsonl")}]},
        "train": {"batch_size": 4, "max_steps": 3, "lr": 1e-3, "logging_steps": 1, "save_steps": 2},
        "output_dir": str(tmp_path / "stage1"),
    }
    result = run_recipe(recipe)
    assert result["steps"] == 3 and result["examples"] == {"pairs": 8} and result["seconds_per_step"] > 0
    assert (tmp_path / "stage1" / "result.json").is_file() and (tmp_path / "stage1" / "recipe.json").is_file()
    stage2 = {**recipe, "model": {"init": result["model_dir"]}, "output_dir": str(tmp_path / "stage2")}
    result2 = run_recipe(stage2)
    assert result2["steps"] == 3
    s1 = load_embedder(f"mllm:{result['model_dir']}")
    s2 = load_embedder(f"mllm:{result2['model_dir']}")
    assert s2.max_length == 16  # options saved with stage I carry over
    items = [Item("x", text="red dog")]
    assert not torch.allclose(s1.embed(items, role="candidate"), s2.embed(items, role="candidate"))
