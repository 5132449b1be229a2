"""What the two reinforcement-learning stages (PPO, GRPO/RLOO) share beyond :mod:`lumir.train.rewriter.loop`:
their query data, the reward, the frozen reference and the summary of the step log.

Recipe blocks (``model`` as in every rewriter stage, see :func:`lumir.train.rewriter.loop.load_policy`)::

    model:
      base: smollm2
      init: runs/rewriter/pro/model   # π_PRO: the PRO artifact; a LoRA adapter keeps training
    data:
      train: data/rl.jsonl            # one {"id", "prompt", "target"} per line: a query, its ground-truth candidate id
      limit: null                     # keep the first N rows
    reward: {type: similarity, embedder: mini, scale: 20, candidates: {...}}   # lumir.train.rewriter.rewards

The frozen reference π_PRO of eq. 5 is a second, untouched copy of ``init`` (of ``base`` when there is no init),
never the bare base model under a trained adapter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "RL_DATA_KEYS",
    "RL_RECIPE_KEYS",
    "QueryExample",
    "check_targets",
    "load_reference",
    "prepare_reward",
    "read_queries",
    "reference_source",
    "summarize_log",
    "truncate_log",
]

RL_RECIPE_KEYS = {"kind", "stage", "name", "description", "source", "model", "data", "reward", "train", "output_dir",
                  "overrides", "profiles"}  # fmt: skip
RL_DATA_KEYS = {"train", "limit"}


@dataclass(frozen=True)
class QueryExample:
    """One RL training query: its id, text and ground-truth candidate id."""

    id: str
    query: str
    target: str


def read_queries(block: Mapping[str, Any]) -> list[QueryExample]:
    """The ``data:`` block's ``train`` jsonl file(s) as examples (the first ``limit`` rows when given).

    A row is ``{"id", "prompt", "target"}``; the pair builder's records (``{"id", "query", "target", ...}``,
    :mod:`lumir.rewrite.construct`) are read as they are, so its queries can be the RL queries.

    Raises:
        ValueError: unknown ``data`` keys, no ``train``, or a row without a non-empty query or target.
        FileNotFoundError / DataFormatError: missing or malformed files.
    """
    from lumir.train.rewriter.loop import check_keys, read_rows

    check_keys(block, RL_DATA_KEYS, block="data")
    if not block.get("train"):
        raise ValueError('data.train is required: a jsonl of {"id", "prompt", "target"} rows')
    rows = read_rows(block["train"], {"target": str})
    limit = block.get("limit")
    if limit is not None:
        rows = rows[: int(limit)]
    out = []
    for i, row in enumerate(rows):
        text = row.get("prompt", row.get("query"))
        if not isinstance(text, str) or not text.strip() or not row["target"]:
            raise ValueError(f"row {i + 1} of data.train needs a non-empty 'prompt' (or 'query') and 'target'")
        out.append(QueryExample(str(row.get("id", i)), text.strip(), row["target"]))
    if not out:
        raise ValueError("data.limit leaves no training rows")
    return out


def check_targets(rows: Sequence[QueryExample], pool_ids: set[str], where: str) -> None:
    """Raise ValueError when ground-truth ids are missing from the reward's candidate pool."""
    missing = [r.target for r in rows if r.target not in pool_ids]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(rows)} training targets are not in the reward's candidate pool ({where}); "
            f"first: {missing[:5]}"
        )


def prepare_reward(recipe: Mapping[str, Any], rows: Sequence[QueryExample], reward: Any = None) -> Any:
    """The reward callable: ``reward`` if given, else the recipe's ``reward:`` block built
    (:func:`~lumir.train.rewriter.rewards.build_reward`); an embedder reward's pool must hold every target."""
    if reward is None:
        from lumir.train.rewriter.rewards import build_reward

        if not recipe.get("reward"):
            raise ValueError(
                "the recipe needs a reward block: {type: similarity|rank, embedder: ..., candidates: ...}"
            )
        reward = build_reward(recipe["reward"])
    pool = getattr(reward, "pool", None)
    if pool is not None:
        check_targets(rows, {item.id for item in pool.candidates}, str(pool.candidates.source))
    return reward


def reference_source(model_cfg: Mapping[str, Any]) -> str:
    """What π_ref is loaded from: the ``init`` artifact, else the ``base`` (default ``smollm2``)."""
    return str(model_cfg.get("init") or model_cfg.get("base") or "smollm2")


def load_reference(source: str, dtype: str = "float32") -> Any:
    """A frozen, eval-mode copy of the starting policy (π_PRO in eq. 5)."""
    from lumir.rewrite.artifact import load_rewriter_model

    ref, _, _ = load_rewriter_model(source, trainable=False, dtype=dtype)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def summarize_log(records: Sequence[Mapping[str, Any]], *, window: int = 10) -> dict[str, Any]:
    """Steps done, and mean reward, KL, score inflation and length over the first and last ``window`` steps."""
    out: dict[str, Any] = {"steps": int(records[-1]["step"]) if records else 0}
    if not records:
        return out
    head, tail = records[:window], records[-window:]
    for key in ("reward", "kl", "score_inflation", "length"):
        first = [float(r[key]) for r in head if r.get(key) is not None]
        last = [float(r[key]) for r in tail if r.get(key) is not None]
        if first:
            out[f"{key}_first"] = round(sum(first) / len(first), 6)
        if last:
            out[f"{key}_last"] = round(sum(last) / len(last), 6)
    if records[-1].get("beta") is not None:
        out["beta_last"] = float(records[-1]["beta"])
    return out


def truncate_log(log: Any, step: int) -> None:
    """Keep only the records of steps up to ``step`` in a :class:`~lumir.train.rewriter.common.JsonlLog` (a resumed
    run writes the steps after its checkpoint again)."""
    from lumir.config import atomic_write_text

    kept = [r for r in log.read() if int(r.get("step", 0)) <= step]
    atomic_write_text(log.path, "".join(json.dumps(r, default=float) + "\n" for r in kept))
