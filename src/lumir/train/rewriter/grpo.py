"""The RL stage with trl's trainers: GRPO (``GRPOTrainer``) or RLOO (``RLOOTrainer``), an alternative to
:mod:`lumir.train.rewriter.ppo` over the *same* reward callable, data, init and output layout.

- **GRPO** (Shao et al. 2024): G rewrites per query, advantages normalised within the group, a clipped surrogate
  with the KL to the reference as a separate loss term (fixed β; trl has no adaptive controller).
- **RLOO** (Ahmadian et al. 2024), ``algorithm: rloo``: leave-one-out baseline over the G rewrites and, like
  eq. 5 and :mod:`~lumir.train.rewriter.ppo`, the sequence KL folded into the reward (``r - β·KL``).

The reward (:mod:`lumir.train.rewriter.rewards`) is wrapped into trl's ``reward_funcs`` signature: the dataset
carries ``prompt`` (the :data:`~lumir.rewrite.prompts.TRAINED` chat messages, which trl renders with the chat
template exactly as the served rewriter does), ``query`` and ``target`` (the ground-truth candidate id) columns,
and trl hands the latter two back to the wrapper. Score inflation and the reward's diagnostics reach trl's logs
through ``log_metric``. A PRO adapter is trained further; trl copies it into a frozen ``"ref"`` adapter, so the
reference is π_PRO (that copy is dropped before saving).

Output (as PPO): ``log.jsonl`` (one line per step: reward, KL, β, score inflation, loss, clip fraction, mean
length as trl counts them), ``model/`` (stage ``grpo`` for RLOO too, ``train.algorithm`` in its recipe tells them
apart; parent = the init), ``recipe.yaml``, ``result.json``; trl's checkpoints go to ``checkpoints/`` every
``save_steps`` steps and ``resume`` continues from the latest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lumir.train.rewriter.common import JsonlLog, RewriterTrainResult
from lumir.train.rewriter.rewards import RewardFunction

__all__ = ["ALGORITHMS", "GRPO_DEFAULTS", "grpo_arguments", "reward_funcs_adapter", "train_grpo"]

ALGORITHMS = ("grpo", "rloo")

GRPO_DEFAULTS: dict[str, Any] = {
    "algorithm": "grpo",  # or "rloo"
    "group_size": 4,  # G rewrites per query (trl's num_generations)
    "ppo_epochs": 1,  # optimisation passes per generation batch (trl's num_iterations, μ)
    "clip": 0.2,  # ε
    "kl_coef": 0.1,  # β, fixed
    "max_new_tokens": 48,
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "device": "auto",  # "cpu" forces the CPU
    "trl": {},  # further GRPOConfig / RLOOConfig options, passed through
}
"""The ``train:`` keys of ``stage: grpo`` beyond :data:`lumir.train.rewriter.loop.TRAIN_DEFAULTS`, whose
``batch_size`` and ``micro_batch_size`` count *queries* here (each brings ``group_size`` rewrites)."""


def grpo_arguments(cfg: Mapping[str, Any], out: Path) -> Any:
    """trl's ``GRPOConfig`` (or ``RLOOConfig``) for a validated ``train:`` dict, writing to ``out/checkpoints``."""
    import torch
    from trl import GRPOConfig, RLOOConfig

    from lumir.train.rewriter.loop import training_arguments

    if cfg["algorithm"] not in ALGORITHMS:
        raise ValueError(f"unknown train.algorithm {cfg['algorithm']!r}; one of {ALGORITHMS}")
    group = int(cfg["group_size"])
    if group < 2:
        raise ValueError(f"train.group_size must be >= 2, got {group}")
    per_completion = {
        **cfg,
        "batch_size": int(cfg["batch_size"]) * group,
        "micro_batch_size": int(cfg["micro_batch_size"]) * group,
    }
    device = str(cfg["device"])
    return training_arguments(
        per_completion,
        out,
        GRPOConfig if cfg["algorithm"] == "grpo" else RLOOConfig,
        evaluate=False,
        num_generations=group,
        num_iterations=int(cfg["ppo_epochs"]),
        epsilon=float(cfg["clip"]),
        beta=float(cfg["kl_coef"]),
        max_completion_length=int(cfg["max_new_tokens"]),
        temperature=float(cfg["temperature"]),
        top_k=int(cfg["top_k"]),
        top_p=float(cfg["top_p"]),
        use_cpu=device == "cpu" or (device == "auto" and not torch.cuda.is_available()),
        disable_dropout=True,
        remove_unused_columns=False,
        **dict(cfg["trl"] or {}),
    )


def reward_funcs_adapter(reward: RewardFunction) -> Any:
    """``reward`` as a trl reward function: ``(prompts, completions, query, target, log_metric=...) -> floats``.

    Completions may be plain strings or (conversational prompts) ``[{"role": "assistant", "content": ...}]``;
    score inflation and the reward's diagnostics are logged with trl's ``log_metric`` when it is given.
    """

    def lumir_reward(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        query: Sequence[str],
        target: Sequence[str],
        log_metric: Any = None,
        **_: Any,
    ) -> list[float]:
        texts = [_completion_text(c) for c in completions]
        out = reward(list(query), texts, list(target))
        if log_metric is not None:
            log_metric("score_inflation", out.score_inflation)
            for key, value in out.extras.items():
                log_metric(key, value)
        return [float(r) for r in out.rewards]

    return lumir_reward


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion.strip()
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        content = completion[-1].get("content", "")
        if isinstance(content, str):
            return content.strip()
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping)).strip()
    return str(completion).strip()


