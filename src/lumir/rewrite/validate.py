"""Parsing and checking an LLM's rewrite of a query: one set of rules for the prompted rewriter and the data builder.

A rewrite is refused (and the caller falls back to the original query, counting why) when it is:

- ``empty``: nothing left after parsing;
- ``echo``: the original query again (case, punctuation and spacing ignored);
- ``too_long``: more than ``max_words`` words;
- ``off_topic``: shares no content word with the original (or, with an embedder, its cosine similarity to the
  original is below ``min_similarity``).

The data builder adds one more rule, :func:`copied_share`: a rewrite must not copy the ground truth's own
reference descriptions (the other captions of the target photo), or a rewriter trained on it learns to leak.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "REFUSALS",
    "content_words",
    "copied_share",
    "normalize_text",
    "parse_rewrite",
    "refusal_reason",
]

REFUSALS = ("empty", "echo", "too_long", "off_topic")

_STOP_WORDS = (
    "a an the and or of in on at to with for from by is are was were be being been it its this that these those "
    "there their his her he she they them some two three one his into onto up down out over under near while as "
    "who which what very just than then also"
)
_STOP = frozenset(_STOP_WORDS.split())
_QUOTES = "\"'“”‘’`"


def normalize_text(text: str) -> str:
    """Lower case, punctuation dropped, spaces collapsed: ``"A dog, running."`` -> ``"a dog running"``."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def content_words(text: str) -> set[str]:
    """Lower-cased words of ``text`` that are not stop words (a crude stem: a trailing ``s`` is dropped)."""
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in normalize_text(text).split() if w not in _STOP}


def parse_rewrite(output: str, *, field: str = "Query", fallback: str = "last") -> str:
    """The rewrite inside an LLM answer: the line after the first ``<field>:`` label, else the ``fallback``
    (``"last"`` or ``"first"``) non-empty line, or ``""`` with ``fallback="none"`` (the label was required).

    The first label wins: small models often loop and repeat the format until the token cap cuts the last copy.

    Quotes, a trailing explanation in parentheses and list markers are stripped.

    Example:
        >>> parse_rewrite('Analysis: "dog" is vague.\\nQuery: "A brown dog leaps over a log."')
        'A brown dog leaps over a log.'
        >>> parse_rewrite("1. a red car parked by a lake")
        'a red car parked by a lake'
        >>> parse_rewrite('Analysis: vague.\\nImproved query: "A girl on a swing"', fallback="none")
        'A girl on a swing'
        >>> parse_rewrite('Query: a dog on a log" ranked the correct photo at position 1.')
        'a dog on a log'
        >>> parse_rewrite("Visible details: a swing", fallback="none")
        ''
    """
    text = output.strip()
    # "Query:", "**Query:**", and one qualifying word before it ("Improved query:", "Rewritten query:")
    labels = list(re.finditer(rf"(?im)^\s*(?:\*\*)?(?:[a-z]+[ -])?{re.escape(field)}(?:\*\*)?\s*:(?:\*\*)?\s*", text))
    if labels:
        text = text[labels[0].end() :]
        text = text.split("\n", 1)[0] if text.strip() else ""
    else:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if fallback == "none" or not lines:
            return ""
        text = lines[0] if fallback == "first" else lines[-1]
    text = re.sub(r"^\s*(?:[-*]|\d+[.)])\s+", "", text).strip()
    text = re.sub(r"\s*\([^)]*\)\s*$", "", text).strip()
    # a quoted rewrite ends at its closing quote; an unquoted one at a stray double quote (small models run on
    # into their instructions: 'a dog on a log" ranked the correct photo at position 1.')
    if text[:1] in '"“':
        text = re.split(r'["”]', text[1:], maxsplit=1)[0]
    else:
        text = re.split(r'["”]', text, maxsplit=1)[0]
    return text.strip(_QUOTES + " ;").strip()


def refusal_reason(
    original: str, rewrite: str, *, max_words: int, similarity: float | None = None, min_similarity: float = 0.0
) -> str | None:
    """Why ``rewrite`` is not an acceptable rewrite of ``original`` (one of :data:`REFUSALS`), or None.

    Args:
        max_words: the longest acceptable rewrite, in words.
        similarity: the rewrite's text similarity to the original when the caller measured one (e.g. MiniLM
            cosine); then ``off_topic`` means ``similarity < min_similarity``. Without it, ``off_topic`` means
            no content word in common.

    Example:
        >>> refusal_reason("a dog runs", "A dog runs!", max_words=20)
        'echo'
        >>> refusal_reason("a dog runs", "stock prices fell sharply", max_words=20)
        'off_topic'
        >>> refusal_reason("a dog runs", "a brown dog runs across a lawn", max_words=20) is None
        True
    """
    if not normalize_text(rewrite):
        return "empty"
    if normalize_text(rewrite) == normalize_text(original):
        return "echo"
    if len(rewrite.split()) > max_words:
        return "too_long"
    if similarity is not None:
        if similarity < min_similarity:
            return "off_topic"
    elif content_words(original) and not content_words(original) & content_words(rewrite):
        return "off_topic"
    return None


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams within each clause (split at ``. ; ! ? newline``), so joined sentences add no junction grams."""
    out: set[tuple[str, ...]] = set()
    for clause in re.split(r"[.;!?\n]+", text):
        words = normalize_text(clause).split()
        if words:
            out |= {tuple(words[i : i + n]) for i in range(len(words) - n + 1)} if len(words) >= n else {tuple(words)}
    return out


def copied_share(rewrite: str, query: str, references: Sequence[str], *, n: int = 4) -> float:
    """Share of the rewrite's *new* word ``n``-grams (those not in ``query``) that appear in ``references``.

    1.0 for a rewrite whose every new phrase is lifted from a reference (e.g. the query with a reference caption
    appended); 0.0 for one that adds only its own wording. A rewrite with nothing new scores 0.0. The data
    builder refuses rewrites at or above its ``max_copied_share`` (default 0.5).

    Example:
        >>> refs = ["a brown dog runs on the grass", "a puppy outside"]
        >>> copied_share("a brown dog runs on the grass", "a dog runs", refs)
        1.0
        >>> copied_share("a dog runs; a brown dog runs on the grass", "a dog runs", refs)
        1.0
        >>> round(copied_share("a brown dog runs on grass", "a dog runs", refs), 2)
        0.67
        >>> copied_share("a dog that is brown and running", "a dog runs", refs)
        0.0
    """
    own = _ngrams(query, n)
    new = _ngrams(rewrite, n) - own
    if not new or not references:
        return 0.0
    ref_grams = set().union(*(_ngrams(r, n) for r in references))
    return len(new & ref_grams) / len(new)
