from __future__ import annotations

from pathlib import Path

import pytest

from lumir.collections import Corpus
from lumir.data.mbeir import (
    DATASET_IDS,
    MBEIR_TASKS,
    format_string,
    list_mbeir_tasks,
    load_mbeir_instructions,
    load_mbeir_pool,
    load_mbeir_qrels,
    load_mbeir_queries,
    mbeir_task,
    parse_task_name,
    task_metrics,
    task_modalities,
)
from lumir.errors import DataFormatError
from lumir.types import ImageRef, Modality, Query
from mbeir_files import _c, _jsonl, _q


def test_tables_match_uniir() -> None:
    assert DATASET_IDS["MSCOCO"] == 9 and DATASET_IDS["VisualNews"] == 0 and len(DATASET_IDS) == 10
    assert MBEIR_TASKS["image,text -> image"] == 7 and 5 not in MBEIR_TASKS.values() and len(MBEIR_TASKS) == 8
    assert task_modalities(2) == (Modality.TEXT, Modality.IMAGE_TEXT)
    assert task_metrics("FashionIQ") == ("R@10", "R@20", "R@50")
    assert task_metrics("mscoco") == ("R@1", "R@5", "R@10")
    with pytest.raises(ValueError, match="unknown M-BEIR task id 5"):
        task_modalities(5)


@pytest.mark.parametrize(
    ("raw", "formatted"),
    [
        ("a dog on a beach", "A dog on a beach."),
        ('  "quoted text"\r\n', "Quoted text."),
        ("is it red?", "Is it red?"),
        ("Stop!", "Stop!"),
        ("ends with period.", "Ends with period."),
        ("", ""),
        (None, ""),
        ('""', ""),
    ],
)
def test_format_string_as_uniir(raw: str | None, formatted: str) -> None:
    assert format_string(raw) == formatted


def test_load_pool_declared_modality_decides_the_fields(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "pool.jsonl",
        [
            _c("9:1", "ignored caption", "imgs/a.png", "image"),
            _c("9:2", "a caption", "imgs/unused.png", "text"),
            _c("9:3", "both", "imgs/b.png", "image,text"),
            _c("9:4", "both, other spelling", "imgs/c.png", "text,image"),
        ],
    )
    pool = load_mbeir_pool(path, tmp_path / "root")
    assert isinstance(pool, Corpus) and pool.ids == ["9:1", "9:2", "9:3", "9:4"]
    assert [it.modality.value for it in pool] == ["image", "text", "image,text", "image,text"]
    assert pool["9:1"].text is None
    assert pool["9:1"].image == ImageRef(str(tmp_path / "root" / "imgs" / "a.png"))
    assert pool["9:2"].image is None and pool["9:2"].text == "A caption."
    assert pool["9:3"].text == "Both."


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (_c("9:9", None, None, "text"), "candidate '9:9' is declared 'text' but 'txt' is empty"),
        (_c("9:9", "  ", None, "text"), "declared 'text' but 'txt' is empty"),
        (_c("9:9", "caption", None, "image"), "declared 'image' but has no 'img_path'"),
        (_c("9:9", None, "a.png", "image,text"), "declared 'image,text' but 'txt' is empty"),
        (_c("9:9", "x", None, "video"), "unknown modality 'video'"),
        ({"txt": "no did", "modality": "text"}, "'did' must be a non-empty string"),
        (_c("9:1", "dup", None, "text"), r"duplicate did '9:1' \(first on line 1\)"),
    ],
)
def test_load_pool_inconsistent_lines_name_file_and_line(tmp_path: Path, row: dict, message: str) -> None:
    path = _jsonl(tmp_path / "pool.jsonl", [_c("9:1", "fine", None, "text"), row])
    with pytest.raises(DataFormatError, match=message) as info:
        load_mbeir_pool(path, tmp_path)
    assert info.value.line == 2 and info.value.path == path


