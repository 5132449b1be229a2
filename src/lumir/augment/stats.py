"""Caption statistics behind MLLM-augmented captions Figures 3–4: frequent nouns and lengths per caption source.

The paper compares, per captioning model and for the raw captions, the most frequent nouns (Fig. 3: each MLLM
has its own vocabulary) and the caption lengths (Fig. 4a: ~90 tokens for MiniGPT-4/LLaVA-1.5 against 15 for raw
CC3M captions, which motivates shearing). :func:`caption_statistics` computes both for named groups of captions,
:func:`write_caption_report` writes ``stats.json``, ``report.md``, ``nouns.png`` and ``lengths.png``.

Nouns are found with a lexicon heuristic, not a tagger (no tagger model is installable offline): a word counts as
a noun when `lemminflect <https://github.com/bjascob/LemmInflect>`_'s lexicon lists it as one, it is not a
closed-class word (determiners, pronouns, prepositions, numbers, ...), and its neighbours do not force another
reading: a word that can be an adjective counts only after a determiner and before a non-noun ("the red" yes,
"a red shirt" and "a black and white dog" no); one that can be a verb does not count after "is/are/to/...", as
an ``-ing`` form without a determiner or adjective before it ("a dog running"), or right after a noun when it
agrees with that noun or takes a determiner ("a man climbs", "children play", "people make a pose"). Words the
lexicon does not know count as nouns unless they look like adverbs or participles (captions' unknown words are
mostly compound nouns: "skateboarder"). Nouns are counted by lemma ("dogs" → "dog"). It is a heuristic, tested
on hand-tagged captions, not a tagger, and it inherits the lexicon's gaps ("log" is listed as a verb only).
Install ``lumir[augment]``.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lumir._deps import require
from lumir.config import atomic_path, atomic_write_text, versions
from lumir.errors import DataFormatError

__all__ = [
    "CaptionStats",
    "caption_statistics",
    "extract_nouns",
    "groups_from_records",
    "plot_lengths",
    "plot_nouns",
    "shearing_summary",
    "write_caption_report",
]

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_DETERMINERS = frozenset(
    "a an the this that these those his her its their my your our some another each every one".split()  # noqa: SIM905
)
_CLOSED_CLASS = _DETERMINERS | frozenset(
    """any all both either neither no other such i me mine you yours he him she hers it we us ours they them theirs
    ones who whom whose which what where when why how there here
    is are was were be been being am do does did doing done have has had having will would shall should can could
    may might must
    and or but nor so yet if then than because while as of at by for from in into on onto off out over under up
    down to with without within through across along around about above below behind beside besides between near
    next toward towards against among upon past via like
    not very too also just only still even more most much many few several lot lots
    two three four five six seven eight nine ten first second third
    underneath front top side middle left right back something someone somebody anything everything nothing""".split()  # noqa: SIM905
)
_VERB_CONTEXT = frozenset("is are was were be been being am to will can could would does do did 's 're".split())  # noqa: SIM905


def _lemmas(word: str) -> dict[str, tuple[str, ...]]:
    lemminflect = require("lemminflect", extra="augment")
    return dict(lemminflect.getAllLemmas(word))


def _noun_lemma(words: Sequence[str], i: int, prev_lemma: str | None) -> str | None:
    """The noun lemma of ``words[i]`` if the lexicon and its neighbours make it a noun, else None.

    ``prev_lemma`` is the noun lemma of ``words[i - 1]`` when that word was taken as a noun.
    """
    word = words[i]
    if word in _CLOSED_CLASS or len(word) < 2:
        return None
    lemmas = _lemmas(word)
    if not lemmas:  # not in the lexicon: in captions mostly compound nouns ("skateboarder", "frisbee")
        if len(word) < 3 or word.endswith(("ly", "ed", "ing")):
            return None
        return word[:-1] if word.endswith("s") and not word.endswith("ss") else word
    if "NOUN" not in lemmas:
        return None
    prev = words[i - 1] if i else ""
    nxt = words[i + 1] if i + 1 < len(words) else ""
    next_noun = bool(nxt) and nxt not in _CLOSED_CLASS and "NOUN" in _lemmas(nxt)
    if "ADJ" in lemmas and (next_noun or nxt in ("and", "or") or prev not in _DETERMINERS):  # "a red shirt",
        # "is small", "a black and white dog"
        return None
    if "VERB" in lemmas:
        if prev in _VERB_CONTEXT:  # "is running", "to swim"
            return None
        if word.endswith("ing"):  # "a dog running", but "a building", "a tall building"
            prev_adj = bool(prev) and "ADJ" in _lemmas(prev)
            if prev not in _DETERMINERS and not prev_adj:
                return None
        if prev_lemma is not None:  # right after a noun: a verb when it agrees with it or takes an object
            singular = prev_lemma == prev
            if (singular and word.endswith("s")) or (not singular and word in lemmas["VERB"]) or nxt in _DETERMINERS:
                return None  # "a man climbs", "children play", "people make a ..."; not "a rock wall"
    return lemmas["NOUN"][0]


def extract_nouns(text: str) -> list[str]:
    """Noun lemmas of a caption, in order (the lexicon heuristic of the module docstring).

    Example:
        >>> extract_nouns("Two dogs are running through the snow .")
        ['dog', 'snow']
    """
    words = _WORD.findall(text.lower())
    nouns: list[str] = []
    lemma: str | None = None
    for i in range(len(words)):
        lemma = _noun_lemma(words, i, lemma)
        if lemma is not None:
            nouns.append(lemma)
    return nouns


def _word_count(text: str) -> int:
    return len(text.split())


@dataclass
class CaptionStats:
    """Statistics of one group of captions (one captioning model, or the raw captions)."""

    name: str
    captions: int
    mean_length: float
    median_length: float
    p90_length: float
    length_histogram: dict[int, int]
    distinct_nouns: int
    top_nouns: list[tuple[str, int]] = field(default_factory=list)
    length_unit: str = "words"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (histogram keys become strings)."""
        out = asdict(self)
        out["length_histogram"] = {str(k): v for k, v in sorted(self.length_histogram.items())}
        out["top_nouns"] = [list(pair) for pair in self.top_nouns]
        return out


