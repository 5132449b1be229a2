"""Task instructions for queries: which instruction a query gets, and how it is applied to its text.

Instructions describe the search intent (MM-Embed §3–4: the same image query asks for a caption or for a similar
image depending on the instruction). They follow M-BEIR/UniIR:

- **Keys.** M-BEIR's ``instructions/query_instructions.tsv`` (header, then ``query_modality, cand_modality,
  dataset, dataset_id, prompt_1..n``) keys prompts by ``(dataset_id, query_modality, cand_modality)``; UniIR
  ``src/data/mbeir_dataset.py::_load_query_instructions`` builds exactly that key and drops empty prompts. We also
  index every row by its M-BEIR task name ``"<dataset lower>_task<task id>"`` (e.g. ``"mscoco_task0"``).
- **Resolution** (queries only; candidates never get instructions): ``query.instruction`` when set (``""``
  explicitly disables), else the entry for ``query.task``, else the entry for
  ``(query.meta["dataset_id"], query modality, query.meta["cand_modality"])``, else none.
- **Choice** among several prompts: the first (deterministic default), or ``choice="random"``, a seeded choice
  per query id. UniIR samples an instruction at *evaluation* too, not only in training:
  ``MBEIRMainDataset.__getitem__`` calls ``_get_random_query_prompt`` (``random.choice(prompts)``) for
  ``Mode.TRAIN`` and ``Mode.EVAL`` alike, and ``src/common/mbeir_embedder.py`` embeds the evaluation queries through
  ``MBEIRMainDataset(mode=Mode.EVAL)`` after ``set_seed(config.seed + rank)`` (TIGER-AI-Lab/UniIR,
  ``src/data/mbeir_dataset.py`` at 1017242 and da8c00a, ``src/common/mbeir_embedder.py``). UniIR's scores thus
  use one random prompt per query from Python's global RNG (draws that depend on the seed, the process rank and the
  data order). ``choice="random"`` is the reproducible counterpart — a seeded draw per query id, not UniIR's exact
  draws — and ``choice="first"`` a deterministic deviation from it. The choice goes wherever an instruction table
  goes: ``InstructionSet.from_mbeir_tsv(path, choice="random", seed=0)``, or the dict
  ``{"path": "query_instructions.tsv", "choice": "random", "seed": 0}`` accepted by :meth:`InstructionSet.from_dict`
  and so by every embedder's ``instructions=`` (:func:`lumir.embed.base.as_instruction_set`); an embedder's
  ``spec()`` keeps the table with its choice and seed.
- **Application** (UniIR ``MBEIRMainDataset.__getitem__``): ``format_string(f"{prompt} {query_txt}")`` with
  ``query_txt = ""`` for image-only queries, so an image-only query with an instruction gains the instruction as
  its text and becomes an image+text query. Text embedders in the E5/NV-Embed style use a template instead, e.g.
  ``"Instruct: {instruction}\\nQuery: {text}"``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lumir.errors import DataFormatError
from lumir.types import Item, Modality, Query

__all__ = [
    "MBEIR_TASK_IDS",
    "UNIIR_TEMPLATE",
    "InstructionSet",
    "apply_instruction",
    "format_string",
    "mbeir_task_name",
    "resolve_instruction",
]

UNIIR_TEMPLATE = "uniir"
"""Template name for UniIR's application: ``format_string(f"{instruction} {text}")``."""

MBEIR_TASK_IDS: dict[tuple[Modality, Modality], int] = {
    (Modality.TEXT, Modality.IMAGE): 0,
    (Modality.TEXT, Modality.TEXT): 1,
    (Modality.TEXT, Modality.IMAGE_TEXT): 2,
    (Modality.IMAGE, Modality.TEXT): 3,
    (Modality.IMAGE, Modality.IMAGE): 4,
    (Modality.IMAGE_TEXT, Modality.TEXT): 6,
    (Modality.IMAGE_TEXT, Modality.IMAGE): 7,
    (Modality.IMAGE_TEXT, Modality.IMAGE_TEXT): 8,
}
"""M-BEIR task ids by (query modality, candidate modality) (UniIR ``data/preprocessing/utils.py::MBEIR_TASK``;
task 5, image -> image+text, is unused there)."""


