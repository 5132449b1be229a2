"""Text shearing (MLLM-augmented captions): generated captions cut to the length of human ones.

The paper caps generation at T tokens, T = the average length of the dataset's raw captions ("to mimic human
annotation", §3.4), then keeps one piece of what was generated, because hallucinations pile up in the later part
of long generations. It states that piece in two ways, and both are here as named rules of :func:`shear`:

- ``rule="appendix"`` (the default) — §7.1 (appendix, Caption Generation): "we extract the first meaningful
  substring in the string whose length is greater than 5 and ends with a period. Then this substring is extended
  into the caption list for each image." See :func:`first_period_substring`.
- ``rule="clause"`` — §3.4: "we intercept the first complete clause in the generated caption". See
  :func:`first_clause`: the text before the first clause boundary (``. ! ? ; :`` or a comma, a line break, or a
  dash between words).

Pure functions:

- :func:`shearing_budget` — T from the raw captions, counted in the *generator's* tokens;
- :func:`first_period_substring` — the appendix rule: substrings end at periods, the first one longer than
  :data:`APPENDIX_MIN_LENGTH` characters is kept (with its period);
- :func:`first_clause` — the §3.4 clause rule;
- :func:`shear` — one rule on one generation, with what happened recorded (:class:`ShearResult`).

Both rules ignore periods inside decimals ("3.5") and common abbreviations ("e.g.", "Dr."): our reading of
"meaningful", since a literal ``split(".")`` would cut "A 3.5 m boat" after "A 3.". The released scripts of the
paper (github.com/lyq312318224/MLLMs-Augmented, e.g. ``LLaVA/llava.py``) simply keep ``text.split('.')[0]``, with
no length check and no period; the appendix rule above is what the paper prints, so it is the default.

When a generation holds no boundary (no qualifying substring) it is kept whole if the model stopped by itself (the
caption is complete); if it was cut by the T-token cap mid-sentence it is kept too, but marked ``complete=False``
so datasets can drop it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "APPENDIX_MIN_LENGTH",
    "CAPTION_QUESTION",
    "DEFAULT_SHEAR_RULE",
    "SHEAR_RULES",
    "ShearResult",
    "clean_generation",
    "first_clause",
    "first_period_substring",
    "shear",
    "shear_all",
    "shearing_budget",
]

CAPTION_QUESTION = "Describe the <image> in English:"
"""The paper's captioning question, the same for every MLLM in the pool (§3.2, Eq. 2)."""

APPENDIX_MIN_LENGTH = 5
"""§7.1: the kept substring's "length is greater than 5" (characters, period included, surrounding spaces not)."""

SHEAR_RULES = ("appendix", "clause")
"""``"appendix"``: §7.1's first substring longer than 5 characters ending with a period; ``"clause"``: §3.4's first
complete clause."""

DEFAULT_SHEAR_RULE = "appendix"
"""The rule :func:`shear` applies unless told otherwise (the one the paper's appendix spells out)."""

