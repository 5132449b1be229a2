"""EvalResult: the typed view of an evaluation result, over the JSON it reads and writes (``format: lumir-eval``).

The JSON is unchanged (``format_version`` 1, see :mod:`lumir.eval.report`); :class:`EvalResult` adds typed access::

    result.score("flickr8k/t2i", "R@1")                   # the final stage, a fraction
    result.score("beir/scifact", "nDCG@10", stage="first_stage")
    result.tasks, result.stages("beir/scifact"), result.summary
    result.save("result.json"); EvalResult.load("result.json")

It is also a read-only mapping over the JSON (``result["tasks"]``), so code written for the dict keeps working.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lumir.eval.metrics import parse_metric

__all__ = ["EvalResult"]

FINAL = "final"
FIRST = "first"


class EvalResult(Mapping[str, Any]):
    """An evaluation result (see the module docstring).

    Args:
        data: the ``lumir-eval`` JSON mapping (checked).

    Raises:
        DataFormatError: ``data`` is not a lumir-eval result of a version this lumir reads.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        from lumir.eval.report import _validate_result

        _validate_result(data)
        self._data: dict[str, Any] = dict(data)

    # ------------------------------------------------------------------ mapping view
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"EvalResult(tasks={self.tasks})"

    # ------------------------------------------------------------------ typed access
    @property
    def tasks(self) -> list[str]:
        """Task names, in evaluation order."""
        return list(self._data["tasks"])

    @property
    def config(self) -> dict[str, Any]:
        """What was evaluated (the pipeline spec, tasks, command) as recorded."""
        return dict(self._data.get("config", {}))

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        """Rsum (fraction units, 6 = perfect) per image–text task pair and stage."""
        return dict(self._data.get("summary", {}))

    def task(self, name: str) -> dict[str, Any]:
        """One task's entry (KeyError listing the tasks)."""
        try:
            return dict(self._data["tasks"][name])
        except KeyError:
            raise KeyError(f"no task {name!r} in this result; tasks: {self.tasks}") from None

    def stages(self, task: str) -> list[str]:
        """The stages scored for ``task``, in pipeline order (``first_stage``, then ``reranked`` if any)."""
        return list(self.task(task)["stages"])

    def score(self, task: str, metric: str, stage: str = FINAL) -> float:
        """A metric of a task at a stage: ``"final"`` (the last stage, default), ``"first"``, or a stage name.

        Metric names match by their canonical form (``ndcg@10`` = ``nDCG@10``). Values are fractions (MedR: a rank).

        Raises:
            KeyError: unknown task, stage or metric (the message lists what there is).
        """
        stages = self.task(task)["stages"]
        names = list(stages)
        chosen = names[-1] if stage == FINAL else names[0] if stage == FIRST else stage
        if chosen not in stages:
            raise KeyError(f"task {task!r} has no stage {stage!r}; stages: {names}")
        metrics = stages[chosen]["metrics"]
        want = parse_metric(metric).label
        for name, value in metrics.items():
            if parse_metric(name).label == want:
                return float(value)
        raise KeyError(f"task {task!r} stage {chosen!r} has no metric {metric!r}; metrics: {list(metrics)}")

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the JSON mapping."""
        return copy.deepcopy(self._data)

    def save(self, path: str | Path) -> None:
        """Write the JSON atomically."""
        from lumir.config import write_json

        write_json(path, self._data)

    @classmethod
    def load(cls, path: str | Path) -> EvalResult:
        """Read a result written by :meth:`save` (or by any earlier lumir writing format_version 1).

        Raises:
            DataFormatError: not a lumir-eval result; the message names the file.
        """
        from lumir.eval.report import load_result

        return cls(load_result(path))

    def markdown(self) -> str:
        """The result as a markdown table (first-stage and later stages on adjacent rows, with deltas)."""
        from lumir.eval.report import markdown_table

        return markdown_table(self._data)
