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


def _required_markers(task: str) -> set[str]:
    """The markers a task's modalities call for (M-BEIR task id -> query and candidate modality)."""
    from lumir.embed.instructions import MBEIR_TASK_IDS

    qmod, cmod = next(pair for pair, tid in MBEIR_TASK_IDS.items() if task.endswith(f"_task{tid}"))
    parts = {"<qimg>": ("image", qmod), "<qtxt>": ("text", qmod), "<cimg>": ("image", cmod), "<ctxt>": ("text", cmod)}
    return {marker for marker, (kind, modality) in parts.items() if kind in modality.value.split(",")}


def test_table13_omits_exactly_the_documented_images() -> None:
    from lumir.rerank.prompts import TABLE13_OMISSIONS

    # Table 13's tasks 3 (EDIS, WebQA), 7 (FashionIQ, CIRR) and 8 (OVEN, InfoSeek), as M-BEIR task names
    assert TABLE13_OMISSIONS == {
        "edis_task2": "<cimg>",
        "webqa_task2": "<cimg>",
        "fashioniq_task7": "<qimg>",
        "cirr_task7": "<qimg>",
        "oven_task8": "<cimg>",
        "infoseek_task8": "<cimg>",
    }
    for task, prompt in MBEIR_TRUE_FALSE_PROMPTS.items():
        missing = _required_markers(task) - set(template_markers(prompt))
        assert missing == ({TABLE13_OMISSIONS[task]} if task in TABLE13_OMISSIONS else set()), task


def test_full_variant_adds_only_the_missing_markers() -> None:
    from lumir.rerank.prompts import MBEIR_TRUE_FALSE_PROMPTS_FULL, PROMPT_TABLES, TABLE13_OMISSIONS

    assert PROMPT_TABLES == {"table13": MBEIR_TRUE_FALSE_PROMPTS, "full": MBEIR_TRUE_FALSE_PROMPTS_FULL}
    assert set(MBEIR_TRUE_FALSE_PROMPTS_FULL) == set(MBEIR_16)
    for task, full in MBEIR_TRUE_FALSE_PROMPTS_FULL.items():
        assert set(template_markers(full)) == _required_markers(task), task
        verbatim = MBEIR_TRUE_FALSE_PROMPTS[task]
        if task in TABLE13_OMISSIONS:
            assert full.count(TABLE13_OMISSIONS[task]) == 1
            assert full.replace(TABLE13_OMISSIONS[task] + "\n", "") == verbatim, task  # same words otherwise
        else:
            assert full == verbatim, task
    assert MBEIR_TRUE_FALSE_PROMPTS_FULL["cirr_task7"] == (
        "<qimg>\n<cimg>\nCaption:<qtxt>\nDoes the above caption describe the modification of the image? True or False"
    )
    q = Query("q", text="x", task="oven_task8")
    assert true_false_prompt(q, Modality.IMAGE_TEXT).template == MBEIR_TRUE_FALSE_PROMPTS["oven_task8"]
    assert (
        true_false_prompt(q, Modality.IMAGE_TEXT, table="full").source
        == "MM-Embed Table 13, full content (oven_task8)"
    )
    assert true_false_prompt(Query("q", text="x", task="mscoco_task0"), Modality.IMAGE, table="full").source == (
        "MM-Embed Table 13 (mscoco_task0)"
    )
    with pytest.raises(ValueError, match="unknown prompt table"):
        true_false_prompt(q, Modality.IMAGE_TEXT, table="table14")


def test_true_false_reranker_prompt_table_option() -> None:
    from PIL import Image

    from lumir.rerank import load_reranker

    reference, target = Image.new("RGB", (8, 8), (200, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 200))
    query = Query("q", text="make it blue", image=reference, task="cirr_task7")
    cand = Item("c", image=target)
    chat = ScriptedChatModel()

    def images(reranker: TrueFalseReranker) -> list[object]:
        parts = reranker.conversation(query, cand)[-1]["content"]
        return [p["image"].load().getpixel((0, 0)) for p in parts if p["type"] == "image"]

    verbatim = TrueFalseReranker(chat)
    assert images(verbatim) == [(0, 0, 200)]  # Table 13 as printed: the candidate only
    full = TrueFalseReranker(chat, prompt_table="full")
    assert images(full) == [(200, 0, 0), (0, 0, 200)]  # the reference image, then the candidate
    text = "".join(p["text"] for p in full.conversation(query, cand)[-1]["content"] if p["type"] == "text")
    assert (
        text
        == "\n\nCaption:make it blue\nDoes the above caption describe the modification of the image? True or False"
    )
    assert "prompt_table" not in verbatim.spec() and full.spec()["prompt_table"] == "full"
    rebuilt = load_reranker(full.spec(), llm=chat)
    assert isinstance(rebuilt, TrueFalseReranker) and rebuilt.prompt_table == "full"
    assert load_reranker("true-false:prompt_table=full", chat).prompt_table == "full"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="prompt_table"):
        TrueFalseReranker(chat, prompt_table="table14")
