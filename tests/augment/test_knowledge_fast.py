"""The joint (one call per caption) and rule-based modes of the action-knowledge extractor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lumir.augment.knowledge import (
    ActionKnowledge,
    KnowledgeExtractor,
    check_state,
    handcrafted_prompt,
    joint_prompt,
    parse_joint,
    rule_knowledge,
    rule_triplets,
)
from lumir.testing.fakes import ScriptedChatModel

CAPTION = "A boy in a red shirt kicks a soccer ball on the grass."
GOOD = "(boy, kicks, soccer ball) | He swings his leg forward and strikes the ball hard.\n(boy, wears, red shirt) | "
STATE = "He swings his leg forward and strikes the ball hard."

JOINT_GOLDEN = """\
Extract the action triplets of the caption and describe the state of the subject caused by each action. Write one \
line per triplet as (subject, action, object) | one sentence describing that state. Attributes are triplets too, \
like (girl, is, small). Use words from the caption in the triplets. Write nothing else.

Caption: A small girl in a pink dress is climbing a wooden fence.
Knowledge:
(girl, climbing, wooden fence) | She grips the top rail with both hands and lifts one foot up.
(girl, wears, pink dress) | Her pink dress swings around her knees as she stretches upward.
(girl, is, small) | She reaches up on her toes, her short arms barely spanning the boards.

Caption: Two dogs run through the snow chasing a red ball.
Knowledge:
(dogs, chasing, red ball) | The dogs sprint with their legs stretched out, eyes fixed on the rolling ball, kicking \
up snow.
(dogs, run through, snow) | Their paws sink into the soft snow and their fur is dusted white.

Caption: A man sits on a bench reading a newspaper.
Knowledge:
(man, reading, newspaper) | He holds the open pages with both hands, head bowed over the print.
(man, sits on, bench) | He leans back against the slats, legs relaxed, staying still.

