"""Text shearing: T from raw captions, the appendix rule (default) and the clause rule, edge cases."""

from __future__ import annotations

import pytest

from lumir.augment.shearing import (
    APPENDIX_MIN_LENGTH,
    DEFAULT_SHEAR_RULE,
    SHEAR_RULES,
    clean_generation,
    first_clause,
    first_period_substring,
    shear,
    shear_all,
    shearing_budget,
)


def test_budget_is_the_mean_raw_length_in_generator_tokens_rounded_up() -> None:
    words = lambda s: len(s.split())  # noqa: E731
    assert shearing_budget(["a b c", "a b c d"], words) == 4  # mean 3.5 -> 4
    assert shearing_budget(["one", "", "  "], words) == 1
    chars = len
    assert shearing_budget(["abcd", "ab"], chars) == 3
    with pytest.raises(ValueError, match="at least one"):
        shearing_budget(["", " "], words)


@pytest.mark.parametrize(
    ("text", "clause", "bounded"),
    [
        ("A dog runs on the beach, chasing a ball.", "A dog runs on the beach", True),
        ("Two men play chess. One wins.", "Two men play chess", True),
        ("A girl in a red coat; snow falls", "A girl in a red coat", True),
        ("A cat sleeping\nThe room is dark", "A cat sleeping", True),
        ("A boat - probably a ferry - crosses", "A boat", True),
        ("A 3.5 m boat sails", "A 3.5 m boat sails", False),
        ("About 1,000 people march", "About 1,000 people march", False),
        ("Dr. Smith e.g. waves at a crowd. Later", "Dr. Smith e.g. waves at a crowd", True),
        ("well-dressed man", "well-dressed man", False),
        (". A dog, running", "A dog", True),
        ("", "", False),
    ],
)
def test_first_clause(text: str, clause: str, bounded: bool) -> None:
    assert first_clause(text) == (clause, bounded)


def test_paper_constants() -> None:
    assert APPENDIX_MIN_LENGTH == 5  # §7.1: "whose length is greater than 5"
    assert SHEAR_RULES == ("appendix", "clause") and DEFAULT_SHEAR_RULE == "appendix"


@pytest.mark.parametrize(
    ("text", "kept", "bounded"),
    [
        ("A dog runs on the beach, chasing a ball. It is sunny.", "A dog runs on the beach, chasing a ball.", True),
        # substrings of <= 5 characters (period included) are skipped, the next one is kept
        ("Yes. Sure. A red bus. Trees.", "A red bus.", True),
        ("A cat. Two dogs.", "A cat.", True),  # "A cat." is 6 characters: > 5, kept
        ("Cats. Dogs.", "", False),  # 5 characters each: nothing qualifies, nothing is left
        ("Sure. a dog running", "a dog running", False),  # no qualifying substring: what follows the short ones
        # no period at all: the whole text, unbounded
        ("A man in a blue shirt standing", "A man in a blue shirt standing", False),
        # only the period ends a substring: ! ? ; , and line breaks do not
        ("What a dog! It runs; fast, far\naway. Then", "What a dog! It runs; fast, far\naway.", True),
        # decimals and abbreviations are not periods that end a substring
        ("A 3.5 m boat sails. Then", "A 3.5 m boat sails.", True),
        ("Dr. Smith e.g. waves at a crowd. Later", "Dr. Smith e.g. waves at a crowd.", True),
        ("Hmm... A dog naps.", "A dog naps.", True),
        ("Bus No. 5 stops here. Then", "Bus No. 5 stops here.", True),  # "No." before a number is short for number
        ("The dog says no. It sits.", "The dog says no.", True),  # ... elsewhere it is the word
        ("", "", False),
    ],
)
def test_first_period_substring(text: str, kept: str, bounded: bool) -> None:
    assert first_period_substring(text) == (kept, bounded)


def test_appendix_rule_min_length_is_a_parameter() -> None:
    assert first_period_substring("A cat. Two dogs.", min_length=6) == ("Two dogs.", True)
    assert first_period_substring("Ok. Go.", min_length=1) == ("Ok.", True)


def test_shear_default_is_the_appendix_rule() -> None:
    gen = "A dog catches a frisbee, jumping high. The dog is a golden retriever named Max who loves"
    default = shear(gen)
    assert default == shear(gen, rule="appendix")
    assert (default.text, default.cut, default.complete, default.rule) == (
        "A dog catches a frisbee, jumping high.",
        True,
        True,
        "appendix",
    )
    clause = shear(gen, rule="clause")
    assert (clause.text, clause.cut, clause.complete, clause.rule) == ("A dog catches a frisbee", True, True, "clause")
    whole = shear("A dog catches a frisbee.")
    assert (whole.text, whole.cut, whole.complete) == ("A dog catches a frisbee.", False, True)
    # cut by the T cap before any period: kept, but incomplete
    capped = shear("Sure. A man in a blue shirt standing next to a", hit_token_cap=True)
    assert (capped.text, capped.cut, capped.complete) == ("A man in a blue shirt standing next to a", False, False)
    assert shear("A man in a blue shirt", hit_token_cap=False).complete
    only_short = shear("Yes. No.")
    assert (only_short.text, only_short.complete) == ("", False)
    assert (
        shear('Sure! Here is a caption: "Kids play soccer, laughing. A ball."').text == "Kids play soccer, laughing."
    )
    assert [r.text for r in shear_all(["a cat sat. c", "d"], [False, True])] == ["a cat sat.", "d"]
    assert [r.rule for r in shear_all(["a b. c"], rule="clause")] == ["clause"]
    with pytest.raises(ValueError, match="rule must be one of"):
        shear("x", rule="sentence")


def test_clause_rule_records_what_happened() -> None:
    tail = shear("A dog catches a frisbee in a park. The dog is a golden retriever named Max who loves", rule="clause")
    assert (tail.text, tail.cut, tail.complete) == ("A dog catches a frisbee in a park", True, True)
    whole = shear("A dog catches a frisbee.", rule="clause")
    assert (whole.text, whole.cut, whole.complete) == ("A dog catches a frisbee", False, True)
    capped = shear("A man in a blue shirt standing next to a", hit_token_cap=True, rule="clause")
    assert capped.text == "A man in a blue shirt standing next to a" and not capped.complete
    natural = shear("A man in a blue shirt", hit_token_cap=False, rule="clause")
    assert natural.complete
    empty = shear("   ", rule="clause")
    assert (empty.text, empty.complete) == ("", False)
    assert shear('Sure! Here is a caption: "Kids play soccer, laughing."', rule="clause").text == "Kids play soccer"
    assert [r.text for r in shear_all(["a b. c", "d"], [False, True], rule="clause")] == ["a b", "d"]


def test_clean_generation_keeps_content() -> None:
    assert clean_generation("Caption: A red bus.") == "A red bus."
    assert clean_generation("here's a description of the image: two dogs") == "two dogs"
    assert clean_generation("Surely a dog") == "Surely a dog"
