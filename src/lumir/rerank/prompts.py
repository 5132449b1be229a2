"""Reranking prompts as data: MM-Embed's Table 13 for every M-BEIR task, LamRA-style pointwise and listwise prompts.

A template is a string with four markers, exactly as the papers write them: ``<qimg>``, ``<qtxt>`` (the query's
image and text), ``<cimg>``, ``<ctxt>`` (the candidate's); listwise templates use ``<candidates>``. Rendering turns
a template into chat content parts (images stay images; in caption-proxy mode they become their captions).

- :data:`MBEIR_TRUE_FALSE_PROMPTS` — MM-Embed (Lin et al., 2024) Table 13, keyed by M-BEIR task name; the paper's
  text is kept verbatim (the default), including its missing line break before "Does" for OVEN/InfoSeek.
- :data:`MBEIR_TRUE_FALSE_PROMPTS_FULL` — the same prompts with every input the task's modalities hold (ours).
  Table 13 numbers its tasks 1-8 by modality pair; as printed, three of them leave out an image their queries or
  candidates have (:data:`TABLE13_OMISSIONS`): task 3, q_txt -> (c_img, c_txt) (EDIS, WebQA; M-BEIR
  ``edis_task2``, ``webqa_task2``), has no ``<cimg>``; task 7, (q_img, q_txt) -> c_img (FashionIQ, CIRR;
  ``fashioniq_task7``, ``cirr_task7``), has no ``<qimg>``, so the reference image of a composed query is never
  shown; task 8, (q_img, q_txt) -> (c_img, c_txt) (OVEN, InfoSeek; ``oven_task8``, ``infoseek_task8``), has no
  ``<cimg>``. The full variant adds exactly those markers, each followed by a line break (``Answer: <cimg>\\n<ctxt>``,
  ``<qimg>\\n<cimg>\\nCaption:<qtxt>``), and changes no word: deleting the added ``marker + "\\n"`` gives Table 13
  back. Select it with ``table="full"`` (:func:`true_false_prompt`) or a reranker's ``prompt_table="full"``.
- :data:`TEXT_TRUE_FALSE_PROMPTS` — the same True/False framing for text-to-text tasks outside M-BEIR (BEIR), ours.
- :data:`LAMRA_POINTWISE_PROMPT`, :data:`LAMRA_LISTWISE_PROMPT` — LamRA (Liu et al., 2025) §3.4–3.5 trains its
  reranker to answer YES/NO for one candidate and the position of the relevant one among several; the paper does not
  print its prompts, so these are ours, with the released code's ``Ans: (N)`` answer format accepted when parsing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lumir.types import Modality, Query

__all__ = [
    "DEFAULT_TRUE_FALSE_PROMPTS",
    "LAMRA_LISTWISE_PROMPT",
    "LAMRA_POINTWISE_PROMPT",
    "MARKERS",
    "MBEIR_TRUE_FALSE_PROMPTS",
    "MBEIR_TRUE_FALSE_PROMPTS_FULL",
    "PROMPT_TABLES",
    "TABLE13_OMISSIONS",
    "TEXT_TRUE_FALSE_PROMPTS",
    "parse_position",
    "template_markers",
    "true_false_prompt",
]

MARKERS = ("<qimg>", "<qtxt>", "<cimg>", "<ctxt>", "<candidates>", "<n>")
_MARKER_RE = re.compile("(" + "|".join(re.escape(m) for m in MARKERS) + ")")

_NEWS = "<cimg>\nNews:<qtxt>\nDoes the above News image match the News story? True or False"
_COCO = "<cimg>\nCaption:<qtxt>\nDoes the above daily-life image match the caption? True or False"
_FASHION = "<cimg>\nDescription:<qtxt>\nDoes the above image match the cloth style description? True or False"
_QA = "Question: <qtxt>\nAnswer: <ctxt>\nDoes the answer correctly answer the question? True or False"
_VQA = "<qimg>\nQuestion:<qtxt>\nAnswer:<ctxt>Does the answer correctly answer the question? True or False"
_CIR = "<cimg>\nCaption:<qtxt>\nDoes the above caption describe the modification of the image? True or False"

MBEIR_TRUE_FALSE_PROMPTS: dict[str, str] = {
    # 1. q_txt -> c_img
    "visualnews_task0": _NEWS,
    "mscoco_task0": _COCO,
    "fashion200k_task0": _FASHION,
    # 2. q_txt -> c_txt
    "webqa_task1": _QA,
    # 3. q_txt -> (c_img, c_txt)
    "edis_task2": _QA,
    "webqa_task2": _QA,
    # 4. q_img -> c_txt
    "visualnews_task3": "<qimg>\nNews:<ctxt>\nDoes the above News image match the News story? True or False",
    "mscoco_task3": "<qimg>\nCaption:<ctxt>\nDoes the above daily-life image match the caption? True or False",
    "fashion200k_task3": (
        "<qimg>\nDescription:<ctxt>\nDoes the above image match the cloth style description? True or False"
    ),
    # 5. q_img -> c_img
    "nights_task4": "<qimg>\n<cimg>\nDoes the above two images have the same scene? True or False",
    # 6. (q_img, q_txt) -> c_txt
    "oven_task6": _VQA,
    "infoseek_task6": _VQA,
    # 7. (q_img, q_txt) -> c_img
    "fashioniq_task7": _CIR,
    "cirr_task7": _CIR,
    # 8. (q_img, q_txt) -> (c_img, c_txt)
    "oven_task8": _VQA,
    "infoseek_task8": _VQA,
}
"""MM-Embed Table 13: the zero-shot True/False reranking prompt of each of M-BEIR's 16 tasks."""

