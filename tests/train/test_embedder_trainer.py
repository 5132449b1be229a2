"""EmbedderTrainer mechanics on a toy trainable embedder: the loss falls, frozen weights stay, GradCache equals the
full batch, resume continues the same run, and the false-negative mask follows the qrels."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

from lumir.data.examples import TrainingExample
from lumir.embed.base import EmbedInput
from lumir.train.embedder import EmbedderTrainConfig, EmbedderTrainer, batch_loss_inputs, trainable_weights
from lumir.types import Item, Query, Role

pytest.importorskip("transformers")

WORDS = ["red", "green", "blue", "dog", "cat", "car", "tree", "sky", "runs", "sits", "big", "small"]


def _token(word: str) -> int:
    return int(hashlib.md5(word.encode()).hexdigest(), 16) % 64


class ToyEmbedder:
    """A bag-of-words encoder with the trainable-embedder contract (prepare / forward_inputs / save)."""

    def __init__(self, seed: int = 0, dropout: float = 0.0) -> None:
        torch.manual_seed(seed)
        self.model = nn.ModuleDict(
            {"bag": nn.EmbeddingBag(64, 16, mode="mean"), "drop": nn.Dropout(dropout), "proj": nn.Linear(16, 8)}
        )
        self.model["bag"].weight.requires_grad_(False)  # "frozen base"; only proj trains (like LoRA)
        self.saved: Path | None = None

    def prepare(self, items: Sequence[Item], role: Role) -> list[EmbedInput]:
        prefix = "query: " if role == Role.QUERY else ""
        return [EmbedInput(i, it.id, prefix + (it.text or ""), None) for i, it in enumerate(items)]

    def forward_inputs(self, inputs: Sequence[EmbedInput], role: Role) -> torch.Tensor:
        ids, offsets = [], []
        for inp in inputs:
            offsets.append(len(ids))
            ids += [_token(w) for w in (inp.text or "").split()] or [0]
        bag = self.model["bag"](torch.tensor(ids), torch.tensor(offsets))
        return self.model["proj"](self.model["drop"](bag))

    def save(self, path: str | Path) -> None:
        self.saved = Path(path)
        self.saved.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), self.saved / "toy.pt")


def _examples(n: int = 12, negatives: bool = False) -> list[TrainingExample]:
    out = []
    for i in range(n):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 5 + 3) % len(WORDS)]
        q = Query(f"q{i}", text=f"{a} {b}")
        pos = Item(f"d{i}", text=f"{b} {a} {a}")
        negs = (Item(f"n{i}", text=f"{WORDS[(i + 1) % 12]} {WORDS[(i + 7) % 12]}"),) if negatives else ()
        out.append(TrainingExample(q, pos, negs, source="toy"))
    return out


def _config(**kw: object) -> EmbedderTrainConfig:
    base: dict[str, object] = {"batch_size": 4, "lr": 0.05, "epochs": 1, "logging_steps": 1, "save_steps": 1000}
    base.update(kw)
    return EmbedderTrainConfig(**base)  # type: ignore[arg-type]


def test_loss_falls_and_only_trainable_weights_move(tmp_path: Path) -> None:
    emb = ToyEmbedder()
    frozen = emb.model["bag"].weight.detach().clone()
    before = trainable_weights(emb.model)
    trainer = EmbedderTrainer(emb, _examples(negatives=True), _config(epochs=15), tmp_path)
    first = trainer.batch_loss(_examples(negatives=True)[:4]).item()
    trainer.train()
    last = trainer.batch_loss(_examples(negatives=True)[:4]).item()
    assert last < first * 0.7
    assert torch.equal(emb.model["bag"].weight, frozen)
    after = trainable_weights(emb.model)
    assert set(after) == set(before) == {"proj.weight", "proj.bias"}
    assert not torch.equal(after["proj.weight"], before["proj.weight"])
    assert emb.saved == tmp_path / "model" and (tmp_path / "model" / "toy.pt").is_file()


def _grads(trainer: EmbedderTrainer) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in trainer.module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("scope", ["batch", "query"])
def test_grad_cache_equals_the_full_batch(tmp_path: Path, scope: str) -> None:
    batch = _examples(8, negatives=True)
    results = []
    for chunk in (0, 3):
        emb = ToyEmbedder(seed=1, dropout=0.3)
        cfg = _config(batch_size=8, grad_cache_chunk=chunk, negatives=scope, learnable_temperature=True)
        trainer = EmbedderTrainer(emb, batch, cfg, tmp_path / f"c{chunk}")
        trainer.module.train()
        torch.manual_seed(7)
        if chunk:
            loss = trainer.grad_cache_step(batch)
        else:
            # full graph: one forward per side in GradCache's chunk order, so dropout draws the same masks
            loss = trainer.batch_loss(batch)
            loss.backward()
        results.append((loss.item(), _grads(trainer)))
    (full_loss, full), (gc_loss, gc) = results
    assert gc_loss == pytest.approx(full_loss, rel=1e-5)
    assert set(gc) == set(full) and "temperature.log_logit_scale" in gc
    for name in full:
        assert torch.allclose(gc[name], full[name], atol=1e-5), name


def test_grad_cache_replays_dropout(tmp_path: Path) -> None:
    """With dropout, the second (graph) pass must see the first pass's masks, else the cached gradients are wrong."""
    batch = _examples(6)
    emb = ToyEmbedder(seed=2, dropout=0.5)
    trainer = EmbedderTrainer(emb, batch, _config(batch_size=6, grad_cache_chunk=2), tmp_path)
    trainer.module.train()
    torch.manual_seed(3)
    trainer.grad_cache_step(batch)
    replayed = _grads(trainer)["backbone.proj.weight"]
    # the same step with the full graph from the same RNG state, chunked the same way (2 items per forward)
    trainer.module.zero_grad()
    torch.manual_seed(3)
    q = torch.cat(
        [
            emb.forward_inputs(emb.prepare([ex.query for ex in batch], Role.QUERY)[i : i + 2], Role.QUERY)
            for i in range(0, 6, 2)
        ]
    )
    c = torch.cat(
        [
            emb.forward_inputs(emb.prepare([ex.positive for ex in batch], Role.CANDIDATE)[i : i + 2], Role.CANDIDATE)
            for i in range(0, 6, 2)
        ]
    )
    trainer.loss(batch, q, c).backward()
    assert torch.allclose(_grads(trainer)["backbone.proj.weight"], replayed, atol=1e-6)


