"""Action knowledge from captions with an LLM (action-aware prompt tuning, §3.2 and Figure 4).

Two prompts with in-context examples, then a format check with bounded retries:

1. **Q1** parses a caption T into action triplets ``R_t = LLM([Q1, T])`` (Eq. 1): ``(subject, action, object)``,
   with attribute triplets such as ``(girl, is, small)`` allowed;
2. **Q2** turns each triplet, with its caption as context, into an action-state description ``D = LLM(Q2, R_t)``
   (Eq. 3), e.g. "She focuses on the laptop screen, types on the keyboard, and maintains a stable posture".

The paper's prompts were written with GPT-3.5 and are not printed; these are ours, in the same shape (instruction,
in-context examples, the input). Greedy decoding first; an answer that fails the format check is asked again with
seeded sampling (temperature 0.7, seed = attempt), at most ``max_retries`` times. Every call goes through the
ChatModel (wrap it in :class:`~lumir.models.chat.cache.CachedChatModel` so reruns cost nothing), and results are
appended to a jsonl file one caption per line, so an interrupted job resumes where it stopped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lumir.errors import DataFormatError
from lumir.protocols import ChatModel
from lumir.types import Item

__all__ = [
    "Q1_EXAMPLES",
    "Q2_EXAMPLES",
    "ActionKnowledge",
    "KnowledgeExtractor",
    "check_state",
    "copies_example_words",
    "grounded",
    "parse_triplets",
    "q1_prompt",
    "q2_prompt",
]

Triplet = tuple[str, str, str]

Q1_INSTRUCTION = (
    "Extract the action triplets of the caption. Write one triplet per line as (subject, action, object). "
    "Attributes are triplets too, like (girl, is, small). Use words from the caption. Write nothing else."
)
Q1_EXAMPLES: tuple[tuple[str, tuple[Triplet, ...]], ...] = (
    (
        "A small girl in a pink dress is climbing a wooden fence.",
        (("girl", "is", "small"), ("girl", "wears", "pink dress"), ("girl", "climbing", "wooden fence")),
    ),
    (
        "Two dogs run through the snow chasing a red ball.",
        (("dogs", "run through", "snow"), ("dogs", "chasing", "red ball")),
    ),
    (
        "A man sits on a bench reading a newspaper.",
        (("man", "sits on", "bench"), ("man", "reading", "newspaper")),
    ),
)
"""Q1's in-context examples: (caption, expected triplets)."""

Q2_INSTRUCTION = (
    "Describe in one sentence the state of the subject caused by the action in the triplet, using the caption as "
    "context. Write only that sentence."
)
Q2_EXAMPLES: tuple[tuple[str, Triplet, str], ...] = (
    (
        "A girl is studying with a laptop at the table.",
        ("girl", "study", "laptop"),
        "She focuses on the laptop screen, types on the keyboard, and maintains a stable posture.",
    ),
    (
        "Two dogs run through the snow chasing a red ball.",
        ("dogs", "chasing", "red ball"),
        "The dogs sprint with their legs stretched out, eyes fixed on the rolling ball, kicking up snow.",
    ),
)
"""Q2's in-context examples: (caption, triplet, expected action-state description)."""

_EXAMPLE_TEXTS = {x.lower().rstrip(". ") for c, _, d in Q2_EXAMPLES for x in (c, d)} | {
    c.lower().rstrip(". ") for c, _ in Q1_EXAMPLES
}
_EXAMPLE_TRIPLETS = {tuple(x.lower() for x in t) for _, ts in Q1_EXAMPLES for t in ts} | {
    tuple(x.lower() for x in t) for _, t, _ in Q2_EXAMPLES
}
_TRIPLET_RE = re.compile(r"\(\s*([^(),\n]+?)\s*,\s*([^(),\n]+?)\s*,\s*([^(),\n]+?)\s*\)")


def _fmt(t: Triplet) -> str:
    return f"({t[0]}, {t[1]}, {t[2]})"


def q1_prompt(caption: str) -> str:
    """Q1 with its in-context examples, for one caption."""
    shots = "\n\n".join(f"Caption: {c}\nTriplets:\n" + "\n".join(_fmt(t) for t in ts) for c, ts in Q1_EXAMPLES)
    return f"{Q1_INSTRUCTION}\n\n{shots}\n\nCaption: {caption}\nTriplets:"