TABLE13_OMISSIONS: dict[str, str] = {
    "edis_task2": "<cimg>",  # Table 13 task 3, q_txt -> (c_img, c_txt)
    "webqa_task2": "<cimg>",
    "fashioniq_task7": "<qimg>",  # Table 13 task 7, (q_img, q_txt) -> c_img
    "cirr_task7": "<qimg>",
    "oven_task8": "<cimg>",  # Table 13 task 8, (q_img, q_txt) -> (c_img, c_txt)
    "infoseek_task8": "<cimg>",
}
"""The marker each Table 13 prompt leaves out although its task's modalities have that input."""

_QA_FULL = "Question: <qtxt>\nAnswer: <cimg>\n<ctxt>\nDoes the answer correctly answer the question? True or False"
_CIR_FULL = (
    "<qimg>\n<cimg>\nCaption:<qtxt>\nDoes the above caption describe the modification of the image? True or False"
)
_VQA_FULL = (
    "<qimg>\nQuestion:<qtxt>\nAnswer:<cimg>\n<ctxt>Does the answer correctly answer the question? True or False"
)

MBEIR_TRUE_FALSE_PROMPTS_FULL: dict[str, str] = {
    **MBEIR_TRUE_FALSE_PROMPTS,
    "edis_task2": _QA_FULL,
    "webqa_task2": _QA_FULL,
    "fashioniq_task7": _CIR_FULL,
    "cirr_task7": _CIR_FULL,
    "oven_task8": _VQA_FULL,
    "infoseek_task8": _VQA_FULL,
}
"""Table 13 with the :data:`TABLE13_OMISSIONS` markers added (full content; wording unchanged; ours)."""

PROMPT_TABLES: dict[str, dict[str, str]] = {"table13": MBEIR_TRUE_FALSE_PROMPTS, "full": MBEIR_TRUE_FALSE_PROMPTS_FULL}
"""M-BEIR True/False prompt tables by name: ``"table13"`` (verbatim, the default) and ``"full"``."""

TEXT_TRUE_FALSE_PROMPTS: dict[str, str] = {
    "beir/scifact": "Claim: <qtxt>\nAbstract: <ctxt>\nDoes the abstract support or refute the claim? True or False",
}
"""True/False prompts for text retrieval tasks outside M-BEIR, in Table 13's framing (ours)."""

DEFAULT_TRUE_FALSE_PROMPTS: dict[tuple[Modality, Modality], str] = {
    (Modality.TEXT, Modality.TEXT): (
        "Query: <qtxt>\nDocument: <ctxt>\nDoes the document match the query? True or False"
    ),
    (Modality.TEXT, Modality.IMAGE): _COCO,
    (Modality.IMAGE, Modality.TEXT): (
        "<qimg>\nCaption:<ctxt>\nDoes the above daily-life image match the caption? True or False"
    ),
    (Modality.IMAGE, Modality.IMAGE): "<qimg>\n<cimg>\nDoes the above two images have the same scene? True or False",
    (Modality.IMAGE_TEXT, Modality.IMAGE): _CIR,
    (Modality.IMAGE_TEXT, Modality.TEXT): _VQA,
}
"""Fallbacks by (query, candidate) modality for tasks without their own prompt (Table 13's wording)."""