def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    data = _examples(16, negatives=True)
    full = EmbedderTrainer(ToyEmbedder(), data, _config(epochs=4, save_steps=4), tmp_path / "full")
    full.train()
    # interrupted: the same run killed after step 8 (its checkpoint written), then resumed to the end
    from transformers import TrainerCallback

    class StopAt8(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: object, state: object, control: object, **kw: object) -> None:
            if state.global_step == 8:  # type: ignore[attr-defined]
                control.should_training_stop = True  # type: ignore[attr-defined]

    part = EmbedderTrainer(
        ToyEmbedder(), data, _config(epochs=4, save_steps=4), tmp_path / "part", callbacks=[StopAt8()]
    )
    part.train()
    assert part.trainer.state.global_step == 8 < full.trainer.state.global_step
    assert (tmp_path / "part" / "checkpoint-8" / "trainable.safetensors").is_file()
    resumed_emb = ToyEmbedder()  # the same frozen base, as when a base folder is reloaded ...
    torch.nn.init.normal_(resumed_emb.model["proj"].weight)  # ... but other trainable weights: the checkpoint's win
    resumed = EmbedderTrainer(resumed_emb, data, _config(epochs=4, save_steps=4), tmp_path / "part")
    resumed.train()
    a, b = trainable_weights(full.module), trainable_weights(resumed.module)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_false_negative_mask_follows_the_qrels() -> None:
    q1, q2 = Query("q1", text="a"), Query("q2", text="b")
    d1, d2, n1 = Item("d1", text="x"), Item("d2", text="y"), Item("n1", text="z")
    batch = [
        TrainingExample(q1, d1, (n1,), positive_ids=frozenset({"d1", "d2"})),  # d2 is also relevant to q1
        TrainingExample(q2, d2, ()),
    ]
    candidates, negatives, exclude = batch_loss_inputs(batch, 1)
    assert [c.id for c in candidates] == ["d1", "d2", "n1"] and [n.id for n in negatives] == ["n1"]
    assert exclude.tolist() == [[True, True, False], [False, True, False]]  # the target column is kept by info_nce


def test_query_scope_needs_equal_negative_counts(tmp_path: Path) -> None:
    data = _examples(4, negatives=True)
    data[1] = TrainingExample(data[1].query, data[1].positive, (), source="toy")
    trainer = EmbedderTrainer(ToyEmbedder(), data, _config(negatives="query"), tmp_path)
    with pytest.raises(ValueError, match="same number of hard negatives"):
        trainer.batch_loss(data)
    assert EmbedderTrainer(ToyEmbedder(), data, _config(negatives="batch"), tmp_path).batch_loss(data).item() > 0


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown train option"):
        EmbedderTrainConfig.from_dict({"epoch": 1})
    with pytest.raises(ValueError, match="negatives must be"):
        EmbedderTrainConfig(negatives="global")
    with pytest.raises(ValueError, match="sampler must be"):
        EmbedderTrainConfig(sampler="random")
    with pytest.raises(TypeError, match="cannot be trained here: it has no 'model'"):
        EmbedderTrainer(object(), _examples(), _config(), "unused")


def test_continual_mixture_draws_sources_uniformly(tmp_path: Path) -> None:
    """MM-Embed §4.1.2: multimodal and text triplets sampled uniformly in one run, whatever the sources' sizes."""
    big = _examples(12)
    small = [
        TrainingExample(Query(f"t{i}", text=f"{w} text"), Item(f"td{i}", text=f"{w} doc"), source="text")
        for i, w in enumerate(WORDS[:3])
    ]
    trainer = EmbedderTrainer(ToyEmbedder(), big + small, _config(mix="uniform", epochs=2), tmp_path)
    drawn = [trainer.examples[i].source for e in range(6) for b in _epoch(trainer, e) for i in b]
    assert 0.35 < drawn.count("text") / len(drawn) < 0.65  # 3 of 15 examples, half of the draws
    result = trainer.train()
    assert result["steps"] > 0


def _epoch(trainer: EmbedderTrainer, epoch: int) -> list[list[int]]:
    trainer.sampler.set_epoch(epoch)
    return trainer.sampler.plan()