_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "jr.", "sr.", "no.", "u.s.")
_BOUNDARY = re.compile(r"[.!?;:]|,|\n| [-–—] ")
_PREAMBLE = re.compile(
    r"^\s*(?:sure\b[,!.]?\s*|here(?:'s| is) (?:a |the )?(?:description|caption)[^:]*:\s*|caption:\s*|answer:\s*)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ShearResult:
    """One sheared caption.

    Attributes:
        text: the kept caption ("" when nothing usable was generated).
        cut: whether anything after the kept text was dropped.
        complete: False when the kept text ends mid-sentence (cut by the token cap, no boundary) or is empty.
        raw: the generation as received.
        rule: the shearing rule applied (``"appendix"`` or ``"clause"``, see :data:`SHEAR_RULES`).
    """

    text: str
    cut: bool
    complete: bool
    raw: str
    rule: str = "clause"


def shearing_budget(captions: Iterable[str], count_tokens: Callable[[str], int]) -> int:
    """T: the mean raw-caption length in the generator's tokens, rounded up (at least 1).

    Example:
        >>> shearing_budget(["a dog runs", "two cats sleep on a sofa"], lambda s: len(s.split()))
        5
    """
    lengths = [count_tokens(c) for c in captions if c and c.strip()]
    if not lengths:
        raise ValueError("shearing needs at least one non-empty raw caption to measure T")
    return max(1, math.ceil(sum(lengths) / len(lengths)))


def clean_generation(text: str) -> str:
    """Strip whitespace, wrapping quotes and chat preambles ("Sure! Here is a caption:").

    Example:
        >>> clean_generation('  Sure! Here is a caption: "A dog on grass."  ')
        'A dog on grass.'
    """
    out = (text or "").strip()
    previous = None
    while previous != out:
        previous = out
        out = _PREAMBLE.sub("", out).strip().strip("\"'“”").strip()
    return out


def _is_boundary(text: str, match: re.Match[str]) -> bool:
    ch = match.group(0)
    i = match.start()
    if ch == ".":
        before, after = text[:i], text[i + 1 :]
        if before[-1:].isdigit() and after[:1].isdigit():  # 3.5
            return False
        left = before.split()[-1] if before.strip() and not before[-1:].isspace() else ""
        right = after.split()[0] if after.strip() and not after[:1].isspace() else ""
        token = (left + "." + right).lower()  # the whitespace-delimited word holding this period
        if token.startswith("no.") and not after.lstrip()[:1].isdigit():  # "No. 5" is short, "says no." is a word
            return True
        if any(token.startswith(a) or token == a.rstrip(".") for a in _ABBREVIATIONS):
            return False
    if ch == ",":
        before, after = text[:i], text[i + 1 :]
        if before[-1:].isdigit() and after[:1].isdigit():  # 1,000
            return False
    return True


def first_clause(text: str) -> tuple[str, bool]:
    """The first complete clause of ``text`` and whether a boundary was found.

    Example:
        >>> first_clause("A man rides a bike down the street, while a dog chases him. It is sunny.")
        ('A man rides a bike down the street', True)
        >>> first_clause("A 3.5 m boat")
        ('A 3.5 m boat', False)
    """
    text = text.strip().lstrip(".!?;:,-–— \n").strip()  # a leading boundary ("- a dog") starts no clause
    for match in _BOUNDARY.finditer(text):
        if _is_boundary(text, match):
            return text[: match.start()].strip(), True
    return text, False


def first_period_substring(text: str, min_length: int = APPENDIX_MIN_LENGTH) -> tuple[str, bool]:
    """The appendix rule (§7.1): the first substring that ends with a period and is longer than ``min_length``.

    Substrings run from one period to the next; each is stripped of surrounding whitespace and keeps its period.
    Shorter ones ("Yes.", "Sure.") are skipped. Periods in decimals and abbreviations do not end a substring; ``!``,
    ``?``, ``;``, commas and line breaks do not either (the paper names only the period). Returns the kept substring
    and True, or, when no substring qualifies, the text after the skipped short ones and False.

    Example:
        >>> first_period_substring("Sure. A man rides a bike down the street, smiling. It is sunny.")
        ('A man rides a bike down the street, smiling.', True)
        >>> first_period_substring("Dr. Smith holds a 3.5 kg fish")
        ('Dr. Smith holds a 3.5 kg fish', False)
    """
    head, bounded, _ = _appendix_split(text, min_length)
    return head, bounded


def _appendix_split(text: str, min_length: int) -> tuple[str, bool, str]:
    """(kept substring, whether one qualified, what follows it) for :func:`first_period_substring`."""
    text = text.strip()
    start = 0
    for match in re.finditer(r"\.", text):
        if not _is_boundary(text, match):
            continue
        piece = text[start : match.end()].strip()
        if len(piece) > min_length:
            return piece, True, text[match.end() :].strip()
        start = match.end()
    return text[start:].strip(), False, ""


def shear(generation: str, *, hit_token_cap: bool = False, rule: str = DEFAULT_SHEAR_RULE) -> ShearResult:
    """Shear one generated caption (the token cap T is applied at generation time).

    Args:
        generation: the MLLM's output.
        hit_token_cap: the generation stopped at the T-token cap rather than by itself.
        rule: ``"appendix"`` (default) — §7.1, "the first meaningful substring in the string whose length is
            greater than 5 and ends with a period" (:func:`first_period_substring`, period kept); ``"clause"`` —
            §3.4, "the first complete clause in the generated caption" (:func:`first_clause`, boundary dropped).

    Example:
        >>> r = shear("A brown dog is running through the grass. In the background, trees.")
        >>> r.text, r.cut, r.complete, r.rule
        ('A brown dog is running through the grass.', True, True, 'appendix')
        >>> shear("A brown dog, running. Trees.", rule="clause").text
        'A brown dog'
    """
    if rule not in SHEAR_RULES:
        raise ValueError(f"rule must be one of {SHEAR_RULES}, got {rule!r}")
    cleaned = clean_generation(generation)
    if not cleaned:
        return ShearResult("", cut=False, complete=False, raw=generation, rule=rule)
    if rule == "clause":
        head, bounded = first_clause(cleaned)
        cut = bounded and len(head) < len(cleaned.rstrip(".!? "))
    else:
        head, bounded, rest = _appendix_split(cleaned, APPENDIX_MIN_LENGTH)
        cut = bool(rest)
    complete = bounded or not hit_token_cap
    return ShearResult(head, cut=cut, complete=complete and bool(head), raw=generation, rule=rule)


def shear_all(
    generations: Sequence[str], hit_cap: Sequence[bool] | None = None, *, rule: str = DEFAULT_SHEAR_RULE
) -> list[ShearResult]:
    """:func:`shear` over a batch."""
    caps = list(hit_cap) if hit_cap is not None else [False] * len(generations)
    return [shear(g, hit_token_cap=c, rule=rule) for g, c in zip(generations, caps, strict=True)]