def caption_statistics(
    groups: Mapping[str, Sequence[str]],
    *,
    top: int = 20,
    length: Callable[[str], int] | None = None,
    length_unit: str = "words",
) -> dict[str, CaptionStats]:
    """Length distribution and ``top`` most frequent nouns of each named group of captions.

    Args:
        groups: name → captions, e.g. ``{"raw": [...], "smollm2": [...]}``.
        top: how many nouns to keep per group.
        length: caption length function (default: whitespace words); pass a tokenizer count for tokens.
        length_unit: what ``length`` counts, for labels.

    Raises:
        ValueError: a group is empty.
    """
    count = length or _word_count
    out: dict[str, CaptionStats] = {}
    for name, texts in groups.items():
        if not texts:
            raise ValueError(f"caption group {name!r} is empty")
        lengths = [count(t) for t in texts]
        nouns: Counter[str] = Counter()
        for t in texts:
            nouns.update(extract_nouns(t))
        deciles = statistics.quantiles(lengths, n=10) if len(lengths) > 1 else [float(lengths[0])] * 9
        out[name] = CaptionStats(
            name=name,
            captions=len(texts),
            mean_length=round(statistics.fmean(lengths), 2),
            median_length=float(statistics.median(lengths)),
            p90_length=round(deciles[-1], 2),
            length_histogram=dict(sorted(Counter(lengths).items())),
            distinct_nouns=len(nouns),
            top_nouns=nouns.most_common(top),
            length_unit=length_unit,
        )
    return out


def groups_from_records(
    records: Iterable[Mapping[str, Any]], *, field_name: str = "text", path: str | Path | None = None
) -> dict[str, list[str]]:
    """Captions of augmentation records (:mod:`lumir.augment.caption` jsonl) grouped by ``"<model> (<kind>)"``.

    ``field_name="text"`` takes the sheared captions, ``"raw"`` the generations before shearing. Empty texts are
    skipped.

    Raises:
        DataFormatError: a record lacks ``model`` or the field (naming ``path`` and the record's line).
    """
    groups: dict[str, list[str]] = {}
    for n, rec in enumerate(records, start=1):
        if "model" not in rec or field_name not in rec:
            raise DataFormatError(f"caption record lacks 'model' or {field_name!r}", path=path, line=n)
        text = str(rec[field_name] or "").strip()
        if text:
            groups.setdefault(f"{rec['model']} ({rec.get('kind', '?')})", []).append(text)
    return groups


