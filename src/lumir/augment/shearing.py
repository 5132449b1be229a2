"""Text shearing (MLLM-augmented captions, §3.4): generated captions cut to the length of human ones.

The paper caps generation at T tokens, T = the average length of the dataset's raw captions ("to mimic human
annotation"), then keeps "the first complete clause" of what was generated, because hallucinations pile up in the
later part of long generations. Pure functions:

- :func:`shearing_budget` — T from the raw captions, counted in the *generator's* tokens;
- :func:`first_clause` — the first complete clause: the text before the first clause boundary (``. ! ? ; :`` or a
  comma, a line break, or a dash between words), ignoring decimal points and common abbreviations;
- :func:`shear` — both steps on one generation, with what happened recorded (:class:`ShearResult`).

When a generation holds no boundary it is kept whole if the model stopped by itself (the caption is complete);
if it was cut by the T-token cap mid-clause it is kept too, but marked ``complete=False`` so datasets can drop it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["CAPTION_QUESTION", "ShearResult", "clean_generation", "first_clause", "shear", "shearing_budget"]

CAPTION_QUESTION = "Describe the <image> in English:"
"""The paper's captioning question, the same for every MLLM in the pool (§3.2, Eq. 2)."""

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
        cut: whether anything after the first clause was dropped.
        complete: False when the kept text ends mid-clause (cut by the token cap, no boundary) or is empty.
        raw: the generation as received.
    """

    text: str
    cut: bool
    complete: bool
    raw: str


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


def shear(generation: str, *, hit_token_cap: bool = False) -> ShearResult:
    """Shear one generated caption (the token cap T is applied at generation time).

    Args:
        generation: the MLLM's output.
        hit_token_cap: the generation stopped at the T-token cap rather than by itself.

    Example:
        >>> r = shear("A brown dog is running through the grass. In the background, trees.")
        >>> r.text, r.cut, r.complete
        ('A brown dog is running through the grass', True, True)
    """
    cleaned = clean_generation(generation)
    if not cleaned:
        return ShearResult("", cut=False, complete=False, raw=generation)
    head, bounded = first_clause(cleaned)
    cut = bounded and len(head) < len(cleaned.rstrip(".!? "))
    complete = bounded or not hit_token_cap
    return ShearResult(head, cut=cut, complete=complete and bool(head), raw=generation)


def shear_all(generations: Sequence[str], hit_cap: Sequence[bool] | None = None) -> list[ShearResult]:
    """:func:`shear` over a batch."""
    caps = list(hit_cap) if hit_cap is not None else [False] * len(generations)
    return [shear(g, hit_token_cap=c) for g, c in zip(generations, caps, strict=True)]