LAMRA_POINTWISE_PROMPT = (
    "Query: <qimg><qtxt>\nCandidate: <cimg><ctxt>\nIs the candidate relevant to the query? Answer YES or NO."
)
"""LamRA-Rank pointwise: P(YES) for one (query, candidate) pair (§3.4; wording ours)."""

LAMRA_LISTWISE_PROMPT = (
    "Query: <qimg><qtxt>\nHere are <n> candidates:\n<candidates>\n"
    "Which candidate is the most relevant to the query? Answer with its number only."
)
"""LamRA-Rank listwise: the query and up to M numbered candidates; the model names the relevant one (§3.4)."""

LISTWISE_ITEM = "(<n>) <cimg><ctxt>"
"""How one candidate appears inside ``<candidates>``."""


@dataclass(frozen=True)
class PromptChoice:
    """The template chosen for a query and where it came from (for reports)."""

    template: str
    source: str


def template_markers(template: str) -> list[str]:
    """The markers a template uses, in order.

    Example:
        >>> template_markers(MBEIR_TRUE_FALSE_PROMPTS["mscoco_task0"])
        ['<cimg>', '<qtxt>']
    """
    return list(_MARKER_RE.findall(template))


def split_template(template: str) -> list[str]:
    """The template cut into literal text and markers (markers are their own pieces)."""
    return [p for p in _MARKER_RE.split(template) if p]


def true_false_prompt(
    query: Query,
    candidate_modality: Modality,
    *,
    overrides: Mapping[str, str] | None = None,
    table: str = "table13",
) -> PromptChoice:
    """The True/False template for a query: ``overrides[task]``, Table 13 for M-BEIR tasks, BEIR prompts, fallback.

    ``table`` picks the M-BEIR table (:data:`PROMPT_TABLES`): ``"table13"`` verbatim, or ``"full"`` with the images
    Table 13 leaves out (:data:`TABLE13_OMISSIONS`).

    Example:
        >>> true_false_prompt(Query("q", text="a dog", task="mscoco_task0"), Modality.IMAGE).source
        'MM-Embed Table 13 (mscoco_task0)'
        >>> true_false_prompt(Query("q", text="bluer", task="cirr_task7"), Modality.IMAGE, table="full").source
        'MM-Embed Table 13, full content (cirr_task7)'
    """
    if table not in PROMPT_TABLES:
        raise ValueError(f"unknown prompt table {table!r}; known: {sorted(PROMPT_TABLES)}")
    task = query.task or ""
    if overrides and task in overrides:
        return PromptChoice(overrides[task], f"override ({task})")
    if task in PROMPT_TABLES[table]:
        full = table == "full" and task in TABLE13_OMISSIONS
        return PromptChoice(
            PROMPT_TABLES[table][task], f"MM-Embed Table 13{', full content' if full else ''} ({task})"
        )
    if task in TEXT_TRUE_FALSE_PROMPTS:
        return PromptChoice(TEXT_TRUE_FALSE_PROMPTS[task], f"text True/False ({task})")
    pair = (query.modality, candidate_modality)
    if pair in DEFAULT_TRUE_FALSE_PROMPTS:
        return PromptChoice(DEFAULT_TRUE_FALSE_PROMPTS[pair], f"default {pair[0].value}->{pair[1].value}")
    return PromptChoice(
        "<qimg><qtxt>\nCandidate: <cimg><ctxt>\nDoes the candidate match the query? True or False",
        f"generic {pair[0].value}->{pair[1].value}",
    )


_POSITION_RE = re.compile(r"(?:Ans(?:wer)?\s*[:：]?\s*)?\(?\s*(\d{1,2})\s*\)?")


def parse_position(answer: str, n: int) -> int | None:
    """The 1-based position a listwise answer names (``"3"``, ``"(3)"``, ``"Ans: (3)"``), or None.

    Example:
        >>> parse_position("Ans: (2)", 5), parse_position("Candidate 7", 5), parse_position("none", 5)
        (2, None, None)
    """
    match = _POSITION_RE.search(answer or "")
    if match is None:
        return None
    value = int(match.group(1))
    return value if 1 <= value <= n else None


def describe_prompts(names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Table 13 as rows ``{task, prompt}`` (for docs and reports)."""
    keys = list(names) if names is not None else list(MBEIR_TRUE_FALSE_PROMPTS)
    return [{"task": k, "prompt": MBEIR_TRUE_FALSE_PROMPTS[k]} for k in keys]