def shearing_summary(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per ``"<model> (<kind>)"``: how shearing treated the generations (shares of records, mean word counts).

    ``cut``: shearing dropped a tail; ``incomplete``: the T cap hit mid-clause or nothing was left; ``empty``: no
    text after shearing; ``usable``: non-empty and complete (what training uses by default).
    """
    acc: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        acc.setdefault(f"{rec.get('model')} ({rec.get('kind', '?')})", []).append(rec)
    out: dict[str, dict[str, float]] = {}
    for name, recs in acc.items():
        n = len(recs)
        empty = [not str(r.get("text") or "").strip() for r in recs]
        out[name] = {
            "records": n,
            "cut_share": round(sum(bool(r.get("cut")) for r in recs) / n, 4),
            "incomplete_share": round(sum(not r.get("complete", False) for r in recs) / n, 4),
            "empty_share": round(sum(empty) / n, 4),
            "usable_share": round(
                sum(bool(r.get("complete")) and not e for r, e in zip(recs, empty, strict=True)) / n, 4
            ),
            "mean_words_generated": round(statistics.fmean(_word_count(str(r.get("raw") or "")) for r in recs), 2),
            "mean_words_sheared": round(statistics.fmean(_word_count(str(r.get("text") or "")) for r in recs), 2),
        }
    return out


def _pyplot() -> Any:
    matplotlib = require("matplotlib", extra="augment")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_nouns(stats: Mapping[str, CaptionStats], path: str | Path, *, top: int = 15) -> Path:
    """One horizontal bar chart of the most frequent nouns per group (Figure 3), saved as PNG."""
    plt = _pyplot()
    n = len(stats)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 0.28 * top + 1.2), squeeze=False)
    for ax, s in zip(axes[0], stats.values(), strict=True):
        pairs = s.top_nouns[:top][::-1]
        total = sum(s.length_histogram.values()) or 1
        ax.barh([w for w, _ in pairs], [c / total * 100 for _, c in pairs], color="#4c72b0")
        ax.set_title(f"{s.name}\n{s.captions:,} captions", fontsize=9)
        ax.set_xlabel("occurrences per 100 captions", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.suptitle("Most frequent nouns per caption source", fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_lengths(stats: Mapping[str, CaptionStats], path: str | Path) -> Path:
    """Caption-length distributions per group (Figure 4a), as overlaid step histograms with the means marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for s in stats.values():
        xs = sorted(s.length_histogram)
        total = sum(s.length_histogram.values())
        line = ax.step(xs, [s.length_histogram[x] / total * 100 for x in xs], where="mid", label=s.name)[0]
        ax.axvline(s.mean_length, color=line.get_color(), linestyle=":", linewidth=1)
    unit = next(iter(stats.values())).length_unit if stats else "words"
    ax.set_xlabel(f"caption length ({unit}); dotted: mean")
    ax.set_ylabel("% of captions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _markdown(
    stats: Mapping[str, CaptionStats], reference: str | None, top: int, shearing: Mapping[str, Mapping[str, float]]
) -> str:
    ref = stats.get(reference) if reference else None
    ref_nouns = {w for w, _ in ref.top_nouns[:top]} if ref else set()
    unit = next(iter(stats.values())).length_unit if stats else "words"
    lines = [
        "# Caption statistics",
        "",
        f"| source | captions | mean length ({unit}) | median | p90 | distinct nouns |"
        + (f" top-{top} nouns shared with {reference} |" if ref else ""),
        "|:---|---:|---:|---:|---:|---:|" + ("---:|" if ref else ""),
    ]
    for s in stats.values():
        shared = len(ref_nouns & {w for w, _ in s.top_nouns[:top]})
        lines.append(
            f"| {s.name} | {s.captions:,} | {s.mean_length} | {s.median_length:g} | {s.p90_length:g} | "
            f"{s.distinct_nouns:,} |" + (f" {shared}/{top} |" if ref else "")
        )
    if shearing:
        lines += [
            "",
            "| source | records | cut by shearing | incomplete | empty | usable | words generated | words kept |",
            "|:---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, sh in shearing.items():
            lines.append(
                f"| {name} | {int(sh['records']):,} | {sh['cut_share']:.1%} | {sh['incomplete_share']:.1%} | "
                f"{sh['empty_share']:.1%} | {sh['usable_share']:.1%} | {sh['mean_words_generated']} | "
                f"{sh['mean_words_sheared']} |"
            )
    lines += ["", f"Most frequent nouns (count), top {top}:", ""]
    for s in stats.values():
        lines.append(f"- **{s.name}**: " + ", ".join(f"{w} ({c})" for w, c in s.top_nouns[:top]))
    lines += ["", "![nouns](nouns.png)", "", "![lengths](lengths.png)", ""]
    return "\n".join(lines)


def write_caption_report(
    groups: Mapping[str, Sequence[str]],
    output_dir: str | Path,
    *,
    top: int = 20,
    reference: str | None = "raw",
    length: Callable[[str], int] | None = None,
    length_unit: str = "words",
    source: Mapping[str, Any] | None = None,
    records: Iterable[Mapping[str, Any]] = (),
) -> dict[str, CaptionStats]:
    """Compute :func:`caption_statistics` and write ``stats.json``, ``report.md``, ``nouns.png``, ``lengths.png``.

    ``reference`` names the group the others' top nouns are compared with (skipped when absent); ``source``
    (e.g. the input files) is recorded in ``stats.json`` with the versions; ``records`` (augmentation records) add
    a :func:`shearing_summary` table.
    """
    out = Path(output_dir)
    stats = caption_statistics(groups, top=top, length=length, length_unit=length_unit)
    plot_nouns(stats, out / "nouns.png", top=min(top, 15))
    plot_lengths(stats, out / "lengths.png")
    reference = reference if reference in stats else None
    shearing = shearing_summary(records)
    atomic_write_text(out / "report.md", _markdown(stats, reference, top, shearing))
    payload = {
        "format": "lumir-caption-stats/1",
        "noun_finder": "lemminflect lexicon + closed-class/verb-context rules",
        "source": dict(source or {}),
        "groups": {k: v.to_dict() for k, v in stats.items()},
        "shearing": shearing,
        "versions": versions(),
    }
    atomic_write_text(out / "stats.json", json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    return stats