Caption: A boy in a red shirt kicks a soccer ball on the grass.
Knowledge:"""


class Joint(ScriptedChatModel):
    """Joint answers by attempt (bad below ``bad_attempts``), Q2 answers by attempt (bad below ``bad_q2``)."""

    def __init__(self, bad_attempts: int = 0, bad_q2: int = 0, joint: str = GOOD) -> None:
        super().__init__()
        self.bad_attempts, self.bad_q2, self.joint = bad_attempts, bad_q2, joint
        self.seen: list[tuple[str, dict]] = []

    def generate(self, conversations, **gen):
        texts = self._texts(conversations)
        attempt = gen.get("seed", 0) if gen.get("temperature", 0) else 0
        out = []
        for t in texts:
            kind = "joint" if t.rstrip().endswith("Knowledge:") else "q2"
            self.seen.append((kind, gen))
            if kind == "joint":
                out.append("A boy kicks." if attempt < self.bad_attempts else self.joint)
            else:
                out.append("ok" if attempt < self.bad_q2 else "He holds his arms out, the red shirt flapping.")
        return out


def test_joint_prompt_golden() -> None:
    assert joint_prompt(CAPTION) == JOINT_GOLDEN


def test_handcrafted_prompt_is_table_2_template() -> None:
    assert handcrafted_prompt(("dog", "chasing", "ball")) == (
        "A photo capturing a dog performing chasing in relation to ball."
    )
    assert handcrafted_prompt(["girl", "climbing", "wooden fence"]) == (
        "A photo capturing a girl performing climbing in relation to wooden fence."
    )


def test_parse_joint_uses_the_triplet_checks() -> None:
    pairs, error = parse_joint(GOOD, caption=CAPTION)
    assert error is None
    assert pairs == [(("boy", "kicks", "soccer ball"), STATE), (("boy", "wears", "red shirt"), "")]
    # not grounded, or copied examples, are dropped as in Q1; none left fails
    copied = "(man, sits on, bench) | He leans back.\n(boy, kicks, ball) | He kicks (hard, fast, well)."
    assert parse_joint(copied, caption=CAPTION)[0] == [(("boy", "kicks", "ball"), "He kicks (hard, fast, well).")]
    assert parse_joint("(man, sits on, bench) | He leans back.", caption=CAPTION)[1].startswith("no triplet")
    assert parse_joint("The boy kicks a ball.", caption=CAPTION)[1] == "no (subject, action, object) triplet found"
    # a state that repeats a triplet fails check_state, as in Q2
    bad_state = parse_joint("(boy, kicks, ball) | (boy, kicks, ball) again", caption=CAPTION)[0][0][1]
    assert check_state(bad_state, triplet=("boy", "kicks", "ball"), caption=CAPTION)[1] is not None


def test_joint_answers_are_checked_against_the_joint_examples() -> None:
    from lumir.augment.knowledge import JOINT_CONTENT

    # a real Qwen2.5-Coder joint answer (dev slice, captions 1000+) pasting two joint examples
    pasted = "The black dog is sitting on the fence, its legs relaxed, and its fur is dusted white."
    ctx = {"triplet": ("dog", "playing", "inside the fence"), "caption": "A black dog is playing inside the fence ."}
    assert (
        check_state(pasted, **ctx, example_words=JOINT_CONTENT)[1]
        == "description borrows words of an in-context example"
    )
    assert check_state(pasted, **ctx)[1] is None  # Q2's check (its own examples) is unchanged
    own = "The dog trots along the fence, nose down, sniffing the grass."
    assert check_state(own, **ctx, example_words=JOINT_CONTENT) == (own, None)


def test_joint_mode_one_call_when_everything_passes() -> None:
    joint = "(boy, kicks, soccer ball) | " + STATE + "\n(boy, wears, red shirt) | His red shirt clings to his back."
    model = Joint(joint=joint)
    [k] = KnowledgeExtractor(model, mode="joint").extract([("c1", CAPTION)])
    assert k.valid and k.attempts == 1 and not k.errors and k.mode == "joint"
    assert k.states == [STATE, "His red shirt clings to his back."]
    assert model.seen == [("joint", {"max_new_tokens": 160, "stop": ["\n\n", "\nCaption:"]})]


def test_joint_mode_retries_failed_parts() -> None:
    # the second state is missing: Q2 asks it again (greedy first), up to max_retries times
    model = Joint(bad_q2=1)
    [k] = KnowledgeExtractor(model, mode="joint", max_retries=2).extract([("c1", CAPTION)])
    assert k.valid and k.states[0] == STATE and k.states[1] == "He holds his arms out, the red shirt flapping."
    assert k.attempts == 1 + 2 and [s[0] for s in model.seen] == ["joint", "q2", "q2"]
    assert "temperature" not in model.seen[1][1] and model.seen[2][1]["temperature"] == 0.7
    assert k.errors[0].startswith("joint (boy, wears, red shirt): description has 0 words")
    # every try of a state counts: with max_retries=1 the state gets the joint try and one Q2 try
    never = Joint(bad_q2=99)
    [bad] = KnowledgeExtractor(never, mode="joint", max_retries=1).extract([("c1", CAPTION)])
    assert not bad.valid and bad.states[1] == "" and bad.attempts == 2
    [zero] = KnowledgeExtractor(Joint(bad_q2=99), mode="joint", max_retries=0).extract([("c1", CAPTION)])
    assert zero.attempts == 1 and not zero.valid
    # triplets that fail re-ask the joint prompt with sampling
    model = Joint(bad_attempts=1)
    [k] = KnowledgeExtractor(model, mode="joint", max_retries=2).extract([("c1", CAPTION)])
    assert k.valid and [s[0] for s in model.seen] == ["joint", "joint", "q2"] and k.errors[0].startswith("joint: ")
    assert model.seen[1][1]["seed"] == 1
    # a state cut by the token cap (no closing punctuation) is asked again
    cut = Joint(joint="(boy, kicks, soccer ball) | He swings his leg forward and strikes")
    [k] = KnowledgeExtractor(cut, mode="joint").extract([("c1", CAPTION)])
    assert k.valid and "cut off" in k.errors[0] and k.attempts == 2


def test_joint_mode_provenance_and_resume(tmp_path: Path) -> None:
    model = Joint()
    ex = KnowledgeExtractor(model, mode="joint")
    spec = ex.spec()
    assert spec["mode"] == "joint" and spec["joint_max_new_tokens"] == 160 and spec["llm"]["type"] == "scripted"
    assert KnowledgeExtractor(model).spec()["mode"] == "two-step"
    out = tmp_path / "k.jsonl"
    items = [(f"c{i}", CAPTION) for i in range(5)]
    assert ex.run(items[:3], out, batch_size=2, progress=False)["done"] == 3
    calls = model.calls
    assert ex.run(items, out, batch_size=2, progress=False) == {"done": 2, "skipped": 3, "valid": 2}
    assert model.calls == calls + 2  # one batch of two captions: one joint call, one Q2 call
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == [f"c{i}" for i in range(5)]
    assert all(x["mode"] == "joint" and x["model"]["type"] == "scripted" for x in lines)
    with pytest.raises(ValueError, match="mode must be one of"):
        KnowledgeExtractor(model, mode="fast")
    with pytest.raises(ValueError, match="needs an llm"):
        KnowledgeExtractor(None, mode="joint")


def test_registry_builds_the_modes() -> None:
    from lumir.registry import AUGMENTERS

    ex = AUGMENTERS.build({"type": "knowledge", "llm": None, "mode": "rules"})
    assert ex.mode == "rules" and ex.spec() == {"type": "knowledge", "llm": None, "mode": "rules", "max_triplets": 4}
    assert AUGMENTERS.build(ex.spec()).spec() == ex.spec()


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("A dog catches a Frisbee in midair .", [("dog", "catches", "frisbee")]),
        ("A little baby plays croquet .", [("baby", "plays", "croquet"), ("baby", "is", "little")]),
        (
            "A boy wearing a red t-shirt is running through woodland .",
            [("boy", "wearing", "red t-shirt"), ("boy", "running through", "woodland")],
        ),
        (
            "A black and white dog with a red Frisbee standing on a sandy beach .",
            [("dog", "standing on", "sandy beach"), ("dog", "is", "black"), ("dog", "is", "white")],
        ),
        (
            "A little old lady sitting next to an advertisement .",
            [("lady", "sitting next to", "advertisement"), ("lady", "is", "little"), ("lady", "is", "old")],
        ),
        ("A skier in a yellow jacket is airborne above the mountains .", [("skier", "is", "airborne")]),
        ("A girl in a white dress .", [("girl", "in", "white dress")]),
        ("A bunch of girls in cheerleader outfits .", [("girls", "in", "cheerleader outfits")]),
        (
            "Two dogs run through the snow chasing a red ball.",
            [("dogs", "run through", "snow"), ("dogs", "chasing", "red ball")],
        ),
        (
            "A man dressed in a purple shirt and red bandanna smiles at the people watching him .",
            [("man", "dressed in", "purple shirt"), ("man", "smiles at", "people"), ("man", "watching", "him")],
        ),
        ("", []),
    ],
)
def test_rule_triplets(caption: str, expected: list[tuple[str, str, str]]) -> None:
    assert rule_triplets(caption) == expected


def test_rule_knowledge_records_and_rules_mode(tmp_path: Path) -> None:
    assert rule_triplets("A black dog runs after a cat .", attributes=False) == [("dog", "runs after", "cat")]
    assert len(rule_triplets("A small brown dog is running after a cat .", max_triplets=2)) == 2
    [k, none] = rule_knowledge([("c1", "A dog catches a Frisbee ."), ("c2", "Sunset .")])
    assert isinstance(k, ActionKnowledge) and k.model == {"type": "rules"} and k.mode == "rules"
    assert k.triplets == [("dog", "catches", "frisbee")] and k.states == [""] and k.valid and k.attempts == 0
    assert none.triplets == [] and not none.valid
    out = tmp_path / "rules.jsonl"
    ex = KnowledgeExtractor(mode="rules")
    assert ex.run([("c1", "A dog catches a Frisbee .")], out, progress=False) == {"done": 1, "skipped": 0, "valid": 1}
    rec = json.loads(out.read_text())
    assert rec["model"] == {"type": "rules"} and rec["triplets"] == [["dog", "catches", "frisbee"]]
    assert rec["states"] == [""]


def test_cli_rules_mode(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lumir.cli.main import app

    src = tmp_path / "caps.jsonl"
    src.write_text("".join(json.dumps({"id": f"c{i}", "text": t}) + "\n" for i, t in enumerate([CAPTION, "Sun ."])))
    out = tmp_path / "k.jsonl"
    res = CliRunner().invoke(app, ["augment", "knowledge", str(src), "-o", str(out), "--mode", "rules"])
    assert res.exit_code == 0, res.output
    assert "2 captions" in res.output and "1 passed" in res.output
    assert json.loads(out.read_text().splitlines()[0])["triplets"][0] == ["boy", "kicks", "soccer ball"]
    bad = CliRunner().invoke(app, ["augment", "knowledge", str(src), "-o", str(out), "--mode", "fast"])
    assert bad.exit_code == 2 and "--mode" in bad.output


def test_llamacpp_prefix_snapshots_keep_greedy_outputs() -> None:
    pytest.importorskip("llama_cpp")
    from lumir.augment.knowledge import q2_prompt
    from lumir.models.chat import load_chat_model

    caps = [CAPTION, "A dog catches a Frisbee in midair .", "A little baby plays croquet ."]
    convs = [[{"role": "user", "content": joint_prompt(c)}] for c in caps]
    q2 = [[{"role": "user", "content": q2_prompt(c, ("boy", "kicks", "ball"))}] for c in caps[:2]]
    gen = {"max_new_tokens": 12}
    fresh = load_chat_model("smollm2", n_ctx=2048, prefix_snapshots=0)
    snap = load_chat_model("smollm2", n_ctx=2048)
    want = [fresh.generate(convs, **gen), fresh.generate(q2, **gen), fresh.generate(convs[::-1], **gen)]
    got = [snap.generate(convs, **gen), snap.generate(q2, **gen), snap.generate(convs[::-1], **gen)]
    assert got == want
    assert snap.stats.extra["restored_tokens"] > 0 and "restored_tokens" not in fresh.stats.extra
    assert snap.spec()["prefix_snapshots"] == 4
