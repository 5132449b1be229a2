"""LamRA-Rank training (§3.4) on a tiny offline LM: rows and draws, prompts identical to the rerankers', loss falling,
LoRA-only updates, the adapter reloading as a ChatModel with identical reranker scores, resume, recipe and CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from lumir.collections import Corpus, Rankings
from lumir.errors import ModelNotFoundError
from lumir.io.jsonl import write_items
from lumir.models.chat import load_chat_model
from lumir.models.chat.hf import TransformersChatModel
from lumir.rerank import FusionConfig, ListwiseReranker, YesNoReranker
from lumir.testing.tiny import save_tiny_lm
from lumir.train.reranker import RERANKER_MANIFEST, answer_logits, run_reranker_recipe, train_reranker
from lumir.train.reranker_data import RerankCollator, read_rerank_rows, rerank_rows, sample_example
from lumir.types import Item, Query

COLOURS = ("red", "green", "blue", "yellow")
ANIMALS = ("dog", "cat")
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def _corpus() -> list[Item]:
    return [Item(f"{c}-{a}", text=f"a {c} {a}") for c in COLOURS for a in ANIMALS]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-lm") / "base")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Rows (one per colour-animal query, its own item positive, every other item a ranked negative) and items."""
    root = tmp_path_factory.mktemp("rerank-data")
    items = _corpus()
    queries = [Query(f"q-{it.id}", text=f"the {it.id.replace('-', ' ')}") for it in items]
    ranked = [[(it.id, 1.0 - 0.1 * j) for j, it in enumerate(items)] for _ in queries]
    rankings = Rankings.from_hits([q.id for q in queries], ranked, len(items))
    rows, counts = rerank_rows(queries, rankings, {q.id: {q.id[2:]: 1} for q in queries}, top=100)
    assert counts["rows"] == len(queries) and counts["guarded"] == len(queries)
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_items(root / "items.jsonl", items)
    return root / "rows.jsonl", root / "items.jsonl"


def _recipe(base: Path, data: tuple[Path, Path], **train: Any) -> dict[str, Any]:
    return {
        "kind": "reranker",
        "model": {"base": str(base), "lora": dict(LORA), "device": "cpu"},
        "data": {"train": str(data[0]), "corpus": str(data[1]), "holdout": 0},
        "objective": {"list_negatives": [2, 3]},
        "prompt": {"max_words": 16, "list_max_words": 8},
        "train": {"learning_rate": 5e-2, "batch_size": 4, "epochs": 2, "save_steps": 2, "seed": 0, **train},
    }


class Snapshots(TrainerCallback):
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.after = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.model = model


# ------------------------------------------------------------------------------------------------- rows and draws


def test_rows_never_take_a_positive_as_negative() -> None:
    rankings = Rankings.from_hits(["a", "b", "c"], [[("x", 3.0), ("y", 2.0), ("z", 1.0)]] * 3, 3)
    queries = [Query("a", text="qa"), Query("b", text="qb"), Query("c", text="qc")]
    qrels = {"a": {"y": 1, "z": 0}, "b": {"x": 1, "y": 2, "z": 1}, "c": {}}
    rows, counts = rerank_rows(queries, rankings, qrels, top=2)
    assert rows == [{"id": "a", "query": "qa", "positives": ["y"], "negatives": ["x"]}]  # top-2 only; z has rel 0
    assert counts == {"queries": 3, "rows": 1, "no_positive": 1, "no_negative": 1, "guarded": 3}


def test_draws_follow_the_paper_and_are_seeded() -> None:
    row = {"id": "q", "query": "x", "positives": ["p1", "p2"], "negatives": [f"n{i}" for i in range(100)]}
    sizes = set()
    for seed in range(200):
        s = sample_example(row, random.Random(seed))
        assert s.candidates[s.target - 1] == s.positive and s.positive in row["positives"]
        assert s.negative in row["negatives"] and len(set(s.candidates)) == len(s.candidates)
        sizes.add(len(s.candidates) - 1)
    assert sizes == {2, 3, 4, 5}  # M uniform in [2, 5]
    targets = {sample_example(row, random.Random(seed)).target for seed in range(200)}
    assert targets == {1, 2, 3, 4, 5, 6}  # the positive lands anywhere
    assert sample_example(row, random.Random(7)) == sample_example(row, random.Random(7))
    few = sample_example({**row, "negatives": ["n0"]}, random.Random(0))
    assert len(few.candidates) == 2  # M capped by the negatives there are


