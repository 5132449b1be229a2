from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumir.collections import Rankings
from lumir.errors import DataFormatError
from lumir.io.trec import check_qrels, read_qrels, read_run, write_qrels, write_run


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_qrels_trec_four_columns_keeps_every_grade(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.txt", "q1 0 d1 1\nq1 0 d2 0\n\nq2 0 d1 2\nq3 Q0 d9 -1\n")
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d1": 2}, "q3": {"d9": -1}}


def test_read_qrels_mbeir_five_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.txt", "9:1 0 9:10 1 0\n9:1 0 9:11 1 0\n9:2 0 9:12 1 0\n")
    assert read_qrels(path) == {"9:1": {"9:10": 1, "9:11": 1}, "9:2": {"9:12": 1}}


def test_read_qrels_beir_tsv_with_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\n1\t31715818\t1\n3\t14717500\t1\n")
    assert read_qrels(path) == {"1": {"31715818": 1}, "3": {"14717500": 1}}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("q1 0 d1 1\nq1 0 d2\n", 2, "3 columns, but earlier lines have 4"),
        ("q1 0 d1 1\nq1 d2\n", 2, "got 2 column"),
        ("q1 0 d1 1\nq1 0 d2 yes\n", 2, "relevance must be an integer, got 'yes'"),
        ("q1 0 d1 1\nq1 0 d1 2\n", 2, "judges candidate 'd1' twice, as 1 and as 2"),
        ("a b c d e f g\n", 1, "got 7 column"),
    ],
)
def test_read_qrels_malformed_lines_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = _write(tmp_path / "bad.txt", text)
    with pytest.raises(DataFormatError, match=message) as info:
        read_qrels(path)
    assert info.value.line == line and info.value.path == path


def test_read_qrels_accepts_a_repeated_identical_judgment(tmp_path: Path) -> None:
    assert read_qrels(_write(tmp_path / "q.txt", "q 0 d 1\nq 0 d 1\n")) == {"q": {"d": 1}}


def test_write_qrels_is_trec_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    write_qrels(path, {"q1": {"d1": 1, "d2": 0}})
    assert path.read_text() == "q1 0 d1 1\nq1 0 d2 0\n"
    with pytest.raises(ValueError, match="contains whitespace"):
        write_qrels(path, {"q1": {"d 1": 1}})
    assert path.read_text() == "q1 0 d1 1\nq1 0 d2 0\n"


def test_write_run_and_read_run(tmp_path: Path) -> None:
    rankings = Rankings.from_run({"q1": {"a": 0.5, "b": 0.9, "c": 0.1}, "q2": {"x": 1.0}}, k=3)
    path = tmp_path / "run.txt"
    write_run(path, rankings, run_name="test")
    assert path.read_text().splitlines() == [
        "q1 Q0 b 1 0.9 test",
        "q1 Q0 a 2 0.5 test",
        "q1 Q0 c 3 0.1 test",
        "q2 Q0 x 1 1.0 test",
    ]
    back = read_run(path)
    assert back.query_ids == ["q1", "q2"]
    assert back.to_run() == rankings.to_run()
    assert back.k == 3 and back.ids[1, 1] == ""
    top1 = read_run(path, k=1)
    assert top1.k == 1 and list(top1.ids[:, 0]) == ["b", "x"]


def test_read_run_orders_by_score_and_accepts_uniir_task_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "run.txt", "q Q0 low 1 0.1 r 0\nq Q0 high 2 0.7 r 0\nq Q0 tie 3 0.7 r 0\n")
    ((_, hits),) = list(read_run(path))
    assert [h.id for h in hits] == ["high", "tie", "low"]  # ties keep the file's rank order


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("q Q0 a 1 0.5\n", 1, "got 5 column"),
        ("q Q0 a 1 0.5 r\nq Q0 b x 0.4 r\n", 2, "rank must be an integer"),
        ("q Q0 a 1 high r\n", 1, "score must be a number"),
        ("q Q0 a 1 nan r\n", 1, "NaN"),
        ("q Q0 a 1 0.5 r\nq Q0 a 2 0.4 r\n", 2, "listed twice"),
    ],
)
def test_read_run_malformed_lines_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = _write(tmp_path / "run.txt", text)
    with pytest.raises(DataFormatError, match=message) as info:
        read_run(path)
    assert info.value.line == line


def test_write_run_rejects_ids_with_spaces_and_keeps_old_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "run.txt", "old\n")
    with pytest.raises(ValueError, match="run name"):
        write_run(path, Rankings.from_run({"q": {"a": 1.0}}), run_name="my run")
    with pytest.raises(ValueError, match="candidate id 'a b'"):
        write_run(path, Rankings.from_run({"q": {"a b": 1.0}}))
    assert path.read_text() == "old\n"


def test_check_qrels_drops_unknown_ids_with_one_warning() -> None:
    qrels = {"q1": {"a": 1, "x": 1, "y": 0}, "q2": {"z": 1}, "q9": {"a": 1}}
    with pytest.warns(UserWarning) as caught:
        clean, counts = check_qrels(qrels, ["q1", "q2"], ["a", "b"])
    assert len(caught) == 1
    assert str(caught[0].message) == (
        "qrels name 3 unknown candidate ids and 1 unknown query id; they were ignored (4 judgments dropped)"
    )
    assert clean == {"q1": {"a": 1}}
    assert counts == {"unknown_query_ids": 1, "unknown_candidate_ids": 3, "dropped_judgments": 4}


def test_check_qrels_is_silent_when_everything_is_known() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean, counts = check_qrels({"q": {"a": 1}}, ["q", "other"], ["a"])
    assert clean == {"q": {"a": 1}}
    assert counts == {"unknown_query_ids": 0, "unknown_candidate_ids": 0, "dropped_judgments": 0}


# --- round trips -------------------------------------------------------------------------------------------------

_ids = st.from_regex(r"[A-Za-z0-9_:\-\.#/]{1,10}", fullmatch=True)


@settings(max_examples=50, deadline=None)
@given(qrels=st.dictionaries(_ids, st.dictionaries(_ids, st.integers(-2, 5), min_size=1, max_size=5), max_size=5))
def test_qrels_round_trip_is_identity(qrels: dict[str, dict[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "qrels.txt"
        write_qrels(path, qrels)
        assert read_qrels(path) == qrels


_scores = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=50, deadline=None)
@given(run=st.dictionaries(_ids, st.dictionaries(_ids, _scores, min_size=1, max_size=6), max_size=5))
def test_run_round_trip_is_identity(run: dict[str, dict[str, float]]) -> None:
    rankings = Rankings.from_run(run)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.txt"
        write_run(path, rankings)
        back = read_run(path)
    assert back.query_ids == rankings.query_ids
    np.testing.assert_array_equal(back.ids, rankings.ids)
    np.testing.assert_array_equal(back.scores, rankings.scores)