def q2_prompt(caption: str, triplet: Triplet) -> str:
    """Q2 with its in-context examples, for one triplet of one caption."""
    shots = "\n\n".join(f"Caption: {c}\nTriplet: {_fmt(t)}\nState: {d}" for c, t, d in Q2_EXAMPLES)
    return f"{Q2_INSTRUCTION}\n\n{shots}\n\nCaption: {caption}\nTriplet: {_fmt(triplet)}\nState:"


# function words never make a triplet "grounded" or a state "about" it: "(the lady, ...)" and "A guard guards the box"
# share only "the"
_FUNCTION_WORDS = frozenset(
    "the and are for with from into onto was were has have its his her their this that these those who while".split()  # noqa: SIM905
)


def _stems(text: str) -> set[str]:
    return {w[:4] for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 3 and w not in _FUNCTION_WORDS}


_EXAMPLE_CONTENT = {
    w[:4]
    for _, _, d in Q2_EXAMPLES
    for w in re.findall(r"[a-z]+", d.lower())
    if len(w) >= 4 and w not in {"with", "their", "from", "that", "this", "into", "while", "through"}
} | {
    w[:4]
    for c, _, _ in Q2_EXAMPLES
    for w in re.findall(r"[a-z]+", c.lower())
    if len(w) >= 4 and w not in {"with", "through"}
}


def copies_example_words(state: str, context: str, *, limit: int = 3) -> bool:
    """Whether ``state`` holds ``limit`` or more content words of Q2's in-context examples that ``context`` (the
    caption and triplet) lacks: "... studying with a laptop", "... maintaining a stable posture".

    Example:
        >>> copies_example_words("The boy runs, maintaining a stable posture.", "A boy runs (boy, runs, field)")
        True
        >>> copies_example_words("The dog's eyes are fixed on the ball.", "A dog and a ball (dog, chases, ball)")
        False
    """
    return len((_stems(state) & _EXAMPLE_CONTENT) - _stems(context)) >= limit


def grounded(triplet: Triplet, caption: str) -> bool:
    """Whether the triplet's subject or object shares a word (first 4 letters) with the caption.

    Example:
        >>> grounded(("dogs", "chase", "ball"), "Two dogs run"), grounded(("man", "sits on", "bench"), "A cat sleeps")
        (True, False)
    """
    words = _stems(caption)
    return bool((_stems(triplet[0]) | _stems(triplet[2])) & words)


def parse_triplets(
    text: str, *, caption: str | None = None, max_words: int = 5, max_triplets: int = 8
) -> tuple[list[Triplet], str | None]:
    """Q1's format check: the ``(subject, action, object)`` triplets of an answer, or the reason it fails.

    With ``caption``, triplets not grounded in it (:func:`grounded`), and in-context example triplets whose words
    are not all in it (e.g. ``(girl, is, small)`` for "A bunch of girls ..."), are dropped; an answer left with none
    fails.

    Example:
        >>> parse_triplets("(man, rides, horse)\\n(horse, is, brown)")
        ([('man', 'rides', 'horse'), ('horse', 'is', 'brown')], None)
        >>> parse_triplets("A man rides a horse.")[1]
        'no (subject, action, object) triplet found'
    """
    found: list[Triplet] = []
    for m in _TRIPLET_RE.finditer(text or ""):
        t = (m.group(1).strip(" '\""), m.group(2).strip(" '\""), m.group(3).strip(" '\""))
        if not all(t):
            continue
        if any(len(part.split()) > max_words for part in t):
            return [], f"triplet {_fmt(t)} has an element longer than {max_words} words"
        if t not in found:
            found.append(t)
    if not found:
        return [], "no (subject, action, object) triplet found"
    if caption is not None:
        words = _stems(caption)
        found = [
            t
            for t in found
            if grounded(t, caption)
            and (tuple(x.lower() for x in t) not in _EXAMPLE_TRIPLETS or _stems(" ".join(t)) <= words)
        ]
        if not found:
            return [], "no triplet is grounded in the caption (copied examples?)"
    return found[:max_triplets], None


_PRONOUNS = frozenset("he she they it his her their its him them we".split())  # noqa: SIM905
_LABEL_RE = re.compile(r"^[A-Za-z][A-Za-z ]{0,24}:\s")
_META_RE = re.compile(
    r"\b(?:sentence|sorry|rewrit\w*|edit\w*|describe|provide|clarif\w*|i'm|i am|as an ai|hashtag)\b", re.IGNORECASE
)