def test_collated_prompts_are_exactly_what_the_rerankers_score(tiny_base: Path, data: tuple[Path, Path]) -> None:
    chat = TransformersChatModel.from_pretrained(tiny_base)
    corpus = {it.id: it for it in _corpus()}
    yes_no = YesNoReranker(chat, max_words=16)
    listwise = ListwiseReranker(chat, window=6, max_words=8)
    collator = RerankCollator(chat, corpus, pointwise=yes_no, listwise=listwise, seed=0)
    rows = read_rerank_rows(data[0])[:3]
    batch = collator(rows)
    samples = [collator.sample(r) for r in rows]
    with torch.no_grad():
        point = answer_logits(chat.model, batch["point"]).log_softmax(-1)
        lists = answer_logits(chat.model, batch["list"]).log_softmax(-1)
    convs = [yes_no.conversation(s.query, corpus[s.positive]) for s in samples]
    convs += [yes_no.conversation(s.query, corpus[s.negative]) for s in samples]
    no_id, yes_id = chat.answer_token_ids(["NO", "YES"])
    torch.testing.assert_close(point[:, [no_id, yes_id]], chat.token_logprobs(convs, ["NO", "YES"]))
    assert batch["point_targets"].tolist() == [yes_id] * 3 + [no_id] * 3
    for i, s in enumerate(samples):
        conv = listwise.conversation(s.query, [corpus[c] for c in s.candidates])
        positions = [str(k) for k in range(1, len(s.candidates) + 1)]
        ids = chat.answer_token_ids(positions)
        torch.testing.assert_close(lists[i, ids][None], chat.token_logprobs([conv], positions))
        assert batch["list_targets"][i] == ids[s.target - 1]
    collator.epoch = 1
    assert [collator.sample(r) for r in rows] != samples  # a new epoch draws anew
    assert [collator.with_fixed_draws().sample(r) for r in rows] == samples


# ------------------------------------------------------------------------------------------------------ training


