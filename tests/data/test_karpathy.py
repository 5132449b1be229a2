from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lumir.data.karpathy import karpathy_tasks, load_karpathy
from lumir.errors import DataFormatError
from lumir.types import Modality

TEST_FORMAT = [
    {"image": "val2014/a.jpg", "caption": ["A dog runs. ", "A brown dog."]},
    {"image": "val2014/b.jpg", "caption": ["Two cats."]},
]


def _json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_load_karpathy_without_images_returns_captions_naming_their_image(tmp_path: Path) -> None:
    images, captions = load_karpathy(_json(tmp_path / "test.json", TEST_FORMAT))
    assert images == []
    assert [(c.id, c.text, c.meta["image"]) for c in captions] == [
        ("val2014/a.jpg#0", "A dog runs.", "val2014/a.jpg"),
        ("val2014/a.jpg#1", "A brown dog.", "val2014/a.jpg"),
        ("val2014/b.jpg#0", "Two cats.", "val2014/b.jpg"),
    ]


def test_train_format_one_caption_per_entry_is_gathered_per_image(tmp_path: Path) -> None:
    train = [
        {"image": "x.jpg", "caption": "first", "image_id": "1"},
        {"image": "y.jpg", "caption": "other", "image_id": "2"},
        {"image": "x.jpg", "caption": "second", "image_id": "1"},
    ]
    _, captions = load_karpathy(_json(tmp_path / "train.json", train))
    assert [c.id for c in captions] == ["x.jpg#0", "x.jpg#1", "y.jpg#0"]


def test_load_karpathy_with_images_and_tasks(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    (root / "val2014").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (4, 4)).save(root / "val2014" / name)
    path = _json(tmp_path / "coco_karpathy_test.json", TEST_FORMAT)
    images, _ = load_karpathy(path, root)
    assert [im.id for im in images] == ["val2014/a.jpg", "val2014/b.jpg"]
    assert images[0].image.load().size == (4, 4)
    t2i, i2t = karpathy_tasks(path, root)
    assert t2i.name == "coco_karpathy_test/t2i" and i2t.name == "coco_karpathy_test/i2t"
    assert (t2i.query_modality, t2i.candidate_modality) == (Modality.TEXT, Modality.IMAGE)
    assert i2t.qrels == {
        "val2014/a.jpg": {"val2014/a.jpg#0": 1, "val2014/a.jpg#1": 1},
        "val2014/b.jpg": {"val2014/b.jpg#0": 1},
    }
    assert karpathy_tasks(path, root, name="coco5k")[0].name == "coco5k/t2i"


def test_karpathy_tasks_need_images(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="need the images"):
        karpathy_tasks(_json(tmp_path / "t.json", TEST_FORMAT), None)  # type: ignore[arg-type]


def test_missing_images_give_count_and_first_names(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"2 of 2 listed images are missing .*val2014/a\.jpg"):
        load_karpathy(_json(tmp_path / "t.json", TEST_FORMAT), tmp_path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"image": "a.jpg"}, "expected a JSON list"),
        ([{"caption": ["x"]}], 'entry 0: expected an object with a non-empty "image"'),
        ([{"image": "a.jpg", "caption": []}], 'entry 0: "caption" must be a string or a non-empty list'),
        ([TEST_FORMAT[0], {"image": "b.jpg", "caption": [1]}], 'entry 1: "caption" must be'),
        ([{"image": "a.jpg", "caption": ["ok", "  "]}], "entry 0: image 'a.jpg' has an empty caption"),
    ],
)
def test_bad_files_name_the_entry(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(DataFormatError, match=message):
        load_karpathy(_json(tmp_path / "bad.json", data))


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[\n{"image": "a.jpg",\n')
    with pytest.raises(DataFormatError, match=r"bad\.json, line 3: invalid JSON"):
        load_karpathy(path)


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "n_images", "n_captions"),
    [("coco_karpathy_test_5k.json", 5000, 25010), ("flickr30k_karpathy_test_1k.json", 1000, 5000)],
)
def test_load_real_karpathy_files(data_root: Path, name: str, n_images: int, n_captions: int) -> None:
    images, captions = load_karpathy(data_root / "karpathy-captions" / name)
    assert images == []
    assert len(captions) == n_captions
    assert len({c.meta["image"] for c in captions}) == n_images
    assert len({c.id for c in captions}) == n_captions
