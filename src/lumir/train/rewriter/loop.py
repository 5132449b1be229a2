"""The ``transformers.Trainer`` plumbing the rewriter stages share.

- the ``train:`` block (:func:`train_config`): paper-named hyper-parameters, unknown keys rejected;
- ``TrainingArguments`` from it (:func:`training_arguments`): ``batch_size`` is the effective batch (the paper's),
  ``micro_batch_size`` what one forward pass holds (the rest is gradient accumulation);
- the output folder (:func:`prepare_output`): ``checkpoints/`` (the trainer's, resumable), ``log.jsonl`` (one record
  per optimiser step and per evaluation, written by :class:`JsonlLogCallback`), ``recipe.yaml`` (the resolved
  recipe), ``result.json`` and ``model/`` (:func:`finish`);
- a progress bar on a terminal only (:class:`ProgressBarCallback`, through :mod:`lumir.progress`);
- jsonl data with a holdout (:func:`read_rows`, :func:`split_holdout`) and the starting policy (:func:`load_policy`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import TrainerCallback, TrainingArguments

from lumir.config import atomic_write_text, write_json
from lumir.errors import DataFormatError
from lumir.progress import Progress, progress
from lumir.rewrite.artifact import load_rewriter_model, save_rewriter
from lumir.train.rewriter.common import JsonlLog, RewriterTrainResult, apply_lora

__all__ = [
    "MODEL_KEYS",
    "TRAIN_DEFAULTS",
    "JsonlLogCallback",
    "Policy",
    "ProgressBarCallback",
    "check_keys",
    "final_eval",
    "finish",
    "load_policy",
    "prepare_output",
    "quiet_datasets",
    "quiet_warnings",
    "read_rows",
    "split_holdout",
    "strip_default_callbacks",
    "train_config",
    "training_arguments",
]

logger = logging.getLogger(__name__)

TRAIN_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-5,
    "batch_size": 32,
    "micro_batch_size": None,  # None: the whole batch in one pass
    "epochs": 1,
    "max_steps": None,  # None: epochs decide
    "warmup": 0.0,  # a fraction (< 1) of the steps, or a step count
    "scheduler": "linear",
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_length": 128,
    "seed": 0,
    "save_steps": 100,
    "save_total_limit": 2,
    "eval_steps": None,  # None: evaluate the holdout after every epoch
    "bf16": False,
    "gradient_checkpointing": False,
}
"""The ``train:`` keys every Trainer-based stage accepts (a stage adds its own, e.g. PRO's ``rank_length``)."""

MODEL_KEYS = {"base", "init", "lora", "dtype"}
LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}


def check_keys(values: Mapping[str, Any], accepted: set[str] | Mapping[str, Any], *, block: str) -> None:
    """Unknown keys are an error naming the block (a typo must not silently fall back to a default)."""
    unknown = sorted(set(values) - set(accepted))
    if unknown:
        where = "top-level" if block == "recipe" else f"'{block}'"
        raise ValueError(f"unknown {where} recipe key(s) {unknown}; accepted: {sorted(accepted)}")