def mbeir_task_name(dataset: str, query_modality: Modality | str, cand_modality: Modality | str) -> str:
    """M-BEIR task name, e.g. ``mbeir_task_name("MSCOCO", "text", "image") == "mscoco_task0"``.

    Raises:
        ValueError: the modality pair is not an M-BEIR task.
    """
    pair = (Modality.parse(query_modality), Modality.parse(cand_modality))
    if pair not in MBEIR_TASK_IDS:
        raise ValueError(f"{pair[0].value} -> {pair[1].value} is not an M-BEIR task")
    return f"{dataset.lower()}_task{MBEIR_TASK_IDS[pair]}"


def format_string(s: str | None) -> str:
    """UniIR's text normaliser: strip, drop ``\\r`` and surrounding quotes, capitalise, end with a period.

    Mirrors UniIR ``src/data/preprocessing/utils.py::format_string``.

    Example:
        >>> format_string(' "find a photo"')
        'Find a photo.'
    """
    s = (s or "").replace("\r", "").strip().strip('"')
    if s:
        s = s[0].upper() + s[1:]
        if s[-1] not in ".?!":
            s += "."
    return s


def apply_instruction(text: str | None, instruction: str, template: str = UNIIR_TEMPLATE) -> str:
    """Combine an instruction with a query's text (``None`` for image-only queries).

    Args:
        text: the query text, or None.
        instruction: the instruction.
        template: ``"uniir"`` for UniIR's ``format_string(f"{format_string(instruction)} {text}")``, or a
            ``str.format`` template with ``{instruction}`` and ``{text}`` fields, used verbatim (trailing whitespace
            stripped).

    Example:
        >>> apply_instruction("a dog on a sofa", "find an image that matches the caption.")
        'Find an image that matches the caption. a dog on a sofa.'
        >>> apply_instruction("what is it?", "Retrieve passages", "Instruct: {instruction}\\nQuery: {text}")
        'Instruct: Retrieve passages\\nQuery: what is it?'
    """
    if template == UNIIR_TEMPLATE:  # UniIR formats the sampled prompt, then prompt + text
        return format_string(f"{format_string(instruction)} {text or ''}")
    return template.format(instruction=instruction, text=text or "").rstrip()


def _key(dataset_id: Any, query_modality: Modality | str, cand_modality: Modality | str) -> tuple[str, str, str]:
    return (str(dataset_id).strip(), Modality.parse(query_modality).value, Modality.parse(cand_modality).value)


def _prompts(value: str | Sequence[str], where: str) -> tuple[str, ...]:
    prompts = (value,) if isinstance(value, str) else tuple(value)
    prompts = tuple(p for p in prompts if p and p.strip())
    if not prompts:
        raise ValueError(f"no non-empty instruction for {where}")
    return prompts


