"""InstructionSet: M-BEIR tsv parsing, task names, resolution order, prompt choice, application."""

from __future__ import annotations

from pathlib import Path

import pytest

from lumir.embed.instructions import (
    InstructionSet,
    apply_instruction,
    format_string,
    mbeir_task_name,
    resolve_instruction,
)
from lumir.errors import DataFormatError
from lumir.types import Item, Modality, Query

TSV = (
    "query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\tprompt_2\tprompt_3\tprompt_4\n"
    "text\timage\tMSCOCO\t9\tFind me an everyday image that matches the given caption.\t"
    "Identify the image showcasing the described everyday scene.\t\t\n"
    "image\ttext\tMSCOCO\t9\tFind an image caption describing the given everyday image.\t\t\t\n"
    "image,text\timage\tCIRR\t8\tRetrieve a day-to-day image that aligns with the modification instructions.\t"
    "p2\tp3\tp4\n"
)


@pytest.fixture
def tsv(tmp_path: Path) -> Path:
    path = tmp_path / "query_instructions.tsv"
    path.write_text(TSV, encoding="utf-8")
    return path


def test_format_string_mirrors_uniir() -> None:
    assert format_string(' "a dog on a sofa"\n') == "A dog on a sofa."
    assert format_string('a dog "') == "A dog ."  # UniIR strips whitespace before quotes; kept verbatim
    assert format_string("Is it red?") == "Is it red?"
    assert format_string("line\r") == "Line."
    assert format_string("") == "" and format_string(None) == ""


def test_mbeir_task_names() -> None:
    assert mbeir_task_name("MSCOCO", "text", "image") == "mscoco_task0"
    assert mbeir_task_name("WebQA", Modality.TEXT, Modality.TEXT) == "webqa_task1"
    assert mbeir_task_name("CIRR", "image,text", "image") == "cirr_task7"
    assert mbeir_task_name("OVEN", "text,image", "text,image") == "oven_task8"
    with pytest.raises(ValueError, match="not an M-BEIR task"):
        mbeir_task_name("X", "image", "image,text")  # task 5 is unused


def test_parse_mbeir_tsv(tsv: Path) -> None:
    s = InstructionSet.from_mbeir_tsv(tsv)
    assert set(s.tasks()) == {"mscoco_task0", "mscoco_task3", "cirr_task7"}
    assert s.by_task["mscoco_task0"] == (
        "Find me an everyday image that matches the given caption.",
        "Identify the image showcasing the described everyday scene.",
    )  # empty prompt columns dropped, like UniIR
    assert s.by_key[("8", "image,text", "image")][0].startswith("Retrieve a day-to-day image")
    assert len(s.by_task["cirr_task7"]) == 4


def test_tsv_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text(TSV + "text\tvideo\tX\t1\tprompt\n")
    with pytest.raises(DataFormatError, match=r"bad\.tsv, line 5"):
        InstructionSet.from_mbeir_tsv(bad)
    bad.write_text("a\tb\tc\td\n")
    with pytest.raises(DataFormatError, match="line 1: unexpected header"):
        InstructionSet.from_mbeir_tsv(bad)
    with pytest.raises(DataFormatError, match="not found"):
        InstructionSet.from_mbeir_tsv(tmp_path / "missing.tsv")


def test_resolution_order(tsv: Path) -> None:
    s = InstructionSet.from_mbeir_tsv(tsv)
    by_task = Query("q1", text="a dog", task="mscoco_task0")
    assert s.resolve(by_task) == "Find me an everyday image that matches the given caption."
    override = Query("q2", text="a dog", task="mscoco_task0", instruction="Custom.")
    assert s.resolve(override) == "Custom."  # query.instruction wins
    disabled = Query("q3", text="a dog", task="mscoco_task0", instruction="")
    assert s.resolve(disabled) is None  # "" disables explicitly
    by_key = Query("q4", image=b"png", meta={"dataset_id": 9, "cand_modality": "text"})
    assert s.resolve(by_key) == "Find an image caption describing the given everyday image."
    plain_item = Item("q5", text="x", meta={"dataset_id": "9", "candidate_modality": "image"})
    assert s.resolve(plain_item) == "Find me an everyday image that matches the given caption."
    assert s.resolve(Query("q6", text="x", task="unknown_task1")) is None
    assert resolve_instruction(override, None) == "Custom."
    assert resolve_instruction(by_task, None) is None