def train_config(block: Mapping[str, Any] | None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``train:`` block over :data:`TRAIN_DEFAULTS` (plus a stage's ``extra`` defaults), validated.

    Raises:
        ValueError: an unknown key, or ``micro_batch_size`` that does not divide ``batch_size``.
    """
    defaults = {**TRAIN_DEFAULTS, **(extra or {})}
    block = dict(block or {})
    check_keys(block, defaults, block="train")
    cfg = {**defaults, **block}
    batch = int(cfg["batch_size"])
    micro = int(cfg["micro_batch_size"] or batch)
    if batch < 1 or micro < 1 or batch % micro:
        raise ValueError(f"train.micro_batch_size ({micro}) must divide train.batch_size ({batch})")
    cfg["micro_batch_size"] = micro
    return cfg


def training_arguments(
    cfg: Mapping[str, Any],
    out: Path,
    cls: type[TrainingArguments] = TrainingArguments,
    *,
    evaluate: bool,
    **extra: Any,
) -> Any:
    """``cls`` (``TrainingArguments`` or a trl config) for a :func:`train_config` dict; checkpoints in ``out``."""
    micro, batch = int(cfg["micro_batch_size"]), int(cfg["batch_size"])
    eval_strategy = "no"
    if evaluate:
        eval_strategy = "steps" if cfg["eval_steps"] else "epoch"
    return cls(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro,
        gradient_accumulation_steps=batch // micro,
        num_train_epochs=float(cfg["epochs"]),
        max_steps=int(cfg["max_steps"] or -1),
        learning_rate=float(cfg["learning_rate"]),
        lr_scheduler_type=str(cfg["scheduler"]),
        warmup_steps=float(cfg["warmup"]),
        weight_decay=float(cfg["weight_decay"]),
        max_grad_norm=float(cfg["max_grad_norm"]),
        seed=int(cfg["seed"]),
        data_seed=int(cfg["seed"]),
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="steps",
        save_steps=int(cfg["save_steps"]),
        save_total_limit=cfg["save_total_limit"],
        eval_strategy=eval_strategy,
        eval_steps=cfg["eval_steps"] or None,
        bf16=bool(cfg["bf16"]),
        activation_checkpointing=bool(cfg["gradient_checkpointing"]),
        report_to="none",
        disable_tqdm=True,  # lumir's own bar (ProgressBarCallback), on a terminal only
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        **extra,
    )


def prepare_output(out: Path, *, resume: bool) -> str | None:
    """Make ``out`` ready and return the checkpoint to resume from (None: a fresh start).

    ``resume=False`` removes the previous run's ``checkpoints/`` and ``log.jsonl``; resuming keeps the log records up
    to the checkpoint's step and drops those of the interrupted part, which the resumed run writes again.
    """
    from transformers.trainer_utils import get_last_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    ckpts, log = out / "checkpoints", out / "log.jsonl"
    if not resume and ckpts.is_dir():
        shutil.rmtree(ckpts)
    last = get_last_checkpoint(str(ckpts)) if ckpts.is_dir() else None
    if last is None:
        log.unlink(missing_ok=True)
        return None
    step = int(json.loads((Path(last) / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])
    if log.is_file():
        keep = [ln for ln in log.read_text(encoding="utf-8").splitlines() if ln.strip()]
        keep = [ln for ln in keep if int(json.loads(ln).get("step", 0)) <= step]
        atomic_write_text(log, "".join(ln + "\n" for ln in keep))
    return str(last)


class JsonlLogCallback(TrainerCallback):
    """One :class:`JsonlLog` record per trainer log: ``{"kind": "train"|"eval", "step", "epoch", "loss", ...}``."""

    def __init__(self, log: JsonlLog) -> None:
        self.log = log

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kw: Any) -> None:
        if not logs or "train_runtime" in logs:  # the end-of-training summary is in result.json
            return
        kind = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        values = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
        self.log.write({"kind": kind, "step": state.global_step, **values, "epoch": round(float(state.epoch or 0), 4)})


class ProgressBarCallback(TrainerCallback):
    """Optimiser steps through :func:`lumir.progress.progress`: a bar on a terminal, rare log lines elsewhere."""

    def __init__(self, desc: str, enabled: bool = True) -> None:
        self.desc, self.enabled = desc, enabled
        self.bar: Progress | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.bar = progress(
            total=state.max_steps, initial=state.global_step, desc=self.desc, unit="step", enabled=self.enabled
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kw: Any) -> None:
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def strip_default_callbacks(trainer: Any) -> None:
    """Drop transformers' stdout printer and tqdm bar (lumir's callbacks log and show progress instead)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cls in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cls)


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """No ``datasets`` bars while a trainer tokenises its (small) data."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    """Silence the library deprecation notices a training run would print on every call (not lumir's own)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*mtime may not be reliable.*")
        yield


def final_eval(trainer: Any, log: JsonlLog) -> dict[str, float]:
    """The holdout's ``eval_*`` numbers at the last step: the log's record when the trainer just evaluated there,
    else a fresh ``trainer.evaluate()`` (which logs one)."""
    records = [r for r in log.read() if r.get("kind") == "eval"]
    if records and records[-1].get("step") == trainer.state.global_step:
        values = records[-1]
    else:
        values = trainer.evaluate()
    skip = ("runtime", "per_second", "epoch")
    return {k: float(v) for k, v in values.items() if k.startswith("eval_") and not any(s in k for s in skip)}


def read_rows(paths: str | Path | Sequence[str | Path], required: Mapping[str, type | tuple[type, ...]]) -> list[dict]:
    """The JSON objects of one or more jsonl files, each checked for the ``required`` keys and their types.

    Raises:
        FileNotFoundError: a file is missing (naming ``data.train``).
        DataFormatError: a line is not a JSON object with the required keys (naming file and line).
    """
    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    rows: list[dict] = []
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"training data not found: {path} (data.train)")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"not JSON ({err.msg})", path=path, line=n) from err
            if not isinstance(row, dict):
                raise DataFormatError("expected a JSON object", path=path, line=n)
            for key, kind in required.items():
                if not isinstance(row.get(key), kind):
                    raise DataFormatError(f"{key!r} is missing or not {kind}", path=path, line=n)
            rows.append(row)
    if not rows:
        raise ValueError(f"no training rows in {[str(f) for f in files]} (data.train)")
    return rows


