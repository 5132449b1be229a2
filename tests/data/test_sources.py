from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lumir.data.sources import detect_format, load_corpus
from lumir.types import Modality


def test_detects_and_loads_jsonl_folder_and_mbeir_pool(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "imgs" / "a.txt").write_text("a tiny square")
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"id": "x", "text": "hello"}) + "\n")
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"did": "9:1", "txt": "a caption", "img_path": None, "modality": "text"}) + "\n")
    assert detect_format(items) == "jsonl" and detect_format(pool) == "mbeir"
    assert detect_format(tmp_path / "imgs") == "folder"
    assert load_corpus(items).ids == ["x"]
    folder = load_corpus(tmp_path / "imgs")
    assert folder.ids == ["a.png"] and folder["a.png"].modality is Modality.IMAGE
    assert load_corpus(pool)["9:1"].text == "A caption."  # UniIR's format_string


def test_unknown_format_and_missing_path_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="choose one of"):
        load_corpus(tmp_path, "parquet")
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(ValueError, match="cannot tell its format"):
        load_corpus(tmp_path / "notes.md")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_corpus(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files in .*empty"):
        load_corpus(tmp_path / "empty")


@pytest.mark.realdata
def test_detects_real_flickr8k_and_beir(data_root: Path) -> None:
    assert detect_format(data_root / "flickr8k") == "flickr8k"
    assert detect_format(data_root / "beir-scifact") == "beir"
    images = load_corpus(data_root / "flickr8k")
    assert len(images) == 1000 and images[0].modality is Modality.IMAGE
    assert len(load_corpus(data_root / "flickr8k", "flickr8k-captions")) == 5000