def test_training_moves_only_lora_and_reloads_to_identical_scores(
    tiny_base: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    snaps = Snapshots()
    result = train_reranker(_recipe(tiny_base, data), output_dir=tmp_path / "run", callbacks=[snaps])
    records = [json.loads(ln) for ln in result.log_path.read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert train[-1]["loss"] < train[0]["loss"]
    assert {"point_loss", "list_loss", "point_acc", "list_acc"} <= set(train[0])
    assert train[0]["loss"] == pytest.approx(train[0]["point_loss"] + train[0]["list_loss"], rel=1e-4)
    assert snaps.trainable and all("lora_" in n for n in snaps.trainable)
    for name, before in snaps.before.items():
        assert torch.equal(before, snaps.after[name]) == (name not in snaps.trainable), name
    m = result.metrics
    assert m["steps"] == 4 and m["train_queries"] == 8 and m["seconds_per_step"] > 0 and m["peak_memory_mb"] > 0

    manifest = json.loads((result.model_dir / RERANKER_MANIFEST).read_text())
    assert manifest["adapter"] is True and manifest["base"] == str(tiny_base.resolve())
    assert manifest["prompts"]["pointwise"] == YesNoReranker.default_prompt
    assert {"transformers", "peft"} <= set(manifest["versions"])

    # the trained model in memory and the reloaded adapter give identical reranker scores
    trained = TransformersChatModel(snaps.model, TransformersChatModel.from_pretrained(tiny_base).processor)
    reloaded = load_chat_model(f"hf:{result.model_dir}")
    base = load_chat_model(f"hf:{tiny_base}")
    assert reloaded.fingerprint != base.fingerprint
    items = _corpus()
    query = Query("q", text="the red dog")
    for reranker in (YesNoReranker, ListwiseReranker):
        options = {"max_words": 16} if reranker is YesNoReranker else {"max_words": 8, "window": 4}
        a = reranker(trained, **options).rank(query, items)
        b = reranker(reloaded, **options).rank(query, items)
        assert [r["corpus_id"] for r in a] == [r["corpus_id"] for r in b]
        np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-6)
        assert [r["score"] for r in b] != [r["score"] for r in reranker(base, **options).rank(query, items)]
    # fusion runs unchanged on it
    first = Rankings.from_hits(["q"], [[(it.id, 1.0 - 0.01 * i) for i, it in enumerate(items)]], len(items))
    fused = YesNoReranker(reloaded, k=4, fusion=FusionConfig(alpha=0.5)).rerank([query], first, Corpus(items))
    [(_, hits)] = list(fused)
    assert sorted(h.id for h in hits) == sorted(it.id for it in items) and fused.meta["rerank_k"] == 4


def test_resume_continues_the_interrupted_run(tiny_base: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    class Interrupt(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if state.global_step == 3 and logs and "loss" in logs:
                raise KeyboardInterrupt

    recipe = _recipe(tiny_base, data)
    recipe["data"]["holdout"] = 2
    whole = train_reranker(recipe, output_dir=tmp_path / "whole", show_progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_reranker(recipe, output_dir=tmp_path / "run", callbacks=[Interrupt()], show_progress=False)
    result = train_reranker(recipe, output_dir=tmp_path / "run", show_progress=False)
    steps = [json.loads(ln)["step"] for ln in result.log_path.read_text().splitlines() if '"train"' in ln]
    assert steps == [1, 2, 3, 4] and result.metrics["resumed_from_step"] == 2
    assert result.metrics["holdout_queries"] == 2 and result.metrics["eval_loss"] > 0
    assert 0 <= result.metrics["eval_point_acc"] <= 1 and 0 <= result.metrics["eval_list_acc"] <= 1
    assert result.metrics["train_loss"] == pytest.approx(whole.metrics["train_loss"], rel=1e-4)
    assert result.metrics["eval_loss"] == pytest.approx(whole.metrics["eval_loss"], rel=1e-4)


def test_recipe_profiles_objectives_and_cli(tiny_base: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from lumir.cli.main import app

    recipe = _recipe(tiny_base, data, max_steps=1)
    recipe["profiles"] = {"point": {"objective.listwise": False}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_reranker_recipe(path, profile="point", overrides=["train.seed=3"], output_dir=tmp_path / "p")
    saved = json.loads((result.model_dir / RERANKER_MANIFEST).read_text())["config"]
    assert saved["objective"]["listwise"] is False and saved["train"]["seed"] == 3 and "profiles" not in saved
    assert saved["overrides"] == {"profile": "point", "profile_values": {"objective.listwise": False},
                                  "set": ["train.seed=3"]}  # fmt: skip
    train = [json.loads(ln) for ln in result.log_path.read_text().splitlines()]
    assert "point_loss" in train[0] and "list_loss" not in train[0]
    res = CliRunner().invoke(app, ["train", "reranker", "--config", str(path), "-o", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert "use it: lumir eval" in res.output and (tmp_path / "cli" / "model" / "adapter_config.json").is_file()
    with pytest.raises(ValueError, match="unknown 'objective' recipe key"):
        train_reranker({**recipe, "objective": {"pointwize": True}}, output_dir=tmp_path / "bad")
    with pytest.raises(ValueError, match="model.lora"):
        train_reranker({**recipe, "model": {"base": str(tiny_base), "lora": None}}, output_dir=tmp_path / "bad")


def test_adapter_without_manifest_is_refused(tiny_base: Path, tmp_path: Path) -> None:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="no lumir manifest"):
        load_chat_model(f"hf:{folder}")
    (folder / RERANKER_MANIFEST).write_text(json.dumps({"adapter": True, "base": str(tmp_path / "gone")}))
    with pytest.raises(ModelNotFoundError, match="not a folder on this machine"):
        load_chat_model(f"hf:{folder}")
