"""Every rewriting prompt, rendered with fixed fields, matches its golden file (a prompt change is a visible diff).

Regenerate after a deliberate change (and bump the prompt's version): ``LUMIR_UPDATE_GOLDEN=1 pytest <this file>``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lumir.rewrite.prompts import PROMPTS, TRAINED, get_prompt, rewriter_messages

GOLDEN = Path(__file__).resolve().parent / "golden"

FIELDS = {
    "query": "a dog runs on the beach",
    "rank": 7,
    "ground_truth": "Image description: a brown dog running along the wet sand near the waves",
    "negatives": "1. Image description: a dog sitting on a couch\n2. Image description: people walking on a beach",
    "feedback": 'Your previous query "a brown dog on sand" ranked the correct photo at position 4.\n',
    "max_words": 30,
}


def rendered(name: str) -> str:
    prompt = PROMPTS[name]
    return f"version: {prompt.version}\n--- system ---\n{prompt.system}\n--- user ---\n{prompt.render(**FIELDS)}\n"


def test_every_prompt_has_a_golden_file() -> None:
    assert {p.stem for p in GOLDEN.glob("*.txt")} == set(PROMPTS)


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_prompt_matches_golden(name: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("LUMIR_UPDATE_GOLDEN"):
        path.write_text(rendered(name), encoding="utf-8")
    assert rendered(name) == path.read_text(encoding="utf-8"), f"{name} changed: bump its version, regenerate"


def test_versions_are_unique_and_missing_fields_are_named() -> None:
    assert len({p.version for p in PROMPTS.values()}) == len(PROMPTS)
    with pytest.raises(KeyError, match="ground_truth"):
        PROMPTS["challenge"].render(query="x", rank=2)
    with pytest.raises(KeyError, match="unknown rewrite prompt 'nope'; known:"):
        get_prompt("nope")


def test_trained_prompt_messages() -> None:
    assert rewriter_messages("a dog") == [{"role": "user", "content": TRAINED.render(query="a dog")}]
    assert rewriter_messages("a dog", "a brown dog")[-1] == {"role": "assistant", "content": "a brown dog"}
    assert TRAINED.system == ""  # the rewrite is the whole assistant reply; no system message is trained on
