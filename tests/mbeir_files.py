"""Tiny M-BEIR files in UniIR's exact schema and layout, shared by the data and eval tests."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

__all__ = ["IMG", "_c", "_jsonl", "_q", "write_tiny_mbeir"]

IMG = "mbeir_images/{}/{}.png"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _q(qid: str, txt: str | None, img: str | None, modality: str, pos: list[str], task_id: int, neg=()) -> dict:
    return {
        "qid": qid,
        "query_txt": txt,
        "query_img_path": img,
        "query_modality": modality,
        "query_src_content": None,
        "pos_cand_list": pos,
        "neg_cand_list": list(neg),
        "task_id": task_id,
    }


def _c(did: str, txt: str | None, img: str | None, modality: str) -> dict:
    return {"did": did, "txt": txt, "img_path": img, "modality": modality, "src_content": None}


def write_tiny_mbeir(tmp_path: Path) -> Path:
    """A tiny M-BEIR in UniIR's layout: MSCOCO task 0 and 3, CIRR task 7, WebQA task 2, INFOSEEK task 6."""
    root = tmp_path / "M-BEIR"
    colors = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "white": (245, 245, 245)}
    for sub in ("mscoco_images", "cirr_images", "webqa_images", "infoseek_images"):
        (root / "mbeir_images" / sub).mkdir(parents=True)
        for name, rgb in colors.items():
            Image.new("RGB", (8, 8), rgb).save(root / IMG.format(sub, name))
    coco_imgs = [
        _c(f"9:{i}", None, IMG.format("mscoco_images", c), "image") for i, c in enumerate(["red", "green", "blue"], 1)
    ]
    coco_txts = [_c(f"9:{10 + i}", f"a {c} photo", None, "text") for i, c in enumerate(["red", "green", "blue"], 1)]
    cirr = [
        _c(f"8:{i}", None, IMG.format("cirr_images", c), "image") for i, c in enumerate(["red", "green", "blue"], 1)
    ]
    webqa = [
        _c("2:1", "Red things", IMG.format("webqa_images", "red"), "image,text"),
        _c("2:2", "Blue sky", IMG.format("webqa_images", "blue"), "image,text"),
    ]
    oven = [_c("5:1", "Wiki: red", IMG.format("infoseek_images", "red"), "image,text")]
    infoseek = [_c("6:1", "The colour red", None, "text"), _c("6:2", "The colour blue", None, "text")]
    local = root / "cand_pool" / "local"
    _jsonl(local / "mbeir_mscoco_task0_test_cand_pool.jsonl", coco_imgs)
    _jsonl(local / "mbeir_mscoco_task3_test_cand_pool.jsonl", coco_txts)
    _jsonl(local / "mbeir_cirr_task7_cand_pool.jsonl", cirr)
    _jsonl(local / "mbeir_webqa_task2_cand_pool.jsonl", webqa)
    _jsonl(local / "mbeir_infoseek_task6_cand_pool.jsonl", infoseek)
    _jsonl(
        root / "cand_pool" / "global" / "mbeir_union_test_cand_pool.jsonl",
        coco_imgs + coco_txts + cirr + webqa + oven + infoseek,
    )
    qdir = root / "query" / "test"
    _jsonl(
        qdir / "mbeir_mscoco_task0_test.jsonl",
        [
            _q("9:1", "a red photo", None, "text", ["9:1"], 0),
            _q("9:2", ' "green thing"\r', None, "text", ["9:2"], 0),
        ],
    )
    _jsonl(
        qdir / "mbeir_mscoco_task3_test.jsonl",
        [
            _q("9:3", None, IMG.format("mscoco_images", "blue"), "image", ["9:13"], 3),
            _q("9:4", None, IMG.format("mscoco_images", "red"), "image", ["9:11"], 3),
        ],
    )
    _jsonl(
        qdir / "mbeir_cirr_task7_test.jsonl",
        [
            _q("8:1", "make it blue", IMG.format("cirr_images", "red"), "image,text", ["8:3"], 7, neg=["8:2"]),
        ],
    )
    _jsonl(qdir / "mbeir_webqa_task2_test.jsonl", [_q("2:1", "what is red?", None, "text", ["2:1"], 2)])
    _jsonl(
        qdir / "mbeir_infoseek_task6_test.jsonl",
        [
            _q("6:1", "Which colour is this?", IMG.format("infoseek_images", "red"), "image,text", ["5:1", "6:1"], 6),
        ],
    )
    (qdir / "mbeir_mscoco_task0_val.jsonl").write_text("")  # wrong split for this folder: not listed
    _jsonl(root / "query" / "val" / "mbeir_mscoco_task0_val.jsonl", [])
    qrels = root / "qrels" / "test"
    qrels.mkdir(parents=True)
    (qrels / "mbeir_mscoco_task0_test_qrels.txt").write_text("9:1 0 9:1 1 0\n9:2 0 9:2 1 0\n9:2 0 9:3 0 0\n")
    (qrels / "mbeir_mscoco_task3_test_qrels.txt").write_text("9:3 0 9:13 1 3\n9:4 0 9:11 1 3\n")
    (qrels / "mbeir_cirr_task7_test_qrels.txt").write_text("8:1 0 8:3 1 7\n")
    (qrels / "mbeir_webqa_task2_test_qrels.txt").write_text("2:1 0 2:1 1 2\n")
    (qrels / "mbeir_infoseek_task6_test_qrels.txt").write_text("6:1 0 5:1 1 6\n6:1 0 6:1 1 6\n")
    (root / "instructions").mkdir()
    (root / "instructions" / "query_instructions.tsv").write_text(
        "query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\tprompt_2\tprompt_3\n"
        "text\timage\tMSCOCO\t9\tIdentify the image showcasing the described everyday scene.\t"
        "Retrieve an image that matches the caption.\t\n"
        "image\ttext\tMSCOCO\t9\tFind a caption for the image.\t\t\n"
        "image,text\timage\tCIRR\t8\tRetrieve a day-to-day image that aligns with the modification instructions.\n"
    )
    return root
