"""MGQRe step 1, supervised fine-tuning (§3.2, eq. 1): learn ``low query -> high query`` on D_SFT with trl.

Recipe (``recipes/rewriter/sft.yaml``)::

    kind: rewriter
    stage: sft
    model: {base: smollm2, init: null, lora: null | {r, alpha, dropout, target_modules}}
    data:  {train: PATH.jsonl | [PATH, ...], holdout: 0.05}      # rows {"id", "prompt": low, "completion": high}
    train: {learning_rate, batch_size, micro_batch_size, epochs, max_steps, warmup, scheduler, weight_decay,
            max_grad_norm, max_length, seed, save_steps, save_total_limit, eval_steps, bf16, gradient_checkpointing}
    output_dir: runs/rewriter/sft

Each row becomes a conversational prompt–completion example built with
:func:`lumir.rewrite.prompts.rewriter_messages`, so the chat template renders the prompt exactly as
:func:`lumir.train.rewriter.common.prompt_text` (what the trained rewriter is given at inference) and the
completion as the rewrite followed by the template's end of turn. The loss is the cross-entropy of the completion
tokens only (trl's ``completion_only_loss``), eq. 1 averaged over the batch's completion tokens.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from lumir.rewrite.prompts import rewriter_messages
from lumir.train.rewriter.common import JsonlLog, RewriterTrainResult
from lumir.train.rewriter.loop import (
    JsonlLogCallback,
    ProgressBarCallback,
    check_keys,
    final_eval,
    finish,
    load_policy,
    prepare_output,
    quiet_datasets,
    quiet_warnings,
    read_rows,
    split_holdout,
    strip_default_callbacks,
    train_config,
    training_arguments,
)

__all__ = ["RECIPE_KEYS", "sft_dataset", "sft_example", "train_sft"]

RECIPE_KEYS = {"kind", "stage", "name", "description", "source", "model", "data", "train", "output_dir", "overrides",
               "profiles"}  # fmt: skip
DATA_KEYS = {"train", "holdout"}


def sft_example(query: str, completion: str) -> dict[str, list[dict[str, str]]]:
    """One conversational prompt–completion example (trl's format) on the trained-rewriter prompt.

    Example:
        >>> sft_example("a dog", "a brown dog runs")["completion"]
        [{'role': 'assistant', 'content': 'a brown dog runs'}]
    """
    messages = rewriter_messages(query, completion)
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def sft_dataset(rows: Sequence[Mapping[str, Any]]) -> Any:
    """A ``datasets.Dataset`` of :func:`sft_example` for D_SFT rows (``prompt`` = low, ``completion`` = high)."""
    from datasets import Dataset

    return Dataset.from_list([sft_example(str(r["prompt"]), str(r["completion"])) for r in rows])


def _log_losses(log: JsonlLog) -> list[float]:
    return [float(r["loss"]) for r in log.read() if r.get("kind") == "train" and "loss" in r]


def train_sft(
    recipe: Mapping[str, Any],
    *,
    output_dir: str | Path,
    resume: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
    show_progress: bool = True,
) -> RewriterTrainResult:
    """Run a ``stage: sft`` rewriter recipe (see the module docstring); the model lands in ``<output_dir>/model``.

    Args:
        resume: continue from the last checkpoint in ``output_dir/checkpoints`` (False starts over).
        callbacks: extra ``transformers`` callbacks (tests interrupt a run with one).

    Raises:
        ValueError: unknown recipe keys, or a holdout that leaves nothing to train on.
        FileNotFoundError / DataFormatError: missing or malformed ``data.train``.
    """
    from lumir._deps import require

    require("trl", extra="train")
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    t0 = time.perf_counter()
    check_keys(recipe, RECIPE_KEYS, block="recipe")
    data_cfg = dict(recipe.get("data") or {})
    check_keys(data_cfg, DATA_KEYS, block="data")
    if not data_cfg.get("train"):
        raise ValueError("data.train is required: the D_SFT jsonl file(s)")
    cfg = train_config(recipe.get("train"))
    rows = read_rows(data_cfg["train"], {"prompt": str, "completion": str})
    train_rows, held = split_holdout(rows, data_cfg.get("holdout"))

    out = Path(output_dir)
    checkpoint = prepare_output(out, resume=resume)
    with quiet_warnings():  # peft/transformers deprecation notices while loading
        set_seed(int(cfg["seed"]))
        policy = load_policy(dict(recipe.get("model") or {}))
    args = training_arguments(
        cfg,
        out,
        SFTConfig,
        evaluate=bool(held),
        max_length=int(cfg["max_length"]),
        completion_only_loss=True,
        packing=False,
    )
    log = JsonlLog(out / "log.jsonl")
    with quiet_warnings():
        with quiet_datasets():
            trainer = SFTTrainer(
                model=policy.model,
                args=args,
                train_dataset=sft_dataset(train_rows),
                eval_dataset=sft_dataset(held) if held else None,
                processing_class=policy.tokenizer,
                callbacks=[JsonlLogCallback(log), ProgressBarCallback("sft", show_progress), *callbacks],
            )
        strip_default_callbacks(trainer)
        output = trainer.train(resume_from_checkpoint=checkpoint)
        losses = _log_losses(log)
        metrics: dict[str, Any] = {
            "steps": int(trainer.state.global_step),
            "epochs": round(float(trainer.state.epoch or 0), 4),
            "train_loss": losses[-1] if losses else float("nan"),
            "first_loss": losses[0] if losses else float("nan"),
            "mean_train_loss": float(output.training_loss),
            "train_rows": len(train_rows),
            "holdout_rows": len(held),
            "resumed_from_step": int(Path(checkpoint).name.rpartition("-")[2]) if checkpoint else 0,
        }
        if held:
            metrics.update(final_eval(trainer, log))
        return finish(policy, out, recipe, stage="sft", metrics=metrics, seconds=time.perf_counter() - t0)