def split_holdout(rows: Sequence[dict], holdout: float | int | None) -> tuple[list[dict], list[dict]]:
    """``(train, held)``: ``holdout`` rows (a count ≥ 1, or a fraction < 1) kept out of training.

    Rows with the same ``id`` (one low query's variants) stay together; groups are taken in the order of the
    sha256 of their id, so the choice is fixed, independent of the seed, and the same query ids are held out of
    SFT and PRO data built from the same records.

    Raises:
        ValueError: a negative holdout, or one that leaves nothing to train on.
    """
    amount = float(holdout or 0)
    if amount < 0:
        raise ValueError(f"data.holdout must be >= 0, got {holdout}")
    target = round(amount * len(rows)) if amount < 1 else int(amount)
    if target == 0:
        return list(rows), []
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(str(row.get("id", row.get("prompt"))), []).append(i)
    held: set[int] = set()
    for key in sorted(groups, key=lambda g: hashlib.sha256(g.encode()).hexdigest()):
        if len(held) >= target:
            break
        held.update(groups[key])
    if len(held) >= len(rows):
        raise ValueError(f"data.holdout={holdout} keeps all {len(rows)} rows out of training")
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


@dataclass
class Policy:
    """The model a stage trains, its tokenizer, the ``base`` its artifact names and the ``parent`` it started from."""

    model: Any
    tokenizer: Any
    base: str
    parent: str | None


def load_policy(model_cfg: Mapping[str, Any]) -> Policy:
    """The starting policy of a ``model:`` block: ``init`` (a previous stage's artifact) or ``base``, with LoRA.

    - ``init`` a LoRA artifact: its adapter keeps training (``lora`` is ignored); ``base`` is the adapter's base.
    - ``init`` a full model and ``lora`` set: a fresh adapter over the init folder, which becomes the ``base``.
    - otherwise full fine-tuning (``lora: null``) or a fresh adapter over ``base`` (default ``smollm2``).

    Call ``transformers.set_seed`` first: a fresh adapter's initialisation draws from the global RNG.
    """
    check_keys(model_cfg, MODEL_KEYS, block="model")
    lora = model_cfg.get("lora") or None
    if lora is not None:
        if not isinstance(lora, Mapping):
            raise ValueError(f"model.lora must be a mapping ({sorted(LORA_KEYS)}) or null, got {lora!r}")
        check_keys(lora, LORA_KEYS, block="model.lora")
    dtype = str(model_cfg.get("dtype") or "float32")
    init = model_cfg.get("init")
    source = str(init or model_cfg.get("base") or "smollm2")
    model, tokenizer, manifest = load_rewriter_model(source, trainable=True, dtype=dtype)
    if manifest.get("adapter"):
        if lora:
            logger.warning("model.lora is ignored: %s is a LoRA adapter, which keeps training", source)
        base = str(manifest["base"])
    elif lora:
        base = str(Path(source).resolve()) if init else source
        model = apply_lora(model, lora)
    else:
        base = str(manifest.get("base") or source) if init else source
    return Policy(model, tokenizer, base, str(Path(init).resolve()) if init else None)


def finish(
    policy: Policy,
    out: Path,
    recipe: Mapping[str, Any],
    *,
    stage: str,
    metrics: Mapping[str, Any],
    seconds: float,
) -> RewriterTrainResult:
    """Save the model as ``out/model`` (:func:`save_rewriter`), the resolved recipe and ``result.json``."""
    model_dir = save_rewriter(
        policy.model,
        policy.tokenizer,
        out / "model",
        stage=stage,
        base=policy.base,
        config=recipe,
        parent=policy.parent,
        metrics=metrics,
    )
    atomic_write_text(
        out / "recipe.yaml", yaml.safe_dump(json.loads(json.dumps(recipe, default=str)), sort_keys=False)
    )
    result = RewriterTrainResult(model_dir, out / "log.jsonl", dict(metrics), round(seconds, 2))
    write_json(
        out / "result.json",
        {
            "stage": stage,
            "model_dir": str(model_dir),
            "log": str(result.log_path),
            "metrics": result.metrics,
            "seconds": result.seconds,
        },
    )
    return result
