"""LLM-free action knowledge: rule-based triplets and Table 2's hand-crafted triplet prompt.

Table 2 of the paper ablates the action triplet prompt by a hand-crafted template, "A photo capturing a [subject]
performing [action] in relation to [object]." (:func:`handcrafted_prompt`). :func:`rule_triplets` reads triplets off
a caption with a small word-list heuristic (no parser, no model): the subject is the head of the first noun phrase,
each action a verb after it (an ``-ing`` form, a common verb, or an ``-s`` form before an article), with the
prepositions that follow it ("running after", "sits on"), and the object the noun phrase after that; "is" before a
non-verb makes an attribute triplet ("(skier, is, airborne)"), and the modifiers of the subject may be added as
attribute triplets ("(dog, is, black)"). Records carry ``model={"type": "rules"}`` and empty states, so training
can run without an LLM (``KnowledgeExtractor(None, mode="rules")``, ``lumir augment knowledge --mode rules``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["RULES_MODEL", "handcrafted_prompt", "rule_triplets"]

Triplet = tuple[str, str, str]

RULES_MODEL = {"type": "rules"}
"""The provenance of rule-based records (``ActionKnowledge.model``)."""

HANDCRAFTED_TEMPLATE = "A photo capturing a {subject} performing {action} in relation to {object}."
"""Table 2's hand-crafted triplet template (as :data:`lumir.models.action_prompt.HANDCRAFTED_TEMPLATE`)."""


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_DETERMINERS = _set(
    "a an the two three four five six seven eight nine ten some several many his her their its this that these those "
    "another one other each"
)
_PREPOSITIONS = _set(
    "in on at with by near next under over through across along around behind beside into onto from of for to down "
    "up above below toward towards against past inside outside off out after while as between beneath among "
    "front"
)
_GROUPS = _set("group bunch couple pair crowd team family lot line herd pack flock")
_NOT_ING = _set(
    "something nothing anything everything clothing building buildings ceiling morning evening string spring thing "
    "things king ring wing swing sibling pudding railing railings awning awnings bedding wedding lightning"
)
_VERBS = _set(
    "run runs walk walks jump jumps play plays sit sits stand stands ride rides hold holds look looks climb climbs "
    "catch catches throw throws kick kicks swim swims carry carries eat eats drink drinks watch watches wear wears "
    "has have lie lies lay lays pose poses smile smiles chase chases pull pulls push pushes fly flies read reads "
    "leap leaps dive dives race races skate skates ski skis surf surfs splash splashes cross crosses reach reaches "
    "lean leans hug hugs kiss kisses fall falls dance dances sing sings grab grabs bite bites stare stares wait "
    "waits point points talk talks stroll strolls perform performs paddle paddles hike hikes bike bikes dressed "
    "covered seated surrounded"
)
_AUX = _set("is are was were")
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'-]*")


def handcrafted_prompt(triplet: Sequence[str]) -> str:
    """Table 2's hand-crafted prompt for one ``(subject, action, object)`` triplet.

    Example:
        >>> handcrafted_prompt(("dog", "chasing", "ball"))
        'A photo capturing a dog performing chasing in relation to ball.'
    """
    subject, action, obj = triplet
    return HANDCRAFTED_TEMPLATE.format(subject=subject, action=action, object=obj)


def _is_verb(words: list[str], i: int) -> bool:
    w = words[i]
    nxt = words[i + 1] if i + 1 < len(words) else ""
    if w in _AUX or w in _VERBS:
        return True
    if w.endswith("ing") and len(w) >= 5 and w not in _NOT_ING:
        return True
    return w.endswith("s") and not w.endswith(("ss", "us", "is")) and nxt in _DETERMINERS


def _np(words: list[str], i: int, *, limit: int = 3, subject: bool = False) -> tuple[list[str], int]:
    """The noun phrase at ``i`` (determiners skipped; its last ``limit`` words) and the index after it; an object
    ends at "and", a subject only at "and" + article or verb ("a black and white dog")."""
    while i < len(words) and words[i] in _DETERMINERS:
        i += 1
    start = i
    while i < len(words) and words[i] not in _PREPOSITIONS and not (i > start and _is_verb(words, i)):
        if words[i] == "and" and (
            not subject or i + 1 >= len(words) or words[i + 1] in _DETERMINERS or _is_verb(words, i + 1)
        ):
            break
        i += 1
    return [w for w in words[start:i] if w != "and"][-limit:], i


def rule_triplets(caption: str, *, max_triplets: int = 4, attributes: bool = True) -> list[Triplet]:
    """Triplets read off a caption by word rules (see the module docstring); [] when no subject is found.

    Example:
        >>> rule_triplets("A boy wearing a red t-shirt is running through woodland .", attributes=False)
        [('boy', 'wearing', 'red t-shirt'), ('boy', 'running through', 'woodland')]
        >>> rule_triplets("A black dog is running after a white dog in the snow .")
        [('dog', 'running after', 'white dog'), ('dog', 'is', 'black')]
    """
    words = [w.lower() for w in _WORD_RE.findall(caption)]
    head, i = _np(words, 0, limit=4, subject=True)
    while head and head[-1] in _GROUPS and i < len(words) and words[i] == "of":  # "a bunch of girls"
        head, i = _np(words, i + 1, limit=4, subject=True)
    if not head:
        return []
    subject, modifiers = head[-1], head[:-1]
    out: list[Triplet] = []
    fallback: Triplet | None = None
    while i < len(words) and len(out) < max_triplets:
        if words[i] in _PREPOSITIONS and fallback is None and not out:  # "A girl in a white dress ."
            obj, _ = _np(words, i + 1)
            if obj:
                fallback = (subject, words[i], " ".join(obj))
        if not _is_verb(words, i):
            i += 1
            continue
        action = words[i]
        i += 1
        if action in _AUX:
            if i < len(words) and _is_verb(words, i) and words[i] not in _AUX:
                action = words[i]
                i += 1
            else:  # "is airborne": an attribute
                obj, i = _np(words, i, limit=2)
                if obj:
                    out.append((subject, action, " ".join(obj)))
                continue
        for _ in range(2):  # "running after", "sits next to"
            if i < len(words) and words[i] in _PREPOSITIONS:
                action += " " + words[i]
                i += 1
        obj, i = _np(words, i)
        if obj:
            out.append((subject, action, " ".join(obj)))
    if not out and fallback is not None:
        out.append(fallback)
    if attributes:
        out += [(subject, "is", m) for m in modifiers]
    unique: list[Triplet] = []
    for t in out:
        if t not in unique and all(t):
            unique.append(t)
    return unique[:max_triplets]
