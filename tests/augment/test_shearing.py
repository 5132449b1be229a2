"""Text shearing: T from raw captions, first complete clause, edge cases."""

from __future__ import annotations

import pytest

from lumir.augment.shearing import clean_generation, first_clause, shear, shear_all, shearing_budget


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


def test_shear_records_what_happened() -> None:
    tail = shear("A dog catches a frisbee in a park. The dog is a golden retriever named Max who loves")
    assert (tail.text, tail.cut, tail.complete) == ("A dog catches a frisbee in a park", True, True)
    whole = shear("A dog catches a frisbee.")
    assert (whole.text, whole.cut, whole.complete) == ("A dog catches a frisbee", False, True)
    capped = shear("A man in a blue shirt standing next to a", hit_token_cap=True)
    assert capped.text == "A man in a blue shirt standing next to a" and not capped.complete
    natural = shear("A man in a blue shirt", hit_token_cap=False)
    assert natural.complete
    empty = shear("   ")
    assert (empty.text, empty.complete) == ("", False)
    assert shear('Sure! Here is a caption: "Kids play soccer, laughing."').text == "Kids play soccer"
    assert [r.text for r in shear_all(["a b. c", "d"], [False, True])] == ["a b", "d"]


def test_clean_generation_keeps_content() -> None:
    assert clean_generation("Caption: A red bus.") == "A red bus."
    assert clean_generation("here's a description of the image: two dogs") == "two dogs"
    assert clean_generation("Surely a dog") == "Surely a dog"
