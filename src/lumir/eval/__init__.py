"""Evaluation: metrics, tasks as data, the evaluation harness and reports."""

from __future__ import annotations

from typing import Any

__all__ = ["EvalResult", "evaluate", "evaluate_task", "load_tasks"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate", "evaluate_task"):
        from lumir.eval import evaluator

        return getattr(evaluator, name)
    if name == "EvalResult":
        from lumir.eval.result import EvalResult

        return EvalResult
    if name == "load_tasks":
        from lumir.eval.tasks import load_tasks

        return load_tasks
    raise AttributeError(name)
