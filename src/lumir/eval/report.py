"""Evaluation reports: markdown/CSV tables of an ``EvalResult`` and pyserini-2CR-style regression checks.

An ``EvalResult`` is the JSON dict written by :mod:`lumir.eval.evaluator`::

    {"format": "lumir-eval", "format_version": 1, "created": "...", "versions": {...}, "config": {...},
     "tasks": {"beir/scifact": {"num_queries": 300, "num_candidates": 5183,
         "stages": {"first_stage": {"metrics": {"nDCG@10": 0.6451, "R@100": 0.93}, "seconds": 12.3},
                    "reranked": {...}},
         "timings": {"embed_corpus": 80.1, "first_stage": 1.2}}}}

Metric values there are fractions (MedR is a rank); tables show percentages with one decimal (MedR as is).

Benchmark files (``benchmarks/*.yaml``) pin expected scores, like pyserini's two-click reproductions (2CR)::

    name: scifact-minilm                      # required
    description: all-MiniLM-L6-v2 on BEIR SciFact test        # optional
    command: lumir eval beir --data ../shared/data/beir-scifact --embedder minilm --check benchmarks/x.yaml
    expected:                                 # required, non-empty list
      - {task: beir/scifact, stage: first_stage, metric: nDCG@10, value: 64.5, tolerance: 0.3}

Each ``expected`` entry needs exactly the keys ``task``, ``stage``, ``metric``, ``value`` and ``tolerance``.
``value`` and ``tolerance`` are in **percentage points** (MedR: in ranks); a check passes when
``|actual - value| <= tolerance``. Metric names are matched by their canonical form (``ndcg@10`` = ``nDCG@10``,
``S@5`` = ``R@5``). A task, stage or metric missing from the result is a failed check, not an error.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lumir.config import read_json
from lumir.errors import DataFormatError
from lumir.eval.metrics import parse_metric

__all__ = [
    "Benchmark",
    "CheckOutcome",
    "Expectation",
    "check_result",
    "csv_table",
    "format_check",
    "load_benchmark",
    "load_result",
    "markdown_table",
    "stage_summary",
]

RESULT_FORMAT = "lumir-eval"
RESULT_FORMAT_VERSION = 1
_EXPECTED_KEYS = ("task", "stage", "metric", "value", "tolerance")
_EPS = 1e-9  # float slack when comparing against a tolerance given in percentage points


# --------------------------------------------------------------------------------------------------------------------
# EvalResult access
# --------------------------------------------------------------------------------------------------------------------


def load_result(path: str | Path) -> dict[str, Any]:
    """Read an ``EvalResult`` JSON file and check its shape.

    Raises:
        DataFormatError: not JSON, not a lumir-eval result, an unsupported version, or a malformed task entry;
            the message names the file.
    """
    data = read_json(path)
    _validate_result(data, path=Path(path))
    return data


def _validate_result(result: Mapping[str, Any], *, path: Path | None = None) -> None:
    if result.get("format") != RESULT_FORMAT:
        raise DataFormatError(f"not a lumir evaluation result (format is {result.get('format')!r})", path=path)
    if result.get("format_version") != RESULT_FORMAT_VERSION:
        raise DataFormatError(
            f"unsupported format_version {result.get('format_version')!r}; this lumir reads version "
            f"{RESULT_FORMAT_VERSION}; re-run the evaluation with this lumir version",
            path=path,
        )
    tasks = result.get("tasks")
    if not isinstance(tasks, Mapping):
        raise DataFormatError("'tasks' must be a mapping task name -> task result", path=path)
    for name, task in tasks.items():
        stages = task.get("stages") if isinstance(task, Mapping) else None
        if not isinstance(stages, Mapping):
            raise DataFormatError(f"task {name!r}: 'stages' must be a mapping stage -> stage result", path=path)
        for stage, body in stages.items():
            if not isinstance(body, Mapping) or not isinstance(body.get("metrics"), Mapping):
                raise DataFormatError(f"task {name!r}, stage {stage!r}: needs a 'metrics' mapping", path=path)


def _is_rank_metric(name: str) -> bool:
    try:
        return parse_metric(name).is_rank
    except ValueError:
        return False


def _canonical(name: str) -> str:
    try:
        return parse_metric(name).label
    except ValueError:
        return name


def _display_value(metric: str, value: float) -> float:
    """Fractions -> percentage points; MedR stays a rank."""
    return float(value) if _is_rank_metric(metric) else 100.0 * float(value)


def _format_value(metric: str, value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    shown = _display_value(metric, value)
    if _is_rank_metric(metric):
        return f"{shown:g}"
    return f"{shown:.1f}"


def _metric_columns(result: Mapping[str, Any]) -> list[str]:
    """Union of metric names over all tasks and stages: known metrics in family/K order, then the rest as seen."""
    seen: dict[str, None] = {}
    for task in result["tasks"].values():
        for stage in task["stages"].values():
            seen.update(dict.fromkeys(stage["metrics"]))
    known, unknown = [], []
    for name in seen:
        try:
            known.append((parse_metric(name).sort_key(), name))
        except ValueError:
            unknown.append(name)
    return [name for _, name in sorted(known, key=lambda pair: pair[0])] + unknown


def _rows(result: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any], Mapping[str, Any]]]:
    """(task, stage, stage result, first stage result of the same task) in result order."""
    _validate_result(result)
    rows = []
    for task_name, task in result["tasks"].items():
        stages = list(task["stages"].items())
        for stage_name, body in stages:
            rows.append((str(task_name), str(stage_name), body, stages[0][1]))
    return rows


def _seconds(body: Mapping[str, Any]) -> str:
    seconds = body.get("seconds")
    return f"{seconds:.1f}" if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else "-"


# --------------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------------


def markdown_table(result: Mapping[str, Any]) -> str:
    """A markdown table with one row per task x stage; the stages of a task sit on adjacent rows.

    Columns are ``task | stage | <metrics> | seconds``; metrics are the union over the result in a stable order
    (R, FR, mAP, MRR, nDCG, MedR, M.A., each by K). Values are percentages with one decimal (MedR as is). For
    every stage after a task's first one, each cell also shows the change against the first stage, e.g.
    ``68.1 (+3.6)``, so first-stage vs reranked reads at a glance. Missing values show as ``-``.

    Example:
        >>> r = {"format": "lumir-eval", "format_version": 1, "tasks": {"t": {"stages": {
        ...     "first_stage": {"metrics": {"R@1": 0.5}, "seconds": 1.0},
        ...     "reranked": {"metrics": {"R@1": 0.625}, "seconds": 3.0}}}}}
        >>> print(markdown_table(r))
        | task | stage | R@1 | seconds |
        |:---|:---|---:|---:|
        | t | first_stage | 50.0 | 1.0 |
        | t | reranked | 62.5 (+12.5) | 3.0 |
    """
    rows = _rows(result)
    columns = _metric_columns(result)
    lines = [
        "| " + " | ".join(["task", "stage", *map(_escape, columns), "seconds"]) + " |",
        "|" + "|".join([":---", ":---", *["---:"] * len(columns), "---:"]) + "|",
    ]
    for task_name, stage_name, body, first in rows:
        cells = [_escape(task_name), _escape(stage_name)]
        for metric in columns:
            cell = _format_value(metric, body["metrics"].get(metric))
            base = first["metrics"].get(metric)
            value = body["metrics"].get(metric)
            if body is not first and cell != "-" and _format_value(metric, base) != "-":
                delta = _display_value(metric, value) - _display_value(metric, base)
                cell += f" ({delta:+g})" if _is_rank_metric(metric) else f" ({delta:+.1f})"
            cells.append(cell)
        cells.append(_seconds(body))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stage_summary(result: Mapping[str, Any]) -> str:
    """One line per task and stage: latency per query and, for reranked stages, the reranker's counters (a task
    that rewrote its queries gets a ``rewrite`` line first: its cost and fallbacks).

    Example:
        >>> r = {"format": "lumir-eval", "format_version": 1, "tasks": {"t": {"stages": {
        ...     "first_stage": {"metrics": {}, "seconds": 0.1, "ms_per_query": 1.0},
        ...     "reranked": {"metrics": {}, "seconds": 2.0, "ms_per_query": 20.0,
        ...                  "rerank": {"candidates": 40, "prompts": 40, "parse_failures": 0}}}}}}
        >>> print(stage_summary(r))
        - t / first_stage: 1.0 ms/query
        - t / reranked: 20.0 ms/query; candidates 40, prompts 40, parse_failures 0
    """
    lines = []
    seen: set[str] = set()
    for task_name, stage_name, body, _ in _rows(result):
        if task_name not in seen:
            seen.add(task_name)
            rewrite = _rewrite_line(task_name, result["tasks"][task_name])
            if rewrite:
                lines.append(rewrite)
        ms = body.get("ms_per_query")
        line = f"- {task_name} / {stage_name}: " + (f"{ms:.1f} ms/query" if isinstance(ms, (int, float)) else "-")
        counters = body.get("rerank")
        if isinstance(counters, Mapping):
            line += "; " + ", ".join(f"{k} {v}" for k, v in counters.items() if v not in (None, {}))
        lines.append(line)
    return "\n".join(lines)


def _rewrite_line(task_name: str, task: Mapping[str, Any]) -> str | None:
    """``- t / rewrite: 12.0 ms/query; rewritten 8/10, fallbacks echo 1, too_long 1, model_calls 1`` (or None)."""
    ms = task.get("rewrite_ms_per_query")
    if not isinstance(ms, (int, float)):
        return None
    stats = task.get("rewrite_stats") if isinstance(task.get("rewrite_stats"), Mapping) else {}
    line = f"- {task_name} / rewrite: {ms:.1f} ms/query"
    if stats:
        line += f"; rewritten {stats.get('rewritten', 0)}/{stats.get('queries', 0)}"
        fallbacks = stats.get("fallbacks") or {}
        line += ", fallbacks " + (", ".join(f"{k} {v}" for k, v in fallbacks.items()) if fallbacks else "0")
        if "model_calls" in stats:
            line += f", model_calls {stats['model_calls']}"
    return line


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def csv_table(result: Mapping[str, Any]) -> str:
    """The same table as CSV (no deltas): ``task,stage,num_queries,num_candidates,<metrics>,seconds``.

    Values are percentages with one decimal (MedR as is); missing values are empty cells.
    """
    rows = _rows(result)
    columns = _metric_columns(result)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["task", "stage", "num_queries", "num_candidates", *columns, "seconds"])
    tasks = result["tasks"]
    for task_name, stage_name, body, _ in rows:
        metrics = [_format_value(m, body["metrics"].get(m)) for m in columns]
        seconds = _seconds(body)
        writer.writerow(
            [
                task_name,
                stage_name,
                tasks[task_name].get("num_queries", ""),
                tasks[task_name].get("num_candidates", ""),
                *["" if v == "-" else v for v in metrics],
                "" if seconds == "-" else seconds,
            ]
        )
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------------------------
# Benchmarks and regression checks
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expectation:
    """One expected score: ``value ± tolerance`` in percentage points (MedR: ranks)."""

    task: str
    stage: str
    metric: str
    value: float
    tolerance: float


@dataclass(frozen=True, slots=True)
class Benchmark:
    """A benchmark file: a name, how to reproduce it, and the expected scores."""

    name: str
    expected: tuple[Expectation, ...]
    description: str = ""
    command: str = ""
    path: Path | None = None


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """The verdict on one expectation; ``actual`` is None when the result lacks the task, stage or metric."""

    task: str
    stage: str
    metric: str
    expected: float
    tolerance: float
    actual: float | None
    ok: bool
    message: str


def load_benchmark(path: str | Path) -> Benchmark:
    """Read and validate a benchmark YAML file (format in the module docstring).

    Raises:
        DataFormatError: unreadable YAML, missing or unknown keys, non-numeric values, a negative tolerance or an
            unknown metric name; the message names the file and, where known, the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DataFormatError(f"cannot read benchmark file: {err.strerror}", path=path) from err
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        raise DataFormatError(f"invalid YAML: {err}", path=path, line=line) from err
    if not isinstance(data, Mapping):
        raise DataFormatError("a benchmark must be a YAML mapping with 'name' and 'expected'", path=path)
    unknown = sorted(set(map(str, data)) - {"name", "description", "command", "expected"})
    if unknown:
        raise DataFormatError(
            f"unknown top-level keys {unknown}; allowed: name, description, command, expected", path=path
        )
    for key in ("name", "description", "command"):
        if key in data and not isinstance(data[key], str):
            raise DataFormatError(f"'{key}' must be a string", path=path, line=_line_of(root, key))
    if "name" not in data:
        raise DataFormatError("missing 'name'", path=path)
    entries = data.get("expected")
    if not isinstance(entries, list) or not entries:
        raise DataFormatError(
            "'expected' must be a non-empty list of checks", path=path, line=_line_of(root, "expected")
        )
    expected = tuple(_expectation(entry, path, _line_of(root, "expected", i)) for i, entry in enumerate(entries))
    return Benchmark(
        name=data["name"],
        expected=expected,
        description=data.get("description") or "",
        command=data.get("command") or "",
        path=path,
    )