_LOG_KEYS = {
    "reward": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "score_inflation": "score_inflation",
    "loss": "loss",
    "clip_ratio/region_mean": "clip_fraction",
    "completions/mean_length": "length",
    "entropy": "entropy",
    "score_before": "score_before",
    "score_after": "score_after",
    "rank_before": "rank_before",
    "rank_after": "rank_after",
    "top1": "top1",
    "empty": "empty",
}
"""trl's log names -> the names :mod:`~lumir.train.rewriter.ppo` logs (the reward's diagnostics keep theirs)."""


def _log_callback(log: JsonlLog, beta: float) -> Any:
    from transformers import TrainerCallback

    class _JsonlCallback(TrainerCallback):
        """trl's per-step logs to ``log.jsonl`` under PPO's names."""

        def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **_: Any) -> None:
            if not logs or "reward" not in logs:
                return
            record: dict[str, Any] = {"kind": "train", "step": int(state.global_step)}
            record.update({ours: float(logs[theirs]) for theirs, ours in _LOG_KEYS.items() if theirs in logs})
            record.update(beta=beta, epoch=round(float(state.epoch or 0.0), 4))
            log.write(record)

    return _JsonlCallback()


def train_grpo(
    recipe: Mapping[str, Any],
    *,
    output_dir: str | Path,
    resume: bool = True,
    reward: RewardFunction | None = None,
    show_progress: bool = True,
) -> RewriterTrainResult:
    """Run a ``stage: grpo`` rewriter recipe with trl's GRPO (or RLOO) trainer (blocks ``model``, ``data``,
    ``reward``, ``train``; see :mod:`lumir.train.rewriter.rl` and :data:`GRPO_DEFAULTS`).

    Args:
        resume: continue from the last checkpoint under ``<output_dir>/checkpoints``; False starts afresh.
        reward: use this reward callable instead of building the recipe's ``reward:`` block.
    """
    from lumir._deps import require

    require("trl", extra="train")
    require("datasets", extra="train")
    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOTrainer, RLOOTrainer

    from lumir.rewrite.prompts import rewriter_messages
    from lumir.train.rewriter.loop import (
        ProgressBarCallback,
        check_keys,
        finish,
        load_policy,
        prepare_output,
        quiet_datasets,
        quiet_warnings,
        strip_default_callbacks,
        train_config,
    )
    from lumir.train.rewriter.rl import RL_RECIPE_KEYS, prepare_reward, read_queries, summarize_log

    t0 = time.perf_counter()
    check_keys(recipe, RL_RECIPE_KEYS, block="recipe")
    cfg = train_config(recipe.get("train"), GRPO_DEFAULTS)
    rows = read_queries(recipe.get("data") or {})
    reward = prepare_reward(recipe, rows, reward)
    out = Path(output_dir)
    checkpoint = prepare_output(out, resume=resume)
    args = grpo_arguments(cfg, out)
    with quiet_warnings():
        set_seed(int(cfg["seed"]))
        policy = load_policy(dict(recipe.get("model") or {}))
    dataset = Dataset.from_list(
        [{"id": r.id, "prompt": rewriter_messages(r.query), "query": r.query, "target": r.target} for r in rows]
    )
    log = JsonlLog(out / "log.jsonl")
    trainer_cls = GRPOTrainer if cfg["algorithm"] == "grpo" else RLOOTrainer
    with quiet_warnings():
        with quiet_datasets():
            trainer = trainer_cls(
                model=policy.model,
                reward_funcs=[reward_funcs_adapter(reward)],
                args=args,
                train_dataset=dataset,
                processing_class=policy.tokenizer,
                callbacks=[
                    _log_callback(log, float(cfg["kl_coef"])),
                    ProgressBarCallback(cfg["algorithm"], show_progress),
                ],
            )
        strip_default_callbacks(trainer)
        trainer.train(resume_from_checkpoint=checkpoint)
    model = policy.model
    if hasattr(model, "peft_config") and "ref" in model.peft_config:
        model.delete_adapter("ref")  # trl's frozen copy of the init adapter (the reference), not part of the result
    metrics = {
        **summarize_log([r for r in log.read() if r.get("kind") == "train"]),
        "train_rows": len(rows),
        "resumed_from_step": int(Path(checkpoint).name.rpartition("-")[2]) if checkpoint else 0,
    }
    saved = dict(recipe)
    if not saved.get("reward"):
        saved["reward"] = reward.spec() if hasattr(reward, "spec") else {"type": type(reward).__name__}
    # stage "grpo" for RLOO too: train.algorithm in the saved recipe tells them apart
    return finish(policy, out, saved, stage="grpo", metrics=metrics, seconds=time.perf_counter() - t0)
