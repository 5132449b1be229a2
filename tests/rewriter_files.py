"""Tiny rewriter training data and recipes for tests/train/rewriter (the fixtures live in its conftest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
COLOURS = ("red", "green", "blue", "yellow")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_recipe(stage: str, base: Path, data: Path, **train: Any) -> dict[str, Any]:
    """A recipe that trains on all rows in one batch per step (so the loss of successive steps is comparable)."""
    return {
        "kind": "rewriter",
        "stage": stage,
        "model": {"base": str(base), "init": None, "lora": dict(LORA)},
        "data": {"train": str(data), "holdout": 0},
        "train": {"learning_rate": 5e-2, "batch_size": 4, "max_steps": 4, "save_steps": 2, "warmup": 0, **train},
    }