def check_state(
    text: str,
    *,
    triplet: Triplet | None = None,
    caption: str | None = None,
    min_words: int = 4,
    max_words: int = 60,
) -> tuple[str, str | None]:
    """Q2's format check: one descriptive sentence (its first line), or the reason it fails.

    The sentence must not echo the prompt, talk about the task ("Sorry, ...", "Corrections: the sentence ..."),
    start with a ``Label:``, or copy an in-context example; with ``triplet``, it must be about that triplet:
    share a word (first 4 letters) with its subject, action or object, or open with a pronoun ("She leans ...");
    with ``caption`` too, it must not borrow the examples' content words (:func:`copies_example_words`).

    Example:
        >>> check_state("He grips the reins and leans forward.\\nCaption: ...")
        ('He grips the reins and leans forward.', None)
        >>> check_state("A cat is eating a mouse.", triplet=("man", "pointing", "camera"))[1]
        'description is not about the triplet (no word of its subject, action or object)'
    """
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    line = re.sub(r"^(?:state|answer)\s*:\s*", "", line, flags=re.IGNORECASE).strip().strip("\"'")
    words = line.split()
    if len(words) < min_words:
        return "", f"description has {len(words)} words (needs at least {min_words})"
    if len(words) > max_words:
        return "", f"description has {len(words)} words (at most {max_words})"
    low = line.lower()
    if _TRIPLET_RE.search(line) or "triplet" in low or "caption" in low or "state of the subject" in low:
        return "", "description repeats the prompt instead of describing"
    if line.endswith(":"):
        return "", "description is an unfinished lead-in"
    if _LABEL_RE.match(line):
        return "", "description starts with a label instead of describing"
    if _META_RE.search(line):
        return "", "description talks about the task instead of describing"
    if low.rstrip(". ") in _EXAMPLE_TEXTS:
        return "", "description copies an in-context example"
    if triplet is not None:
        first = re.sub(r"[^a-z]", "", words[0].lower())
        if first not in _PRONOUNS and not (_stems(" ".join(triplet)) & _stems(line)):
            return "", "description is not about the triplet (no word of its subject, action or object)"
        if caption is not None and copies_example_words(line, f"{caption} {' '.join(triplet)}"):
            return "", "description borrows words of an in-context example"
    return line, None


@dataclass
class ActionKnowledge:
    """The knowledge of one caption, as one jsonl line.

    Attributes:
        id, caption: the input. triplets: Q1's parsed triplets. states: one Q2 description per triplet ("" when
        that triplet's description never passed the check). valid: Q1 passed and every state passed.
        attempts: model calls made (first tries plus retries). errors: the format-check failures seen.
        model: the ChatModel's spec, for provenance.
    """

    id: str
    caption: str
    triplets: list[Triplet] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    valid: bool = False
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["triplets"] = [list(t) for t in self.triplets]
        return json.dumps(data, ensure_ascii=False)


def _read_seen(path: Path) -> set[str]:
    """Caption ids already in a knowledge jsonl."""
    seen: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            seen.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataFormatError(f"not a knowledge line ({err}); move the file away", path=path, line=n) from err
    return seen


