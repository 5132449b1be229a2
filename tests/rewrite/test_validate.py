"""parse_rewrite, refusal_reason and copied_share on the edge cases LLM replies produce."""

from __future__ import annotations

import pytest

from lumir.rewrite.validate import REFUSALS, content_words, copied_share, normalize_text, parse_rewrite, refusal_reason


@pytest.mark.parametrize(
    ("output", "kwargs", "expected"),
    [
        ("Query: A dog runs.", {}, "A dog runs."),
        ("**Query:** A dog runs.", {}, "A dog runs."),  # markdown bold label
        ("**Query**: A dog runs.", {}, "A dog runs."),
        ("query:\nA dog running on sand.", {}, "A dog running on sand."),  # rewrite on the line after the label
        ("Query: first one\nQuery: second one", {}, "first one"),  # the first label wins (looping small models)
        ("Analysis: vague.\nQuery: 'A brown dog.' (more visual)", {}, "A brown dog."),
        ("Query:", {}, ""),
        ("  \n\n", {}, ""),
        ("1. a red car\n2. a blue car", {}, "a blue car"),  # no label: the last line by default
        ("1. a red car\n2. a blue car", {"fallback": "first"}, "a red car"),
        ("- “a red car”", {}, "a red car"),
        ("no label here", {"fallback": "none"}, ""),
        ("Rewrite: Two kids splash in water.", {"field": "Rewrite", "fallback": "first"}, "Two kids splash in water."),
        (" Two kids splash.\n\nQuery: x", {"field": "Rewrite", "fallback": "first"}, "Two kids splash."),
    ],
)
def test_parse_rewrite(output: str, kwargs: dict[str, str], expected: str) -> None:
    assert parse_rewrite(output, **kwargs) == expected


def test_refusal_reasons_in_order() -> None:
    assert refusal_reason("a dog runs", "...", max_words=5) == "empty"  # punctuation only
    assert refusal_reason("a dog runs", "", max_words=5) == "empty"
    assert refusal_reason("A dog, runs", "a DOG runs!!", max_words=5) == "echo"
    assert refusal_reason("a dog", "a dog " * 10, max_words=3) == "too_long"  # checked before off-topic
    assert refusal_reason("dog", "one two three four five six", max_words=6) == "off_topic"
    assert refusal_reason("dog", "one two three four five dog", max_words=6) is None  # exactly max_words is fine
    assert refusal_reason("dog", "one two three four five six dog", max_words=6) == "too_long"
    assert set(REFUSALS) == {"empty", "echo", "too_long", "off_topic"}


def test_off_topic_by_content_words_or_similarity() -> None:
    assert refusal_reason("two dogs", "a dog sleeping", max_words=9) is None  # crude plural stem
    assert refusal_reason("the one that is there", "stock prices", max_words=9) is None  # only stop words: no test
    assert refusal_reason("a red car", "a blue car", max_words=9, similarity=0.2, min_similarity=0.5) == "off_topic"
    assert refusal_reason("a red car", "stocks fell", max_words=9, similarity=0.9, min_similarity=0.5) is None
    assert refusal_reason("a red car", "a crimson car", max_words=9, similarity=0.5, min_similarity=0.5) is None


def test_text_helpers() -> None:
    assert normalize_text("  A dog,   RUNNING. ") == "a dog running"
    assert content_words("The dogs are on a bus") == {"dog", "bus"}


def test_copied_share() -> None:
    refs = ["a brown dog runs on the grass"]
    assert copied_share("a brown dog runs on the grass", "dog", refs) == 1.0
    assert copied_share("a dog runs fast", "a dog runs", refs) == 0.0  # the query's own phrase is not a copy
    assert copied_share("anything at all", "x", []) == 0.0
    assert copied_share("", "x", refs) == 0.0
    assert copied_share("brown dog", "x", refs) == 0.0  # shorter than n: one short gram, not in the references
    assert copied_share("brown dog", "x", refs, n=2) == 1.0
