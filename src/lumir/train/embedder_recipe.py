"""``kind: embedder`` recipes: build an (M)LLM embedder, its training examples, and run :class:`EmbedderTrainer`.

Recipe blocks (see ``recipes/embedder/*.yaml``)::

    kind: embedder
    model:  {path: smollm2, preset: lamra, init: null, max_length: 128, dtype: float32,
             lora: {r: 8, alpha: 64, dropout: 0.05, target_modules: [q_proj, v_proj]}}
    data:   {sources: [{name: scifact, kind: beir, path: beir-scifact, split: train, limit: null,
                        holdout: 100, positives: all, negatives: {path: mined.jsonl, per_query: 1}}, ...]}
    train:  {...}   # lumir.train.embedder.EmbedderTrainConfig
    output_dir: runs/embedder/NAME

Source kinds: ``beir`` (a BEIR folder's split: query → relevant abstract), ``task`` (any task spec
:func:`lumir.eval.load_tasks` reads, e.g. ``flickr8k:split=train_4k,direction=t2i``), ``flickr8k-captions``
(caption → another caption of the same photo: LamRA's stage-I text pairs in miniature; ``holdout: N`` keeps the
split's last N photos out), ``examples`` (a jsonl of
:class:`~lumir.data.examples.TrainingExample`, e.g. NLI pairs or mined triplets). ``negatives`` attaches hard
negatives mined by ``lumir mine``. ``beir`` sources take ``holdout: N`` (the split's last N queries are not trained
on). Relative data paths resolve against the data root (``$LUMIR_DATA``,
``../shared/data``), then the working directory.

``model.init`` continues from an embedder folder saved by an earlier stage (LamRA stage II starts from stage I's
adapter; MM-Embed's continual stage from M^hard), its adapter trainable again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lumir.config import atomic_write_text, versions
from lumir.data.examples import (
    TrainingExample,
    attach_negatives,
    caption_pair_examples,
    examples_from_task,
    read_examples,
)
from lumir.eval.tasks import default_data_root
from lumir.train.embedder import EmbedderTrainConfig, EmbedderTrainer, steps_per_epoch

__all__ = ["build_embedder", "load_sources", "run_embedder_recipe"]

SOURCE_KINDS = ("beir", "task", "flickr8k-captions", "examples")


def _data_path(value: str | Path, data: str | Path | None) -> Path:
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    root = default_data_root(data)
    return root / path if (root / path).exists() else path


def _source_examples(spec: Mapping[str, Any], data: str | Path | None) -> list[TrainingExample]:
    kind, name = spec.get("kind"), str(spec.get("name") or spec.get("kind"))
    limit, seed = spec.get("limit"), int(spec.get("seed", 0))
    holdout = int(spec.get("holdout", 0))
    positives = str(spec.get("positives", "all"))
    if kind == "beir":
        from lumir.data.beir import load_beir

        task = load_beir(_data_path(spec["path"], data), split=str(spec.get("split", "train")))
        if holdout:
            task = _without_last_queries(task, holdout)
        examples = examples_from_task(task, source=name, positives=positives, limit=limit, seed=seed)
        pool: Any = task.corpus
    elif kind == "task":
        from lumir.eval.tasks import load_tasks

        examples, pool = [], {}
        for task in load_tasks(spec["spec"], data=data):
            examples += examples_from_task(task, source=name, positives=positives, limit=limit, seed=seed)
            pool.update({it.id: it for it in task.corpus})
    elif kind == "flickr8k-captions":
        from lumir.data.flickr8k import load_flickr8k

        root = _data_path(spec.get("path", "flickr8k"), data)
        photos, captions = load_flickr8k(root, str(spec.get("split", "train_4k")))
        by_photo: dict[str, list[Any]] = {}
        for cap in captions:
            by_photo.setdefault(str(cap.meta.get("image", cap.id.split("#")[0])), []).append(cap)
        kept = list(by_photo.items())[: len(by_photo) - holdout]
        by_photo = dict(kept[: int(limit)] if limit is not None else kept)
        examples = caption_pair_examples(by_photo, source=name, instruction=spec.get("instruction"), seed=seed)
        pool = {c.id: c for caps in by_photo.values() for c in caps}
        del photos
    elif kind == "examples":
        examples = read_examples(_data_path(spec["path"], data))
        examples = examples if limit is None else examples[: int(limit)]
        pool = {}
    else:
        raise ValueError(f"data source {name!r}: kind must be one of {SOURCE_KINDS}, got {kind!r}")
    negatives = spec.get("negatives")
    if negatives:
        if not pool:
            raise ValueError(f"data source {name!r}: negatives need a source with a candidate pool")
        examples = attach_negatives(
            examples,
            _data_path(negatives["path"], data),
            pool,
            per_query=int(negatives.get("per_query", 1)),
            seed=seed,
        )
    if not examples:
        raise ValueError(f"data source {name!r} produced no training examples")
    return examples


def _without_last_queries(task: Any, n: int) -> Any:
    """The task minus its last ``n`` queries (a holdout for validation, e.g. ``benchmarks/llm_embedder.py --split
    holdout`` scores SciFact's last 100 train queries)."""
    import dataclasses

    if n >= len(task.queries):
        raise ValueError(f"holdout {n} leaves no training queries of {len(task.queries)}")
    return dataclasses.replace(task, queries=task.queries[: len(task.queries) - n])


def load_sources(block: Mapping[str, Any], *, data: str | Path | None = None) -> dict[str, list[TrainingExample]]:
    """The ``data:`` block's sources, by name (each a list of examples)."""
    sources = block.get("sources")
    if not isinstance(sources, list) or not sources:
        raise ValueError("data.sources must be a non-empty list of sources")
    out: dict[str, list[TrainingExample]] = {}
    for spec in sources:
        name = str(spec.get("name") or spec.get("kind"))
        if name in out:
            raise ValueError(f"two data sources are named {name!r}; give them distinct names")
        out[name] = _source_examples(spec, data)
    return out


def build_embedder(block: Mapping[str, Any]) -> Any:
    """The ``model:`` block → an :class:`~lumir.embed.mllm.MLLMEmbedder` (LoRA-wrapped when ``lora`` is set; ``init``
    continues an earlier stage's saved embedder)."""
    from lumir.embed.factories import load_embedder
    from lumir.rewrite.artifact import base_model_folder
    from lumir.train.rewriter.common import apply_lora

    options = {k: v for k, v in block.items() if k not in ("path", "init", "lora", "type")}
    if block.get("init"):
        embedder: Any = load_embedder({"type": "mllm", "path": str(block["init"]), "trainable": True, **options})
        _check_adapter(embedder.model)
    else:
        path = base_model_folder(str(block["path"]))
        embedder = load_embedder({"type": "mllm", "path": str(path), **options})
        embedder.model = apply_lora(embedder.model, block.get("lora"), task_type=None)
    return embedder


def _check_adapter(model: Any) -> None:
    if not hasattr(model, "peft_config"):
        raise ValueError("model.init must be an embedder folder holding a LoRA adapter (saved by an earlier stage)")


def run_embedder_recipe(
    recipe: Mapping[str, Any],
    *,
    data: str | Path | None = None,
    output_dir: str | Path | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Run an ``embedder`` recipe; writes ``recipe.json`` and ``result.json`` beside the checkpoints and returns the
    result (steps, seconds, s/step, peak memory, final loss, model folder)."""
    out = Path(output_dir or recipe.get("output_dir") or "runs/embedder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "recipe.json", json.dumps(dict(recipe), indent=2, default=str) + "\n")
    config = EmbedderTrainConfig.from_dict(recipe.get("train") or {})
    sources = load_sources(recipe.get("data") or {}, data=data)
    examples = [ex for exs in sources.values() for ex in exs]
    torch.manual_seed(config.seed)
    embedder = build_embedder(recipe.get("model") or {})
    trainer = EmbedderTrainer(embedder, examples, config, out)
    start = time.perf_counter()
    metrics = trainer.train(resume=resume)
    seconds = time.perf_counter() - start
    history = [r for r in trainer.trainer.state.log_history if "loss" in r]
    result = {
        "format": "lumir-embedder-train",
        "examples": {name: len(exs) for name, exs in sources.items()},
        "steps": metrics["steps"],
        "steps_per_epoch": steps_per_epoch(trainer),
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, metrics["steps"]), 3),
        "peak_rss_mb": _peak_rss_mb(),
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "loss_history": [{"step": r.get("step"), "loss": r["loss"]} for r in history],
        "model_dir": metrics["model_dir"],
        "config": metrics["config"],
        "versions": versions(),
    }
    atomic_write_text(out / "result.json", json.dumps(result, indent=2) + "\n")
    return result


def _peak_rss_mb() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)