@dataclass(frozen=True)
class InstructionSet:
    """Instructions by task name and by ``(dataset_id, query_modality, cand_modality)``.

    Args:
        by_task: task name -> prompt(s).
        by_key: ``(dataset_id, query_modality, cand_modality)`` -> prompt(s).
        choice: ``"first"`` (deterministic) or ``"random"`` (seeded, per query id).
        seed: seed for ``choice="random"``; change it (e.g. per epoch) to draw other prompts.

    Example:
        >>> s = InstructionSet.from_dict({"mscoco_task0": "Find an image that matches the caption."})
        >>> s.resolve(Query("q1", text="a dog", task="mscoco_task0"))
        'Find an image that matches the caption.'
    """

    by_task: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    by_key: Mapping[tuple[str, str, str], tuple[str, ...]] = field(default_factory=dict)
    choice: str = "first"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.choice not in ("first", "random"):
            raise ValueError(f"choice must be 'first' or 'random', got {self.choice!r}")

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, choice: str | None = None, seed: int | None = None
    ) -> InstructionSet:
        """Build from ``{task: prompt or [prompts]}``, from the dict :meth:`to_dict` writes, or from
        ``{"path": M-BEIR tsv, "choice": ..., "seed": ...}`` (:meth:`from_mbeir_tsv`; ``choice`` and ``seed``
        optional).

        Raises:
            ValueError: a task has no non-empty prompt, or the dict is malformed.
            DataFormatError: the ``path`` form names a missing or malformed file.
        """
        if "path" in data:
            unknown = sorted(set(data) - {"path", "choice", "seed"})
            if unknown:
                raise ValueError(f"an instruction file spec takes path, choice and seed; got also {unknown}")
            return cls.from_mbeir_tsv(
                data["path"],
                choice=choice or str(data.get("choice", "first")),
                seed=int(data.get("seed", 0)) if seed is None else seed,
            )
        if "by_task" in data or "by_key" in data:
            by_task = {str(t): _prompts(p, f"task {t!r}") for t, p in dict(data.get("by_task", {})).items()}
            by_key: dict[tuple[str, str, str], tuple[str, ...]] = {}
            for row in data.get("by_key", []):
                try:
                    key = _key(row["dataset_id"], row["query_modality"], row["cand_modality"])
                    by_key[key] = _prompts(row["prompts"], f"key {key}")
                except (KeyError, TypeError) as err:
                    raise ValueError(
                        f"malformed by_key row {row!r}: needs dataset_id, query_modality, cand_modality and prompts"
                    ) from err
            return cls(
                by_task=by_task,
                by_key=by_key,
                choice=choice or str(data.get("choice", "first")),
                seed=int(data.get("seed", 0)) if seed is None else seed,
            )
        by_task = {str(t): _prompts(p, f"task {t!r}") for t, p in data.items()}
        return cls(by_task=by_task, choice=choice or "first", seed=0 if seed is None else seed)

    @classmethod
    def from_mbeir_tsv(cls, path: str | Path, *, choice: str = "first", seed: int = 0) -> InstructionSet:
        """Parse M-BEIR's ``query_instructions.tsv`` (header line, tab-separated, empty prompts dropped).

        Raises:
            DataFormatError: a row is malformed; the message names the file and line.
        """
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise DataFormatError("instruction file not found", path=path) from None
        if not lines:
            raise DataFormatError("empty file; expected a header line", path=path)
        header = [h.strip() for h in lines[0].split("\t")]
        if header[:4] != ["query_modality", "cand_modality", "dataset", "dataset_id"]:
            raise DataFormatError(
                f"unexpected header {header[:4]}; expected query_modality, cand_modality, dataset, dataset_id, "
                "prompt_1..n",
                path=path,
                line=1,
            )
        by_task: dict[str, tuple[str, ...]] = {}
        by_key: dict[tuple[str, str, str], tuple[str, ...]] = {}
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 5:
                raise DataFormatError(
                    f"expected at least 5 tab-separated columns, got {len(parts)}", path=path, line=lineno
                )
            qmod, cmod, dataset, dataset_id = (p.strip() for p in parts[:4])
            try:
                key = _key(dataset_id, qmod, cmod)
                task = mbeir_task_name(dataset, qmod, cmod)
                prompts = _prompts([p.strip() for p in parts[4:]], f"{dataset} {qmod} -> {cmod}")
            except ValueError as err:
                raise DataFormatError(str(err), path=path, line=lineno) from err
            by_key[key] = prompts
            by_task[task] = prompts
        return cls(by_task=by_task, by_key=by_key, choice=choice, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict that :meth:`from_dict` turns back into an equal set."""
        return {
            "by_task": {t: list(p) for t, p in self.by_task.items()},
            "by_key": [
                {"dataset_id": k[0], "query_modality": k[1], "cand_modality": k[2], "prompts": list(p)}
                for k, p in self.by_key.items()
            ],
            "choice": self.choice,
            "seed": self.seed,
        }

    def prompts_for(self, item: Item) -> tuple[str, ...]:
        """All candidate prompts for a query from the table (ignores ``query.instruction``); empty if none."""
        task = item.task if isinstance(item, Query) else None
        if task is not None and task in self.by_task:
            return tuple(self.by_task[task])
        dataset_id = item.meta.get("dataset_id")
        cand = item.meta.get("cand_modality", item.meta.get("candidate_modality"))
        if dataset_id is not None and cand is not None:
            return tuple(self.by_key.get(_key(dataset_id, item.modality, cand), ()))
        return ()

    def resolve(self, item: Item) -> str | None:
        """The instruction for one query, or None (see the module docstring for the order)."""
        if isinstance(item, Query) and item.instruction is not None:
            return item.instruction or None
        prompts = self.prompts_for(item)
        if not prompts:
            return None
        if self.choice == "first" or len(prompts) == 1:
            return prompts[0]
        digest = hashlib.sha256(f"{self.seed}\x00{item.id}".encode()).digest()
        return prompts[int.from_bytes(digest[:8], "little") % len(prompts)]

    def tasks(self) -> Iterable[str]:
        """Task names with instructions."""
        return self.by_task.keys()

    def __len__(self) -> int:
        return len(self.by_task) + len(self.by_key)


def resolve_instruction(item: Item, instructions: InstructionSet | None) -> str | None:
    """The instruction for a query: ``query.instruction`` first, then the set (if any)."""
    if isinstance(item, Query) and item.instruction is not None:
        return item.instruction or None
    return None if instructions is None else instructions.resolve(item)
