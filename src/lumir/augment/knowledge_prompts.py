"""Prompts, in-context examples and format checks of the action-knowledge extractor (:mod:`lumir.augment.knowledge`).

Prompts are data: Q1 (caption -> triplets), Q2 (caption + triplet -> action-state sentence) and the joint prompt
(caption -> ``(subject, action, object) | state sentence`` lines, one call per caption) are built here from an
instruction and in-context examples, and checked by golden tests. The format checks (:func:`parse_triplets`,
:func:`check_state`) are shared by every mode; their example-copy tests cover the examples of all three prompts.
"""

from __future__ import annotations

import re

__all__ = [
    "JOINT_CONTENT",
    "JOINT_EXAMPLES",
    "Q1_EXAMPLES",
    "Q2_EXAMPLES",
    "check_state",
    "copies_example_words",
    "grounded",
    "joint_prompt",
    "parse_joint",
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

JOINT_INSTRUCTION = (
    "Extract the action triplets of the caption and describe the state of the subject caused by each action. "
    "Write one line per triplet as (subject, action, object) | one sentence describing that state. "
    "Attributes are triplets too, like (girl, is, small). Use words from the caption in the triplets. "
    "Write nothing else."
)
JOINT_EXAMPLES: tuple[tuple[str, tuple[tuple[Triplet, str], ...]], ...] = (
    (
        "A small girl in a pink dress is climbing a wooden fence.",
        (
            (("girl", "climbing", "wooden fence"), "She grips the top rail with both hands and lifts one foot up."),
            (("girl", "wears", "pink dress"), "Her pink dress swings around her knees as she stretches upward."),
            (("girl", "is", "small"), "She reaches up on her toes, her short arms barely spanning the boards."),
        ),
    ),
    (
        "Two dogs run through the snow chasing a red ball.",
        (
            (
                ("dogs", "chasing", "red ball"),
                "The dogs sprint with their legs stretched out, eyes fixed on the rolling ball, kicking up snow.",
            ),
            (("dogs", "run through", "snow"), "Their paws sink into the soft snow and their fur is dusted white."),
        ),
    ),
    (
        "A man sits on a bench reading a newspaper.",
        (
            (("man", "reading", "newspaper"), "He holds the open pages with both hands, head bowed over the print."),
            (("man", "sits on", "bench"), "He leans back against the slats, legs relaxed, staying still."),
        ),
    ),
)
"""The joint prompt's in-context examples: (caption, ((triplet, expected action-state description), ...)); the
captions are Q1's, the state of ``(dogs, chasing, red ball)`` is Q2's."""

_EXAMPLE_TEXTS = (
    {x.lower().rstrip(". ") for c, _, d in Q2_EXAMPLES for x in (c, d)}
    | {c.lower().rstrip(". ") for c, _ in Q1_EXAMPLES}
    | {d.lower().rstrip(". ") for _, pairs in JOINT_EXAMPLES for _, d in pairs}
)
_EXAMPLE_TRIPLETS = (
    {tuple(x.lower() for x in t) for _, ts in Q1_EXAMPLES for t in ts}
    | {tuple(x.lower() for x in t) for _, t, _ in Q2_EXAMPLES}
    | {tuple(x.lower() for x in t) for _, pairs in JOINT_EXAMPLES for t, _ in pairs}
)
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


def joint_prompt(caption: str) -> str:
    """The joint prompt (Q1 and Q2 in one call) with its in-context examples, for one caption."""
    shots = "\n\n".join(
        f"Caption: {c}\nKnowledge:\n" + "\n".join(f"{_fmt(t)} | {d}" for t, d in pairs) for c, pairs in JOINT_EXAMPLES
    )
    return f"{JOINT_INSTRUCTION}\n\n{shots}\n\nCaption: {caption}\nKnowledge:"


# function words never make a triplet "grounded" or a state "about" it: "(the lady, ...)" and "A guard guards the box"
# share only "the"
_FUNCTION_WORDS = frozenset(
    "the and are for with from into onto was were has have its his her their this that these those who while".split()  # noqa: SIM905
)


def _stems(text: str) -> set[str]:
    return {w[:4] for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 3 and w not in _FUNCTION_WORDS}


_STATE_STOP = {"with", "their", "from", "that", "this", "into", "while", "through"}


def _content(states: list[str], captions: list[str]) -> frozenset[str]:
    return frozenset(
        {w[:4] for d in states for w in re.findall(r"[a-z]+", d.lower()) if len(w) >= 4 and w not in _STATE_STOP}
        | {
            w[:4]
            for c in captions
            for w in re.findall(r"[a-z]+", c.lower())
            if len(w) >= 4 and w not in {"with", "through"}
        }
    )


_EXAMPLE_CONTENT = _content([d for _, _, d in Q2_EXAMPLES], [c for c, _, _ in Q2_EXAMPLES])
"""Content words (first 4 letters) of Q2's in-context states and their captions."""
JOINT_CONTENT = _content([d for _, pairs in JOINT_EXAMPLES for _, d in pairs], [c for c, _ in JOINT_EXAMPLES])
"""The same for the joint prompt's examples (its answers are checked against these)."""


def copies_example_words(
    state: str, context: str, *, limit: int = 3, example_words: frozenset[str] | None = None
) -> bool:
    """Whether ``state`` holds ``limit`` or more content words of the in-context examples (Q2's, or
    ``example_words`` such as :data:`JOINT_CONTENT`) that ``context`` (the caption and triplet) lacks: "... studying
    with a laptop", "... maintaining a stable posture".

    Example:
        >>> copies_example_words("The boy runs, maintaining a stable posture.", "A boy runs (boy, runs, field)")
        True
        >>> copies_example_words("The dog's eyes are fixed on the ball.", "A dog and a ball (dog, chases, ball)")
        False
    """
    words = _EXAMPLE_CONTENT if example_words is None else example_words
    return len((_stems(state) & words) - _stems(context)) >= limit


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


def parse_joint(
    text: str, *, caption: str | None = None, max_words: int = 5, max_triplets: int = 8
) -> tuple[list[tuple[Triplet, str]], str | None]:
    """The joint prompt's answer split into ``(triplet, state text)`` pairs, or the reason it fails.

    Each line ``(subject, action, object) | sentence`` gives a triplet and the raw text of its state ("" when the
    line has no ``|`` part); the triplets go through :func:`parse_triplets` (same grounding and example tests), the
    states are left for :func:`check_state`. A triplet named twice keeps its first line.

    Example:
        >>> parse_joint("(dog, catches, frisbee) | It leaps and snaps its jaws shut.\\n(dog, is, brown)")
        ([(('dog', 'catches', 'frisbee'), 'It leaps and snaps its jaws shut.'), (('dog', 'is', 'brown'), '')], None)
    """
    pairs: list[tuple[str, str]] = []
    for line in (text or "").splitlines():
        head, _, state = line.partition("|")
        if _TRIPLET_RE.search(head):
            pairs.append((head, state.strip()))
    triplets, error = parse_triplets(
        "\n".join(h for h, _ in pairs) or text, caption=caption, max_words=max_words, max_triplets=max_triplets
    )
    if error is not None:
        return [], error
    states: dict[Triplet, str] = {}
    for head, state in pairs:
        for t in parse_triplets(head, max_words=max_words)[0]:
            states.setdefault(t, state)
    return [(t, states.get(t, "")) for t in triplets], None


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
    example_words: frozenset[str] | None = None,
) -> tuple[str, str | None]:
    """Q2's format check: one descriptive sentence (its first line), or the reason it fails.

    The sentence must not echo the prompt, talk about the task ("Sorry, ...", "Corrections: the sentence ..."),
    start with a ``Label:``, or copy an in-context example; with ``triplet``, it must be about that triplet:
    share a word (first 4 letters) with its subject, action or object, or open with a pronoun ("She leans ...");
    with ``caption`` too, it must not borrow the examples' content words (:func:`copies_example_words`; the joint
    prompt's answers pass ``example_words=JOINT_CONTENT``).

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
        context = f"{caption} {' '.join(triplet)}"
        if caption is not None and copies_example_words(line, context, example_words=example_words):
            return "", "description borrows words of an in-context example"
    return line, None
