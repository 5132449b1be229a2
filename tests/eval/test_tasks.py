from __future__ import annotations

from pathlib import Path

import pytest

from lumir.eval.evaluator import evaluate
from lumir.eval.tasks import default_data_root, load_tasks, parse_task_spec
from lumir.pipeline import PipelineSpec
from lumir.testing.fakes import ColorEmbedder
from lumir.types import Modality


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("scifact", {"type": "scifact", "path": "beir-scifact"}),
        ("scifact:dev", {"type": "scifact", "path": "beir-scifact", "split": "dev"}),
        ("beir:/x/y", {"type": "beir", "path": "/x/y", "split": "test"}),
        ("beir:/x/y:dev", {"type": "beir", "path": "/x/y", "split": "dev"}),
        ("flickr8k", {"type": "flickr8k"}),
        ("flickr8k/t2i", {"type": "flickr8k", "direction": "t2i"}),
        ("flickr8k/i2t:/d/f8k", {"type": "flickr8k", "path": "/d/f8k", "direction": "i2t"}),
        ("flickr8k-union", {"type": "flickr8k-union"}),
        ("flickr8k-union:train_4k", {"type": "flickr8k-union", "split": "train_4k"}),
        (
            "flickr8k-union/t2i:/d/f8k:test_1k",
            {"type": "flickr8k-union", "path": "/d/f8k", "split": "test_1k", "direction": "t2i"},
        ),
        ("mbeir:/m:mscoco_task0,cirr_task7", {"type": "mbeir", "path": "/m", "tasks": ["mscoco_task0", "cirr_task7"]}),
        ("mbeir:/m", {"type": "mbeir", "path": "/m", "tasks": None}),
        ("toy", {"type": "toy"}),
    ],
)
def test_parse_task_spec(spec: str, expected: dict) -> None:
    assert parse_task_spec(spec) == expected


def test_bad_specs_say_what_is_valid() -> None:
    with pytest.raises(
        KeyError, match="unknown task 'imagenet'; known: beir, flickr8k, flickr8k-union, karpathy, mbeir"
    ):
        parse_task_spec("imagenet")
    with pytest.raises(KeyError, match="has no 'type'"):
        parse_task_spec({"path": "x"})
    with pytest.raises(ValueError, match="IMAGE_ROOT"):
        load_tasks("karpathy:/tmp/x.json")


def test_missing_data_root_says_what_to_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMIR_DATA", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="pass --data PATH or set LUMIR_DATA"):
        default_data_root()
    assert default_data_root(tmp_path) == tmp_path


def test_mbeir_tasks_from_files_evaluate_end_to_end(mbeir_root: Path) -> None:
    tasks = load_tasks(f"mbeir:{mbeir_root}:mscoco_task0,mscoco_task3")
    assert [t.name for t in tasks] == ["mscoco_task0", "mscoco_task3"]
    assert tasks[0].query_modality is Modality.TEXT and tasks[0].candidate_modality is Modality.IMAGE
    result = evaluate(PipelineSpec(candidate_modality="auto"), tasks, embedder=ColorEmbedder(), k=10)
    # "a red photo" -> red image, "green thing" -> green image: colour words decide
    assert result.score("mscoco_task0", "R@1") == 1.0
    assert tasks[0].spec() == {
        "type": "mbeir",
        "path": str(mbeir_root),
        "tasks": ["mscoco_task0"],
        "split": "test",
        "pool": "local",
    }
    assert [t.name for t in load_tasks(tasks[1].spec())] == ["mscoco_task3"]  # a task's spec rebuilds it
    all_tasks = load_tasks({"type": "mbeir", "path": str(mbeir_root), "pool": "global"})
    assert len(all_tasks) == 5 and all(len(t.corpus) == 14 for t in all_tasks)
    assert len({id(t.corpus) for t in all_tasks}) == 1  # the global pool is loaded once and shared


@pytest.mark.realdata
def test_real_tasks_load(data_root: Path) -> None:
    (scifact,) = load_tasks("scifact", data=data_root)
    assert (len(scifact.queries), len(scifact.corpus)) == (300, 5183)
    (i2t,) = load_tasks("flickr8k/i2t", data=data_root)
    assert i2t.name == "flickr8k/i2t" and len(i2t.queries) == 1000
