"""Reranking prompts are data: Table 13 covers M-BEIR's 16 tasks; rendered chats match the golden file."""

from __future__ import annotations

from pathlib import Path

import pytest

from lumir.rerank import ListwiseReranker, TrueFalseReranker, YesNoReranker
from lumir.rerank.prompts import MBEIR_TRUE_FALSE_PROMPTS, parse_position, template_markers, true_false_prompt
from lumir.testing.fakes import ScriptedChatModel
from lumir.types import Item, Modality, Query

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "rerank_prompts_smollm2.txt"

# MM-Embed Figure 1 / Table 13: the 16 M-BEIR tasks (dataset, query -> candidate modality)
MBEIR_16 = {
    "visualnews_task0": ("<cimg>", "<qtxt>"),
    "mscoco_task0": ("<cimg>", "<qtxt>"),
    "fashion200k_task0": ("<cimg>", "<qtxt>"),
    "webqa_task1": ("<qtxt>", "<ctxt>"),
    "edis_task2": ("<qtxt>", "<ctxt>"),
    "webqa_task2": ("<qtxt>", "<ctxt>"),
    "visualnews_task3": ("<qimg>", "<ctxt>"),
    "mscoco_task3": ("<qimg>", "<ctxt>"),
    "fashion200k_task3": ("<qimg>", "<ctxt>"),
    "nights_task4": ("<qimg>", "<cimg>"),
    "oven_task6": ("<qimg>", "<qtxt>", "<ctxt>"),
    "infoseek_task6": ("<qimg>", "<qtxt>", "<ctxt>"),
    "fashioniq_task7": ("<cimg>", "<qtxt>"),
    "cirr_task7": ("<cimg>", "<qtxt>"),
    "oven_task8": ("<qimg>", "<qtxt>", "<ctxt>"),
    "infoseek_task8": ("<qimg>", "<qtxt>", "<ctxt>"),
}


def test_table13_covers_all_16_mbeir_tasks_with_their_markers() -> None:
    assert set(MBEIR_TRUE_FALSE_PROMPTS) == set(MBEIR_16)
    for task, markers in MBEIR_16.items():
        prompt = MBEIR_TRUE_FALSE_PROMPTS[task]
        assert tuple(template_markers(prompt)) == markers, task
        assert prompt.endswith("True or False"), task


def test_table13_wording_is_verbatim() -> None:
    assert MBEIR_TRUE_FALSE_PROMPTS["mscoco_task3"] == (
        "<qimg>\nCaption:<ctxt>\nDoes the above daily-life image match the caption? True or False"
    )
    assert MBEIR_TRUE_FALSE_PROMPTS["cirr_task7"] == (
        "<cimg>\nCaption:<qtxt>\nDoes the above caption describe the modification of the image? True or False"
    )
    assert MBEIR_TRUE_FALSE_PROMPTS["nights_task4"] == (
        "<qimg>\n<cimg>\nDoes the above two images have the same scene? True or False"
    )


def test_prompt_selection_order() -> None:
    q = Query("q", text="x", task="cirr_task7")
    assert true_false_prompt(q, Modality.IMAGE).source == "MM-Embed Table 13 (cirr_task7)"
    assert true_false_prompt(q, Modality.IMAGE, overrides={"cirr_task7": "<qtxt>?"}).template == "<qtxt>?"
    assert true_false_prompt(Query("q", text="x"), Modality.TEXT).source == "default text->text"
    assert true_false_prompt(Query("q", text="x", task="beir/scifact"), Modality.TEXT).template.startswith("Claim:")


@pytest.mark.parametrize(
    ("answer", "n", "expected"),
    [("3", 5, 3), ("(2)", 5, 2), ("Ans: (4)", 5, 4), ("Answer: 1.", 3, 1), ("6", 5, None), ("", 5, None)],
)
def test_parse_position(answer: str, n: int, expected: int | None) -> None:
    assert parse_position(answer, n) == expected


def test_rendered_chats_match_the_golden_file() -> None:
    pytest.importorskip("llama_cpp")
    from lumir.models.chat import load_chat_model

    model = load_chat_model("smollm2")
    q = Query("q1", text="0-dimensional biomaterials show inductive properties.", task="beir/scifact")
    c = Item(
        "d1",
        text="Nanotechnologies are emerging platforms that could be useful in measuring, understanding, and "
        "manipulating stem cells.",
    )
    c2 = Item("d2", text="Vitamin D deficiency is common.")
    rendered = [
        model.render(TrueFalseReranker(model).conversation(q, c)),
        model.render(YesNoReranker(model).conversation(q, c)),
        model.render(ListwiseReranker(model).conversation(q, [c, c2])),
    ]
    assert "\n----- next prompt -----\n".join(rendered) == GOLDEN.read_text()


def test_conversations_are_plain_chat_messages() -> None:
    conv = YesNoReranker(ScriptedChatModel(), system="Be brief.").conversation(
        Query("q", text="red"), Item("c", text="a red thing")
    )
    assert conv[0] == {"role": "system", "content": "Be brief."}
    assert conv[1]["role"] == "user" and conv[1]["content"][0]["text"].startswith("Query: red\nCandidate: a red")
