from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import pytest

from lumir.data.beir import BEIR_METRICS, load_beir
from lumir.errors import DataFormatError
from lumir.types import Modality


def _beir(root: Path, corpus: list[dict], queries: list[dict], qrels: str, split: str = "test") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "Cats purr."},
    {"_id": "d2", "title": "", "text": "  Dogs bark. "},
    {"_id": "d3", "text": "No title key."},
]
QUERIES = [
    {"_id": "q1", "text": "what purrs", "metadata": {}},
    {"_id": "q2", "text": "what barks"},
    {"_id": "q3", "text": "not in the split"},
]


def test_load_beir_joins_title_and_text_like_mteb(tmp_path: Path) -> None:
    root = _beir(tmp_path / "beir-toy", CORPUS, QUERIES, "q1\td1\t1\nq2\td2\t1\nq2\td3\t0\n")
    task = load_beir(root)
    assert task.name == "beir/toy"
    assert [it.text for it in task.corpus] == ["Cats Cats purr.", "Dogs bark.", "No title key."]
    assert task.corpus["d1"].meta == {"title": "Cats"}
    assert [q.id for q in task.queries] == ["q1", "q2"]  # only queries judged in the split
    assert task.queries[0].text == "what purrs" and task.queries[0].task == "beir/toy"
    assert task.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 0}}
    assert task.query_modality is Modality.TEXT and task.candidate_modality is Modality.TEXT
    assert task.metrics == BEIR_METRICS == ("nDCG@10", "R@100", "MRR@10", "mAP@100")


def test_load_beir_split_and_name(tmp_path: Path) -> None:
    root = _beir(tmp_path / "toy", CORPUS, QUERIES, "q3\td1\t1\n", split="dev")
    task = load_beir(root, split="dev", name="my-task")
    assert task.name == "my-task" and [q.id for q in task.queries] == ["q3"]


def test_load_beir_warns_about_judgments_naming_unknown_ids(tmp_path: Path) -> None:
    root = _beir(tmp_path / "toy", CORPUS, QUERIES, "q1\td1\t1\nq1\tnope\t1\nq7\td1\t1\nq2\tgone\t1\n")
    with pytest.warns(UserWarning, match="2 unknown candidate ids and 1 unknown query id"):
        task = load_beir(root)
    assert task.qrels == {"q1": {"d1": 1}}
    assert [q.id for q in task.queries] == ["q1"]


def test_load_beir_missing_files_say_what_is_expected(tmp_path: Path) -> None:
    root = _beir(tmp_path / "toy", CORPUS, QUERIES, "q1\td1\t1\n")
    with pytest.raises(FileNotFoundError, match=r"qrels/train\.tsv.*qrels splits found: \['test'\]"):
        load_beir(root, split="train")


def test_load_beir_bad_corpus_line_names_file_and_line(tmp_path: Path) -> None:
    root = _beir(tmp_path / "toy", [*CORPUS, {"title": "no id"}], QUERIES, "q1\td1\t1\n")
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl, line 4: '_id' must be a string"):
        load_beir(root)


def test_load_beir_skips_empty_candidates_with_a_warning(tmp_path: Path) -> None:
    root = _beir(tmp_path / "toy", [*CORPUS, {"_id": "empty", "title": "", "text": " "}], QUERIES, "q1\td1\t1\n")
    with pytest.warns(UserWarning, match="1 candidate\\(s\\) have neither title nor text"):
        task = load_beir(root)
    assert "empty" not in task.corpus and len(task.corpus) == 3


@pytest.mark.realdata
def test_load_real_scifact(data_root: Path) -> None:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real files are consistent: no judgment is dropped
        task = load_beir(data_root / "beir-scifact")
    elapsed = time.perf_counter() - start
    assert task.name == "beir/scifact"
    assert len(task.queries) == 300
    assert len(task.corpus) == 5183
    assert sum(len(j) for j in task.qrels.values()) == 339
    assert elapsed < 3.0, f"loading SciFact took {elapsed:.1f}s"
    doc = task.corpus["4983"]
    assert doc.text.startswith("Microstructural development of human newborn cerebral white matter")
    assert doc.text.startswith(doc.meta["title"] + " Alterations")
