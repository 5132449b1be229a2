"""Action knowledge extraction: prompts, format checks, bounded retries, resumable jsonl, a real LLM run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lumir.augment.knowledge import KnowledgeExtractor, check_state, parse_triplets, q1_prompt, q2_prompt
from lumir.errors import DataFormatError
from lumir.testing.fakes import ScriptedChatModel

CAPTION = "A boy in a red shirt kicks a soccer ball on the grass."


class ByAttempt(ScriptedChatModel):
    """Answers depend on the prompt kind and on the attempt (seed): bad first, good after."""

    def __init__(self, bad_attempts: int = 1) -> None:
        super().__init__()
        self.bad_attempts = bad_attempts
        self.seen: list[dict] = []

    def generate(self, conversations, **gen):
        self.seen.append(gen)
        texts = self._texts(conversations)
        attempt = gen.get("seed", 0) if gen.get("temperature", 0) else 0
        out = []
        for t in texts:
            if t.rstrip().endswith("Triplets:"):
                out.append(
                    "I think a boy kicks."
                    if attempt < self.bad_attempts
                    else "(boy, kicks, soccer ball)\n(boy, wears, red shirt)"
                )
            else:
                out.append(
                    "ok" if attempt < self.bad_attempts else "He swings his leg forward and strikes the ball hard."
                )
        return out


def test_prompts_hold_instruction_examples_and_input() -> None:
    p1 = q1_prompt(CAPTION)
    assert p1.startswith("Extract the action triplets") and "(girl, is, small)" in p1
    assert p1.endswith(f"Caption: {CAPTION}\nTriplets:")
    p2 = q2_prompt(CAPTION, ("boy", "kicks", "soccer ball"))
    assert "She focuses on the laptop screen" in p2 and p2.endswith("Triplet: (boy, kicks, soccer ball)\nState:")


def test_format_checks() -> None:
    assert parse_triplets("1. (dog, catches, frisbee)\n2. (dog, is, brown), (dog, catches, frisbee)")[0] == [
        ("dog", "catches", "frisbee"),
        ("dog", "is", "brown"),
    ]
    assert parse_triplets("(a very long subject phrase indeed here, is, x)")[1] is not None
    assert parse_triplets("(, is, x)")[1] == "no (subject, action, object) triplet found"
    assert check_state("State: The dog leaps high to grab it.")[0] == "The dog leaps high to grab it."
    assert check_state("Yes.")[1] is not None
    assert check_state("(dog, is, happy) the dog is happy")[1] is not None
    assert check_state("The state of the subject caused by the action in the triplet is:")[1] is not None
    assert check_state("Here is what the dog looks like now:")[1] == "description is an unfinished lead-in"
    assert (
        check_state("A girl is studying with a laptop at the table.")[1] == "description copies an in-context example"
    )
    # real SmolLM2 answers that the earlier check let through (benchmarks/results/knowledge_smollm2.json, first run)
    talk = "Sorry for the misunderstanding, but I'll give you a chance to play it cool."
    assert check_state(talk)[1] == "description talks about the task instead of describing"
    label = "Corrections: Editing: The perfect sentence has been edited to meet the specified constraints."
    assert check_state(label)[1] == "description starts with a label instead of describing"
    assert check_state("Hashtag: Nice to meet you, Sarah.")[1] is not None
    off_topic = check_state("A cat is eating a mouse.", triplet=("man", "pointing", "camera"))
    assert off_topic[1] == "description is not about the triplet (no word of its subject, action or object)"
    about = "The man raises the camera to his eye and holds still."
    assert check_state(about, triplet=("man", "pointing", "camera")) == (about, None)
    assert check_state("She leans forward, arms out.", triplet=("girl", "climbing", "fence"))[1] is None
    assert check_state("A cat is eating a mouse.")[1] is None  # no triplet given: format only
    # a shared "the" is not a shared word (real SmolLM2 answer, benchmarks/results/knowledge_smollm2.json, second run)
    boat = ("the blue boat", "floating", "on calm waters")
    assert check_state("A guard guards the box of chocolates.", triplet=boat)[1] == off_topic[1]
    assert parse_triplets("(the man, sits on, the bench)", caption="The dog runs.")[1] is not None
    # real Qwen2.5-Coder answers that paste the in-context examples (benchmarks/results/knowledge_qwen.json, first run)
    girls = "A bunch of girls in cheerleader outfits ."
    assert parse_triplets("(girl, is, small)\n(girl, wears, cheerleader outfits)", caption=girls) == (
        [("girl", "wears", "cheerleader outfits")],
        None,
    )
    assert parse_triplets("(girl, is, small)", caption="A small girl in the park")[0] == [("girl", "is", "small")]
    pasted = "The girl is studying with a laptop at the table."
    dress = ("girl", "wears", "white dress")
    assert check_state(pasted, triplet=dress, caption="A girl in a white dress .")[1] == (
        "description borrows words of an in-context example"
    )
    posture = "The boy is running through the woodland, maintaining a stable posture."
    assert check_state(posture, triplet=("boy", "running", "woodland"), caption="A boy runs in woodland .")[1]
    own = "The dog stands on the sandy beach, watching the Frisbee."
    beach = "A dog with a red Frisbee standing on a sandy beach ."
    assert check_state(own, triplet=("dog", "stands on", "sandy beach"), caption=beach) == (own, None)
    grounded_only = parse_triplets("(man, sits on, bench)\n(cyclist, riding, pavement)", caption="A cyclist rides.")
    assert grounded_only == ([("cyclist", "riding", "pavement")], None)
    assert parse_triplets("(man, sits on, bench)", caption="A cat sleeps.")[1].startswith("no triplet is grounded")


def test_retries_are_bounded_and_sampled() -> None:
    model = ByAttempt(bad_attempts=1)
    [k] = KnowledgeExtractor(model, max_retries=2).extract([("c1", CAPTION)])
    assert k.valid and k.triplets == [("boy", "kicks", "soccer ball"), ("boy", "wears", "red shirt")]
    assert k.states == ["He swings his leg forward and strikes the ball hard."] * 2
    assert k.attempts == 2 + 4  # Q1 twice; Q2 twice for each of two triplets
    assert model.seen[0] == {"max_new_tokens": 64} and model.seen[1]["temperature"] == 0.7
    assert any(e.startswith("Q1:") for e in k.errors)
    never = ByAttempt(bad_attempts=99)
    [bad] = KnowledgeExtractor(never, max_retries=2).extract([("c1", CAPTION)])
    assert not bad.valid and bad.attempts == 3 and bad.triplets == [] and len(never.seen) == 3


def test_jsonl_output_resumes_and_reports_bad_files(tmp_path: Path) -> None:
    out = tmp_path / "k.jsonl"
    items = [(f"c{i}", CAPTION) for i in range(5)]
    model = ByAttempt(bad_attempts=0)
    first = KnowledgeExtractor(model).run(items[:3], out, batch_size=2, progress=False)
    assert first == {"done": 3, "skipped": 0, "valid": 3}
    calls = model.calls
    second = KnowledgeExtractor(model).run(items, out, batch_size=2, progress=False)
    assert second == {"done": 2, "skipped": 3, "valid": 2} and model.calls == calls + 2
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == [f"c{i}" for i in range(5)]
    assert lines[0]["triplets"][0] == ["boy", "kicks", "soccer ball"] and lines[0]["model"]["type"] == "scripted"
    out.write_text(out.read_text() + "{broken\n")
    with pytest.raises(DataFormatError, match="line 6"):
        KnowledgeExtractor(model).run(items, out, progress=False)


def test_real_smollm2_produces_checked_knowledge() -> None:
    pytest.importorskip("llama_cpp")
    from lumir.models.chat import load_chat_model

    chat = load_chat_model("smollm2", n_ctx=2048)
    [k] = KnowledgeExtractor(chat, max_retries=1, max_triplets=2).extract([("c1", CAPTION)])
    assert 1 <= k.attempts <= 2 + 2 * 2
    assert k.valid == (bool(k.triplets) and all(k.states))
    for t in k.triplets:
        assert len(t) == 3 and all(part.strip() for part in t)
    assert k.model["type"] == "smollm2-135m-instruct"


def test_cli_augment_knowledge_resumes(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from typer.testing import CliRunner

    from lumir.cli.main import app

    src = tmp_path / "caps.jsonl"
    src.write_text(
        "".join(json.dumps({"id": f"c{i}", "text": t}) + "\n" for i, t in enumerate([CAPTION, "A cat sleeps."]))
    )
    out = tmp_path / "k.jsonl"
    args = ["augment", "knowledge", str(src), "-o", str(out), "--limit", "1", "--max-retries", "0", "--no-llm-cache"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "1 captions" in res.output and len(out.read_text().splitlines()) == 1
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 captions" in again.output and "1 already there" in again.output
    bad = CliRunner().invoke(app, ["augment", "knowledge", str(tmp_path / "nope.jsonl"), "-o", str(out)])
    assert bad.exit_code == 2 and "error" in bad.output


def test_a_second_job_on_the_same_output_is_refused(tmp_path: Path) -> None:
    from lumir.errors import OutputLockedError
    from lumir.io.lock import output_lock

    out = tmp_path / "k.jsonl"
    model = ByAttempt(bad_attempts=0)
    with output_lock(out), pytest.raises(OutputLockedError, match=r"k\.jsonl is being written by another job"):
        KnowledgeExtractor(model).run([("c1", CAPTION)], out, progress=False)
    assert not out.exists() and model.calls == 0
    assert KnowledgeExtractor(model).run([("c1", CAPTION)], out, progress=False)["done"] == 1
