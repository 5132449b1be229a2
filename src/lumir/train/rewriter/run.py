"""``kind: rewriter`` recipes: resolve (profile, then ``--set`` overrides, then ``--stage``) and run one MGQRe stage.

Stages (§3.2–3.4): ``sft`` (:func:`lumir.train.rewriter.sft.train_sft`), ``pro``
(:func:`lumir.train.rewriter.pro.train_pro`), ``ppo`` and ``grpo`` (``lumir.train.rewriter.ppo:train_ppo``,
``lumir.train.rewriter.grpo:train_grpo``). Each is ``train_X(recipe, *, output_dir, resume) ->``
:class:`~lumir.train.rewriter.common.RewriterTrainResult` and is imported only when it runs.

The recipe a stage receives (and saves as ``recipe.yaml`` and in the model's manifest) is the resolved one: the
profile's values and the overrides applied, the ``profiles`` block dropped, and an ``overrides`` block saying what
was changed from the file (``{"profile": NAME, "profile_values": {...}, "set": ["k=v", ...], "stage": ...}``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lumir.train.rewriter.common import RewriterTrainResult

__all__ = ["STAGES", "resolve_rewriter_recipe", "run_rewriter_recipe", "stage_runner"]

STAGES: dict[str, str] = {
    "sft": "lumir.train.rewriter.sft:train_sft",
    "pro": "lumir.train.rewriter.pro:train_pro",
    "ppo": "lumir.train.rewriter.ppo:train_ppo",
    "grpo": "lumir.train.rewriter.grpo:train_grpo",
}
"""Each MGQRe stage's trainer, as a lazy ``"module:function"``."""


def stage_runner(stage: str) -> Any:
    """The ``train_X`` function of ``stage``.

    Raises:
        ValueError: an unknown stage (naming the known ones).
        ImportError: the stage's module is not available.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown rewriter stage {stage!r}; one of {sorted(STAGES)}")
    module, _, attr = STAGES[stage].partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        raise ImportError(f"rewriter stage {stage!r} is not available in this lumir ({module} is missing)") from err


def resolve_rewriter_recipe(
    recipe: Mapping[str, Any] | str | Path,
    *,
    stage: str | None = None,
    overrides: Sequence[str] = (),
    profile: str | None = None,
) -> dict[str, Any]:
    """The recipe as it will run: loaded (if a path), ``profile`` applied, then ``overrides``, then ``stage``.

    Raises:
        ValueError: not a ``kind: rewriter`` recipe, an unknown profile or stage, or a ``stage`` that contradicts
            the recipe's own (a recipe's ``train:`` block belongs to its stage).
    """
    from lumir.train.recipe import apply_overrides, apply_profile, load_recipe

    loaded = load_recipe(recipe) if isinstance(recipe, (str, Path)) else dict(recipe)
    if loaded.get("kind") != "rewriter":
        raise ValueError(f"not a rewriter recipe (kind {loaded.get('kind')!r}, expected 'rewriter')")
    resolved = apply_profile(loaded, profile) if profile else dict(loaded)
    resolved = apply_overrides(resolved, overrides)
    resolved.pop("profiles", None)
    own = resolved.get("stage")
    if stage and own and stage != own:
        raise ValueError(f"the recipe is for stage {own!r} but stage {stage!r} was asked for; use that stage's recipe")
    resolved["stage"] = stage or own
    if not resolved["stage"]:
        raise ValueError(f"the recipe names no stage; pass one of {sorted(STAGES)} (--stage)")
    if resolved["stage"] not in STAGES:
        raise ValueError(f"unknown rewriter stage {resolved['stage']!r}; one of {sorted(STAGES)}")
    record: dict[str, Any] = dict(resolved.get("overrides") or {})
    if profile:
        record.update(profile=profile, profile_values=dict(loaded["profiles"][profile]))
    if overrides:
        record["set"] = [*record.get("set", []), *overrides]
    if stage and not own:
        record["stage"] = stage
    if record:
        resolved["overrides"] = record
    return resolved


def run_rewriter_recipe(
    recipe: Mapping[str, Any] | str | Path,
    *,
    stage: str | None = None,
    overrides: Sequence[str] = (),
    profile: str | None = None,
    output_dir: str | Path | None = None,
    resume: bool = True,
) -> RewriterTrainResult:
    """Resolve a rewriter recipe (:func:`resolve_rewriter_recipe`) and run its stage.

    Args:
        output_dir: where checkpoints, ``log.jsonl``, ``recipe.yaml`` and ``model/`` go (default: the recipe's
            ``output_dir``, else ``runs/rewriter/<stage>``).
        resume: continue from the folder's last checkpoint (False starts over).
    """
    resolved = resolve_rewriter_recipe(recipe, stage=stage, overrides=overrides, profile=profile)
    name = str(resolved["stage"])
    out = Path(output_dir or resolved.get("output_dir") or Path("runs") / "rewriter" / name)
    result: RewriterTrainResult = stage_runner(name)(resolved, output_dir=out, resume=resume)
    return result