def _line_of(root: yaml.Node | None, key: str, index: int | None = None) -> int | None:
    """1-based line of ``root[key]`` (or of its ``index``-th item) in the composed YAML tree."""
    if not isinstance(root, yaml.MappingNode):
        return None
    for key_node, value_node in root.value:
        if key_node.value == key:
            if index is None:
                return int(key_node.start_mark.line) + 1
            if isinstance(value_node, yaml.SequenceNode) and index < len(value_node.value):
                return int(value_node.value[index].start_mark.line) + 1
    return None


def _expectation(entry: Any, path: Path, line: int | None) -> Expectation:
    if not isinstance(entry, Mapping):
        raise DataFormatError(
            f"each expected check must be a mapping with keys {list(_EXPECTED_KEYS)}", path=path, line=line
        )
    missing = [k for k in _EXPECTED_KEYS if k not in entry]
    extra = sorted(set(map(str, entry)) - set(_EXPECTED_KEYS))
    if missing or extra:
        raise DataFormatError(
            f"expected check needs exactly the keys {list(_EXPECTED_KEYS)}; missing {missing}, unknown {extra}",
            path=path,
            line=line,
        )
    for key in ("value", "tolerance"):
        if not isinstance(entry[key], (int, float)) or isinstance(entry[key], bool):
            raise DataFormatError(f"'{key}' must be a number, got {entry[key]!r}", path=path, line=line)
    if entry["tolerance"] < 0:
        raise DataFormatError(f"'tolerance' must be >= 0, got {entry['tolerance']}", path=path, line=line)
    try:
        metric = parse_metric(str(entry["metric"])).label
    except ValueError as err:
        raise DataFormatError(str(err), path=path, line=line) from err
    return Expectation(
        str(entry["task"]), str(entry["stage"]), metric, float(entry["value"]), float(entry["tolerance"])
    )