class KnowledgeExtractor:
    """Q1 -> triplets -> Q2 -> states, with format checks and bounded retries.

    Args:
        chat: any ChatModel (text is enough).
        max_retries: extra sampled attempts per prompt after a failed greedy answer.
        max_new_tokens: generation caps for Q1 and Q2.
        max_triplets: at most this many triplets are kept (and described) per caption.
    """

    def __init__(
        self,
        llm: ChatModel | str | Mapping[str, Any],
        *,
        max_retries: int = 2,
        max_new_tokens: Sequence[int] = (64, 48),
        max_triplets: int = 4,
        llm_cache: str | Path | None = None,
    ) -> None:
        from lumir.models.chat.cache import resolve_chat_model

        if len(max_new_tokens) != 2:
            raise ValueError(f"max_new_tokens is (Q1 cap, Q2 cap), got {max_new_tokens!r}")
        self.chat = resolve_chat_model(llm, llm_cache)
        self.max_retries = max_retries
        self.max_new_tokens = (int(max_new_tokens[0]), int(max_new_tokens[1]))
        self.max_triplets = max_triplets

    def spec(self) -> dict[str, Any]:
        """Everything that rebuilds this extractor through :data:`lumir.registry.AUGMENTERS`, its LLM included."""
        return {
            "type": "knowledge",
            "llm": self.chat.spec(),
            "max_retries": self.max_retries,
            "max_new_tokens": list(self.max_new_tokens),
            "max_triplets": self.max_triplets,
        }

    def augment(self, items: Sequence[Item]) -> list[Item]:
        """The caption items with their knowledge in ``meta["knowledge"]`` (``triplets``, ``states``, ``valid``,
        ``attempts``, ``errors``, ``model``); items without text pass unchanged. :meth:`run` does it resumably."""
        texts = [(it.id, it.text) for it in items if it.text]
        found = {k.id: k for k in self.extract(texts)}
        out = []
        for it in items:
            k = found.get(it.id)
            if k is None:
                out.append(it)
                continue
            record = {key: value for key, value in asdict(k).items() if key not in ("id", "caption")}
            record["triplets"] = [list(t) for t in k.triplets]
            out.append(Item(it.id, text=it.text, image=it.image, meta={**it.meta, "knowledge": record}))
        return out

    def _ask(self, prompts: Sequence[str], max_new_tokens: int, attempt: int) -> list[str]:
        convs = [[{"role": "user", "content": p}] for p in prompts]
        gen: dict[str, Any] = {"max_new_tokens": max_new_tokens}
        if attempt > 0:
            gen.update(temperature=0.7, seed=attempt)
        return self.chat.generate(convs, **gen)

    def extract(self, items: Sequence[tuple[str, str]]) -> list[ActionKnowledge]:
        """Knowledge for ``(id, caption)`` pairs (batched per step across captions)."""
        model = self.chat.spec()
        out = [ActionKnowledge(i, c, model=model) for i, c in items]
        pending = list(range(len(out)))
        for attempt in range(self.max_retries + 1):  # Q1
            if not pending:
                break
            answers = self._ask([q1_prompt(out[i].caption) for i in pending], self.max_new_tokens[0], attempt)
            still = []
            for i, answer in zip(pending, answers, strict=True):
                out[i].attempts += 1
                triplets, error = parse_triplets(answer, caption=out[i].caption)
                if error is None:
                    out[i].triplets = triplets[: self.max_triplets]
                else:
                    out[i].errors.append(f"Q1: {error}")
                    still.append(i)
            pending = still
        jobs = [(i, j) for i, k in enumerate(out) for j in range(len(k.triplets))]
        for k in out:
            k.states = [""] * len(k.triplets)
        for attempt in range(self.max_retries + 1):  # Q2
            if not jobs:
                break
            prompts = [q2_prompt(out[i].caption, out[i].triplets[j]) for i, j in jobs]
            answers = self._ask(prompts, self.max_new_tokens[1], attempt)
            retry = []
            for (i, j), answer in zip(jobs, answers, strict=True):
                out[i].attempts += 1
                state, error = check_state(answer, triplet=out[i].triplets[j], caption=out[i].caption)
                if error is None:
                    out[i].states[j] = state
                else:
                    out[i].errors.append(f"Q2 {_fmt(out[i].triplets[j])}: {error}")
                    retry.append((i, j))
            jobs = retry
        for k in out:
            k.valid = bool(k.triplets) and all(k.states)
        return out

    def run(
        self, items: Iterable[tuple[str, str]], output: str | Path, *, batch_size: int = 16, progress: bool = True
    ) -> dict[str, int]:
        """Extract knowledge for every caption not yet in ``output`` (jsonl, appended per batch; resumable).

        Returns counts: ``done`` (this run), ``skipped`` (already in the file), ``valid`` (this run).

        Raises:
            OutputLockedError: another job is writing ``output`` (its ``<output>.lock`` is held); nothing is written.
        """
        from lumir.io.lock import output_lock
        from lumir.progress import progress as progress_bar

        path = Path(output)
        all_items = list(items)
        with output_lock(path), path.open("a", encoding="utf-8") as fh:
            seen = _read_seen(path)  # read under the lock: another job's lines are all there
            todo = [(i, c) for i, c in all_items if i not in seen]
            counts = {"done": 0, "skipped": len(all_items) - len(todo), "valid": 0}
            with progress_bar(total=len(todo), desc="action knowledge", unit="caption", enabled=progress) as bar:
                for start in range(0, len(todo), batch_size):
                    for k in self.extract(todo[start : start + batch_size]):
                        fh.write(k.to_json() + "\n")
                        counts["done"] += 1
                        counts["valid"] += int(k.valid)
                    fh.flush()
                    bar.update(min(batch_size, len(todo) - start))
        return counts