def test_load_queries_types_task_and_meta(mbeir_root: Path) -> None:
    pool = load_mbeir_pool(mbeir_root / "cand_pool/local/mbeir_cirr_task7_cand_pool.jsonl", mbeir_root)
    (q,) = load_mbeir_queries(mbeir_root / "query/test/mbeir_cirr_task7_test.jsonl", mbeir_root, pool=pool)
    assert isinstance(q, Query)
    assert q.id == "8:1" and q.task == "cirr_task7" and q.instruction is None
    assert q.modality is Modality.IMAGE_TEXT and q.text == "Make it blue."
    assert q.image == ImageRef(str(mbeir_root / "mbeir_images/cirr_images/red.png"))
    assert q.image.load().getpixel((0, 0)) == (220, 30, 30)
    assert q.meta == {
        "dataset_id": "8",
        "task_id": 7,
        "query_modality": "image,text",
        "cand_modality": "image",
        "pos_cand_list": ["8:3"],
        "neg_cand_list": ["8:2"],
    }


def test_load_queries_modalities_of_each_kind(mbeir_root: Path) -> None:
    text_qs = load_mbeir_queries(mbeir_root / "query/test/mbeir_mscoco_task0_test.jsonl", mbeir_root)
    assert [q.modality for q in text_qs] == [Modality.TEXT, Modality.TEXT]
    assert [q.text for q in text_qs] == ["A red photo.", "Green thing."]
    assert all(q.task == "mscoco_task0" and q.meta["cand_modality"] == "image" for q in text_qs)
    image_qs = load_mbeir_queries(mbeir_root / "query/test/mbeir_mscoco_task3_test.jsonl", mbeir_root)
    assert [q.modality for q in image_qs] == [Modality.IMAGE, Modality.IMAGE]
    assert all(q.text is None and q.meta["cand_modality"] == "text" for q in image_qs)


def test_cand_modality_prefers_a_positive_of_the_query_dataset(mbeir_root: Path) -> None:
    """UniIR's eval mode keeps positives from the query's own dataset (the OVEN / INFOSEEK case)."""
    pool = load_mbeir_pool(mbeir_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl", mbeir_root)
    (q,) = load_mbeir_queries(mbeir_root / "query/test/mbeir_infoseek_task6_test.jsonl", mbeir_root, pool=pool)
    assert q.meta["pos_cand_list"] == ["5:1", "6:1"]
    assert pool["5:1"].modality is Modality.IMAGE_TEXT
    assert q.meta["cand_modality"] == "text"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (_q("9:7", "x", None, "text", ["9:1"], 5), "'task_id' must be one of"),
        ({**_q("9:7", "x", None, "text", ["9:1"], 0), "task_id": None}, "'task_id' must be one of"),
        (_q("42:1", "x", None, "text", ["9:1"], 0), "id '42:1' is not '<dataset id>:<n>'"),
        (_q("abc", "x", None, "text", ["9:1"], 0), "id 'abc' is not"),
        (_q("9:7", None, None, "text", ["9:1"], 0), "query '9:7' is declared 'text' but 'query_txt' is empty"),
        (_q("9:7", "x", None, "image,text", ["9:1"], 7), "declared 'image,text' but has no 'query_img_path'"),
        ({**_q("9:7", "x", None, "text", ["9:1"], 0), "pos_cand_list": "9:1"}, "'pos_cand_list' must be a list"),
        (_q("9:1", "x", None, "text", ["9:1"], 0), "duplicate qid '9:1'"),
    ],
)
def test_load_queries_bad_lines_name_file_and_line(tmp_path: Path, row: dict, message: str) -> None:
    path = _jsonl(tmp_path / "q.jsonl", [_q("9:1", "fine", None, "text", ["9:1"], 0), row])
    with pytest.raises(DataFormatError, match=message) as info:
        load_mbeir_queries(path, tmp_path)
    assert info.value.line == 2


def test_load_qrels_keeps_positive_relevance_only(mbeir_root: Path) -> None:
    qrels = load_mbeir_qrels(mbeir_root / "qrels/test/mbeir_mscoco_task0_test_qrels.txt")
    assert qrels == {"9:1": {"9:1": 1}, "9:2": {"9:2": 1}}


def test_load_instructions_keys_and_prompts(mbeir_root: Path) -> None:
    table = load_mbeir_instructions(mbeir_root / "instructions/query_instructions.tsv")
    assert set(table) == {("9", "text", "image"), ("9", "image", "text"), ("8", "image,text", "image")}
    assert table["9", "text", "image"] == [
        "Identify the image showcasing the described everyday scene.",
        "Retrieve an image that matches the caption.",
    ]
    assert table["9", "image", "text"] == ["Find a caption for the image."]