def check_result(result: Mapping[str, Any], benchmark: Benchmark) -> list[CheckOutcome]:
    """Compare a result against a benchmark's expected scores, one :class:`CheckOutcome` per expectation.

    ``actual`` is reported in percentage points (MedR in ranks) like the expectation; a missing task, stage or
    metric gives ``ok=False`` with a message listing what the result does have.
    """
    _validate_result(result)
    outcomes = []
    for exp in benchmark.expected:
        actual, problem = _lookup(result, exp)
        if actual is None:
            outcomes.append(
                CheckOutcome(exp.task, exp.stage, exp.metric, exp.value, exp.tolerance, None, False, problem)
            )
            continue
        delta = actual - exp.value
        ok = abs(delta) <= exp.tolerance + _EPS
        unit = " ranks" if _is_rank_metric(exp.metric) else ""
        message = f"{exp.metric} = {actual:.2f}{unit} (expected {exp.value:.2f} ± {exp.tolerance:.2f}{unit}" + (
            ")" if ok else f"; off by {delta:+.2f}{unit})"
        )
        outcomes.append(CheckOutcome(exp.task, exp.stage, exp.metric, exp.value, exp.tolerance, actual, ok, message))
    return outcomes


def _lookup(result: Mapping[str, Any], exp: Expectation) -> tuple[float | None, str]:
    tasks = result["tasks"]
    if exp.task not in tasks:
        return None, f"task {exp.task!r} missing from the result (tasks: {sorted(tasks)})"
    stages = tasks[exp.task]["stages"]
    if exp.stage not in stages:
        return None, f"stage {exp.stage!r} missing for task {exp.task!r} (stages: {sorted(stages)})"
    metrics = {_canonical(name): value for name, value in stages[exp.stage]["metrics"].items()}
    value = metrics.get(exp.metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        what = "missing" if value is None else f"not a number ({value!r})"
        return None, f"metric {exp.metric} {what} for {exp.task}/{exp.stage} (metrics: {sorted(metrics)})"
    return _display_value(exp.metric, value), ""


def format_check(outcomes: Sequence[CheckOutcome]) -> str:
    """A plain-text pass/fail report: one ``PASS``/``FAIL`` line per check, then a summary line."""
    lines = [f"{'PASS' if o.ok else 'FAIL'}  {o.task} / {o.stage} / {o.metric}: {o.message}" for o in outcomes]
    failed = sum(not o.ok for o in outcomes)
    if not outcomes:
        lines.append("no checks were run")
    elif failed:
        lines.append(f"{failed} of {len(outcomes)} checks FAILED")
    else:
        lines.append(f"all {len(outcomes)} checks passed")
    return "\n".join(lines)