def test_random_choice_is_seeded_per_query_id(tsv: Path) -> None:
    s = InstructionSet.from_mbeir_tsv(tsv, choice="random", seed=3)
    queries = [Query(f"q{i}", text="x", task="cirr_task7") for i in range(40)]
    picks = [s.resolve(q) for q in queries]
    assert picks == [s.resolve(q) for q in queries]  # deterministic
    assert len(set(picks)) > 1  # but varied across queries
    other = InstructionSet.from_mbeir_tsv(tsv, choice="random", seed=4)
    assert picks != [other.resolve(q) for q in queries]
    first = InstructionSet.from_mbeir_tsv(tsv)
    assert {first.resolve(q) for q in queries} == {first.by_task["cirr_task7"][0]}


def test_dict_round_trip(tsv: Path) -> None:
    s = InstructionSet.from_mbeir_tsv(tsv, choice="random", seed=7)
    assert InstructionSet.from_dict(s.to_dict()) == s
    simple = InstructionSet.from_dict({"t1": "one", "t2": ["a", "", "b"]})
    assert simple.by_task == {"t1": ("one",), "t2": ("a", "b")}
    with pytest.raises(ValueError, match="no non-empty instruction"):
        InstructionSet.from_dict({"t": ["", " "]})
    with pytest.raises(ValueError, match="choice"):
        InstructionSet(choice="best")


def test_apply_instruction_uniir_and_templates() -> None:
    assert apply_instruction("a dog on a sofa", "find a matching image") == "Find a matching image. a dog on a sofa."
    assert apply_instruction(None, "find a caption for this image") == "Find a caption for this image."
    e5 = "Instruct: {instruction}\nQuery: {text}"
    assert (
        apply_instruction("what is it?", "Retrieve passages", e5) == "Instruct: Retrieve passages\nQuery: what is it?"
    )
    assert apply_instruction(None, "Retrieve passages", e5) == "Instruct: Retrieve passages\nQuery:"


def test_uniir_random_choice_is_reachable_from_a_file_spec(tsv: Path) -> None:
    from lumir.embed.base import as_instruction_set

    spec = {"path": str(tsv), "choice": "random", "seed": 3}
    s = as_instruction_set(spec)
    assert s == InstructionSet.from_mbeir_tsv(tsv, choice="random", seed=3) == InstructionSet.from_dict(spec)
    assert as_instruction_set(tsv) == InstructionSet.from_mbeir_tsv(tsv)  # a bare path: the first prompt
    assert as_instruction_set({"path": str(tsv)}) == InstructionSet.from_mbeir_tsv(tsv)
    assert InstructionSet.from_dict({"path": str(tsv)}, choice="random", seed=1).seed == 1
    with pytest.raises(ValueError, match="path, choice and seed"):
        as_instruction_set({"path": str(tsv), "choise": "random"})
    with pytest.raises(DataFormatError, match="not found"):
        as_instruction_set({"path": str(tsv.with_name("missing.tsv"))})


def test_random_choice_round_trips_through_the_embedder_spec(tsv: Path, tiny_clip_dir: Path) -> None:
    import json

    import torch

    from lumir.embed import load_embedder
    from lumir.types import Role

    e = load_embedder("clip:" + str(tiny_clip_dir), instructions={"path": str(tsv), "choice": "random", "seed": 5})
    spec = json.loads(json.dumps(e.spec()))
    assert spec["instructions"]["choice"] == "random" and spec["instructions"]["seed"] == 5
    rebuilt = load_embedder(spec)
    assert rebuilt.instructions == e.instructions and rebuilt.spec() == spec
    queries = [Query(f"q{i}", text="a red square", task="mscoco_task0") for i in range(12)]
    picks = [e.instructions.resolve(q) for q in queries]
    assert len(set(picks)) == 2  # both MSCOCO text->image prompts are drawn
    vectors = e.embed(queries, role=Role.QUERY)
    assert torch.equal(rebuilt.embed(queries, role=Role.QUERY), vectors)
    first = load_embedder("clip:" + str(tiny_clip_dir), instructions=str(tsv)).embed(queries, role=Role.QUERY)
    drew_second = [i for i, p in enumerate(picks) if p != e.instructions.by_task["mscoco_task0"][0]]
    assert drew_second and not torch.allclose(vectors[drew_second], first[drew_second])  # "first" differs there