def test_instructions_match_query_meta(mbeir_root: Path) -> None:
    table = load_mbeir_instructions(mbeir_root / "instructions/query_instructions.tsv")
    task = mbeir_task(mbeir_root, "MSCOCO", 3)
    for q in task.queries:
        assert (q.meta["dataset_id"], q.meta["query_modality"], q.meta["cand_modality"]) in table


def test_load_instructions_short_row(tmp_path: Path) -> None:
    path = tmp_path / "i.tsv"
    path.write_text("header\ntext\timage\tMSCOCO\n")
    with pytest.raises(DataFormatError, match=r"i\.tsv, line 2"):
        load_mbeir_instructions(path)


def test_list_tasks(mbeir_root: Path) -> None:
    names = list_mbeir_tasks(mbeir_root)
    assert names == ["cirr_task7", "infoseek_task6", "mscoco_task0", "mscoco_task3", "webqa_task2"]
    assert list_mbeir_tasks(mbeir_root, "val") == ["mscoco_task0"]
    assert list_mbeir_tasks(mbeir_root, "train") == []
    assert [parse_task_name(n) for n in names][:3] == [("cirr", 7), ("infoseek", 6), ("mscoco", 0)]
    assert [mbeir_task(mbeir_root, *parse_task_name(n)).name for n in names[2:]] == names[2:]
    with pytest.raises(ValueError, match="look like 'mscoco_task0'"):
        parse_task_name("mscoco-0")


def test_mbeir_task_local_pool(mbeir_root: Path) -> None:
    task = mbeir_task(mbeir_root, "mscoco", 0)
    assert task.name == "mscoco_task0"
    assert (task.query_modality, task.candidate_modality) == (Modality.TEXT, Modality.IMAGE)
    assert task.corpus.ids == ["9:1", "9:2", "9:3"]  # MSCOCO's per-split local pool
    assert [q.id for q in task.queries] == ["9:1", "9:2"]
    assert task.qrels == {"9:1": {"9:1": 1}, "9:2": {"9:2": 1}}
    assert task.metrics == ("R@1", "R@5", "R@10")
    assert task.meta["pool"] == "local" and task.meta["dataset"] == "MSCOCO" and task.meta["dataset_id"] == "9"
    assert task.meta["instructions_path"] == str(mbeir_root / "instructions/query_instructions.tsv")
    webqa = mbeir_task(mbeir_root, "WebQA", 2)
    assert webqa.corpus.modalities().tolist() == ["image,text", "image,text"]
    assert webqa.candidate_modality is Modality.IMAGE_TEXT


def test_mbeir_task_global_pool_and_a_shared_corpus(mbeir_root: Path) -> None:
    task = mbeir_task(mbeir_root, "cirr", 7, pool="global")
    assert len(task.corpus) == 14 and set(task.corpus.modalities()) == {"text", "image", "image,text"}
    assert task.qrels == {"8:1": {"8:3": 1}} and task.meta["pool"] == "global"
    shared = mbeir_task(mbeir_root, "mscoco", 3, pool="global", corpus=task.corpus)
    assert shared.corpus is task.corpus
    assert shared.qrels == {"9:3": {"9:13": 1}, "9:4": {"9:11": 1}}


def test_mbeir_task_local_pool_warns_about_positives_outside_it(mbeir_root: Path) -> None:
    with pytest.warns(UserWarning, match="1 unknown candidate id"):
        task = mbeir_task(mbeir_root, "INFOSEEK", 6)
    assert task.qrels == {"6:1": {"6:1": 1}}


def test_mbeir_task_errors(mbeir_root: Path) -> None:
    with pytest.raises(ValueError, match="unknown M-BEIR dataset 'coco'"):
        mbeir_task(mbeir_root, "coco", 0)
    with pytest.raises(ValueError, match="pool must be 'local' or 'global'"):
        mbeir_task(mbeir_root, "mscoco", 0, pool="union")  # type: ignore[arg-type]
    with pytest.raises(
        FileNotFoundError, match=r"mbeir_mscoco_task1_test\.jsonl.*tasks with query files for 'test': \['cirr_task7'"
    ):
        mbeir_task(mbeir_root, "mscoco", 1)
