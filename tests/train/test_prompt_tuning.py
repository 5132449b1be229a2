"""LAMP training (§3.4, eq. 10-11, Table 5): losses against hand-computed values, and on a tiny CLIP built offline,
exactly which parameters move in each stage."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from lumir.models.action_model import ActionAwareModel
from lumir.testing.tiny import build_tiny_clip
from lumir.train.prompt_tuning import (
    PromptTuningConfig,
    PromptTuningData,
    PromptTuningTrainer,
    lamp_contrastive_loss,
    lamp_triplet_loss,
    stage_plan,
)

COLORS = ("red", "blue", "green", "white", "black", "yellow")
TINY_PROMPT = {"num_triplets": 2, "heads": 2, "adapter_dim": 4}


def test_contrastive_loss_hand_computed() -> None:
    s = torch.tensor([[0.5, 0.1], [0.3, 0.2]])
    scale = 2.0
    e = math.exp
    # logits = 2 * s: rows [1.0, 0.2], [0.6, 0.4]; columns [1.0, 0.6], [0.2, 0.4]
    t2i = -(math.log(e(1.0) / (e(1.0) + e(0.2))) + math.log(e(0.4) / (e(0.6) + e(0.4)))) / 2
    i2t = -(math.log(e(1.0) / (e(1.0) + e(0.6))) + math.log(e(0.4) / (e(0.2) + e(0.4)))) / 2
    assert lamp_contrastive_loss(s, scale).item() == pytest.approx(t2i + i2t, abs=1e-6)


def test_triplet_loss_hand_computed() -> None:
    s = torch.tensor([[0.9, 0.8, 0.1], [0.1, 0.5, 0.6], [0.0, 0.2, 0.7]])
    # rows (caption -> images), hardest negative: max(.8-.9+.2,0)=.1, max(.6-.5+.2,0)=.3, max(.2-.7+.2,0)=0
    # columns (image -> captions): max(.1-.9+.2,0)=0, max(.8-.5+.2,0)=.5, max(.6-.7+.2,0)=.1
    assert lamp_triplet_loss(s, 0.2).item() == pytest.approx(0.4 / 3 + 0.6 / 3, abs=1e-6)
    # summed over negatives: rows .1+0, 0+.3, 0+0 ; columns 0+0, .5+0, 0+.1
    assert lamp_triplet_loss(s, 0.2, hardest=False).item() == pytest.approx(0.4 / 3 + 0.6 / 3, abs=1e-6)
    assert lamp_triplet_loss(torch.eye(3), 0.5).item() == 0.0  # every margin met


def test_stage_plans_follow_table5() -> None:
    assert [s.name for s in stage_plan(PromptTuningConfig(schedule="one-stage"))] == ["stage1"]
    combined = stage_plan(PromptTuningConfig(schedule="combined", stage1_epochs=2, stage2_epochs=1))
    assert [(s.epochs, s.losses) for s in combined] == [(3, ("contrastive", "triplet"))]
    assert stage_plan(PromptTuningConfig(), has_interaction=False)[1].groups == ("prompts",)
    with pytest.raises(ValueError, match="schedule"):
        PromptTuningConfig(schedule="three-stage")  # type: ignore[arg-type]


def _setup(**prompt: object) -> tuple[ActionAwareModel, PromptTuningData]:
    model = ActionAwareModel.from_towers(*build_tiny_clip(), prompt={**TINY_PROMPT, **prompt})
    photos = [Image.new("RGB", (30, 30), c) for c in COLORS]
    captions = [f"a {c} square" for c in COLORS]
    knowledge = [([("square", "is", c)], [f"The square is {c}."]) for c in COLORS]
    data = PromptTuningData(
        images=model.images(photos),
        knowledge=model.knowledge(knowledge),
        texts=model.caption_embeddings(captions),
        image_of=torch.arange(len(COLORS)),
    )
    return model, data


def _snapshot(model: ActionAwareModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _moved(before: dict[str, torch.Tensor], model: ActionAwareModel) -> set[str]:
    return {k for k, v in model.named_parameters() if not torch.equal(before[k], v.detach())}


def _stage1_config(**kw: object) -> PromptTuningConfig:
    base = {"batch_size": 3, "stage1_epochs": 1, "stage2_epochs": 1, "warmup_steps": 1, "stage1_lr": 1e-2,
            "stage2_lr": 1e-2}  # fmt: skip
    return PromptTuningConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_stage1_moves_prompts_and_interaction_never_clip() -> None:
    model, data = _setup()
    before = _snapshot(model)
    trainer = PromptTuningTrainer(model, data, _stage1_config(schedule="one-stage"))
    t0 = float(trainer.temperature.temperature.detach())
    trainer.train()
    moved = _moved(before, model)
    assert not any(k.startswith("backbone.") for k in moved)  # CLIP frozen
    assert {"prompter.visual_prompts", "prompter.adapter.down.weight"} <= moved
    assert any(k.startswith("prompter.triplet_encoder.") for k in moved)
    assert any(k.startswith("prompter.interaction.") for k in moved)
    assert float(trainer.temperature.temperature.detach()) != t0  # learnable temperature (eq. 10)


def test_stage2_moves_only_the_interaction_module() -> None:
    model, data = _setup()
    trainer = PromptTuningTrainer(model, data, _stage1_config(stage1_epochs=0, margin=2.0))
    before = _snapshot(model)
    t0 = float(trainer.temperature.temperature.detach())
    trainer.train()
    moved = _moved(before, model)
    assert moved and all(k.startswith("prompter.interaction.") for k in moved)
    assert float(trainer.temperature.temperature.detach()) == t0


def test_two_stage_then_save_reload_matches(tmp_path: Path) -> None:
    model, data = _setup()
    summary = PromptTuningTrainer(model, data, _stage1_config(), tmp_path / "run").train()
    assert [e["stage"] for e in summary.epochs] == ["stage1", "stage2"]
    assert (tmp_path / "run" / "log.jsonl").read_text().count("\n") == 2
    assert all(not p.requires_grad for p in model.parameters())


def test_resume_continues_to_the_same_result(tmp_path: Path) -> None:
    config = _stage1_config(stage1_epochs=2)
    full_model, data = _setup()
    PromptTuningTrainer(full_model, data, config, tmp_path / "full").train()

    model, data = _setup()
    short = PromptTuningTrainer(model, data, _stage1_config(stage1_epochs=2, stage2_epochs=0), tmp_path / "cut")
    # simulate a crash after stage 1 epoch 0: run one epoch by hand through a trainer whose plan stops early
    short.plan = short.plan[:1]
    short.plan[0].epochs = 1
    short.config = config  # the checkpoint records the full run's config
    short.train()
    resumed_model, _ = _setup()
    PromptTuningTrainer(resumed_model, data, config, tmp_path / "cut").train()
    for (k, a), (_, b) in zip(
        full_model.trainable_state().items(), resumed_model.trainable_state().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-5), k


def test_resume_refuses_another_config(tmp_path: Path) -> None:
    model, data = _setup()
    PromptTuningTrainer(model, data, _stage1_config(schedule="one-stage"), tmp_path).train()
    with pytest.raises(ValueError, match="another training config"):
        PromptTuningTrainer(model, data, _stage1_config(schedule="one-stage", margin=0.5), tmp_path).train()


def test_paired_and_cross_scores_agree_on_the_diagonal() -> None:
    model, data = _setup()
    captions = torch.tensor([0, 1, 2])
    cross = PromptTuningTrainer(model, data, _stage1_config()).scores(captions)
    paired = PromptTuningTrainer(model, data, _stage1_config(pairing="paired")).scores(captions)
    assert cross.shape == paired.shape == (3, 3)
    assert torch.allclose(cross.diagonal(), paired.diagonal(), atol=1e-5)  # own image with own knowledge


def test_cat_variant_trains_prompts_in_stage2() -> None:
    model, data = _setup(interaction="cat")
    trainer = PromptTuningTrainer(model, data, _stage1_config(stage1_epochs=0, margin=2.0))
    before = _snapshot(model)
    trainer.train()
    moved = _moved(before, model)
    assert moved and all(k.startswith("prompter.") and "interaction" not in k for k in moved)


def test_first_stage_batches_cover_every_caption_once_without_repeated_photos() -> None:
    from lumir.train.prompt_tuning import first_stage_batches

    g = torch.Generator().manual_seed(1)
    texts = torch.nn.functional.normalize(torch.randn(30, 8, generator=g), dim=-1)
    base = torch.nn.functional.normalize(torch.randn(10, 8, generator=g), dim=-1)
    image_of = torch.arange(30) % 10  # three captions per photo
    batches = first_stage_batches(texts, base, image_of, 4, torch.Generator().manual_seed(0))
    flat = torch.cat(batches).tolist()
    assert sorted(flat) == list(range(30))
    assert all(len(set(image_of[b].tolist())) == len(b) <= 4 for b in batches)
    # the seed caption's batch holds the photos the first stage ranks highest for it
    first = batches[0]
    ranked = (texts[first[0]] @ base.T).argsort(descending=True).tolist()
    assert [int(image_of[c]) for c in first[1:]] == [p for p in ranked if p != int(image_of[first[0]])][
        : len(first) - 1
    ]


def test_trainer_runs_with_first_stage_batching() -> None:
    model, data = _setup()
    data.images["base"] = torch.nn.functional.normalize(torch.randn(len(COLORS), 16), dim=-1)
    summary = PromptTuningTrainer(model, data, _stage1_config(schedule="one-stage", batching="first_stage")).train()
    assert summary.steps >= 2
    with pytest.raises(ValueError, match="batching"):
        PromptTuningConfig(batching="hard")  # type: ignore[arg-type]
