from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lumir.errors import DataFormatError
from lumir.io.jsonl import atomic_writer, iter_jsonl, read_items, read_queries, write_items
from lumir.types import ImageRef, Item, Query


def _write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_iter_jsonl_numbers_lines_from_one_and_skips_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.jsonl", '{"id": "a"}', "", "   ", '{"id": "b"}')
    assert list(iter_jsonl(path)) == [(1, {"id": "a"}), (4, {"id": "b"})]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a", ', "invalid JSON"),
        ('["a", "b"]', "expected a JSON object, got list"),
        ("42", "expected a JSON object, got int"),
    ],
)
def test_iter_jsonl_names_file_and_line_of_a_bad_line(tmp_path: Path, line: str, message: str) -> None:
    path = _write(tmp_path / "bad.jsonl", '{"id": "ok"}', line)
    with pytest.raises(DataFormatError, match=message) as info:
        list(iter_jsonl(path))
    assert info.value.line == 2
    assert info.value.path == path
    assert f"{path}, line 2" in str(info.value)


def test_iter_jsonl_reports_invalid_utf8_with_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match="line 2: not valid UTF-8"):
        list(iter_jsonl(path))


def test_iter_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        list(iter_jsonl(tmp_path / "nope.jsonl"))


def test_read_items_resolves_relative_images_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "img" / "red.png")
    path = _write(
        tmp_path / "items.jsonl",
        json.dumps({"id": "t", "text": "a caption", "meta": {"lang": "en"}}),
        json.dumps({"id": "i", "image": "img/red.png"}),
        json.dumps({"id": "it", "text": "red", "image": "/abs/where/x.JPG"}),
    )
    items = read_items(path)
    assert [it.modality.value for it in items] == ["text", "image", "image,text"]
    assert items[0].meta == {"lang": "en"}
    assert items[1].image == ImageRef(str(tmp_path / "img" / "red.png"))
    assert items[1].image.load().size == (4, 4)
    assert items[2].image == ImageRef("/abs/where/x.JPG")


def test_read_items_resolves_against_the_file_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "items.jsonl", json.dumps({"id": "i", "image": "x.png"}))
    monkeypatch.chdir(tmp_path)
    (item,) = read_items(Path("sub/items.jsonl"))
    assert item.image == ImageRef(str(tmp_path / "sub" / "x.png"))


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"text": "no id"}, "'id' must be a non-empty string"),
        ({"id": "", "text": "x"}, "'id' must be a non-empty string"),
        ({"id": 7, "text": "x"}, "'id' must be a non-empty string"),
        ({"id": "a"}, "has no text and no image"),
        ({"id": "a", "text": "   "}, "has no text and no image"),
        ({"id": "a", "text": 3}, "'text' must be a string"),
        ({"id": "a", "image": 3}, "'image' must be a string"),
        ({"id": "a", "image": "notes.txt"}, "unknown image type '.txt'"),
        ({"id": "a", "image": "blob"}, "unknown image type '\\(no extension\\)'"),
        ({"id": "a", "text": "x", "meta": [1]}, "'meta' must be a JSON object"),
        ({"id": "a", "txt": "typo"}, "unknown field"),
        ({"id": "a", "text": "x", "task": "t"}, "use read_queries"),
    ],
)
def test_read_items_rejects_bad_records_naming_file_and_line(tmp_path: Path, record: dict, message: str) -> None:
    path = _write(tmp_path / "items.jsonl", '{"id": "fine", "text": "ok"}', json.dumps(record))
    with pytest.raises(DataFormatError, match=message) as info:
        read_items(path)
    assert info.value.line == 2 and info.value.path == path


def test_read_items_rejects_duplicate_ids(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "items.jsonl", '{"id": "a", "text": "x"}', '{"id": "b", "text": "y"}', '{"id": "a", "text": "z"}'
    )
    with pytest.raises(DataFormatError, match=r"line 3: duplicate id 'a' \(first on line 1\)"):
        read_items(path)


def test_read_queries_reads_instruction_and_task(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "q.jsonl", json.dumps({"id": "q1", "text": "dogs", "instruction": "Find it.", "task": "t2i"})
    )
    (q,) = read_queries(path)
    assert q == Query("q1", text="dogs", instruction="Find it.", task="t2i")


def test_write_items_writes_images_relative_under_the_directory_and_absolute_elsewhere(tmp_path: Path) -> None:
    out = tmp_path / "out" / "items.jsonl"
    items = [
        Item("in", image=ImageRef(str(tmp_path / "out" / "img" / "a.png"))),
        Item("out", image=ImageRef(tmp_path / "elsewhere" / "b.png")),
        Item("t", text="hi", meta={"k": [1, 2]}),
    ]
    assert write_items(out, items) == 3
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == [
        {"id": "in", "image": "img/a.png"},
        {"id": "out", "image": str(tmp_path / "elsewhere" / "b.png")},
        {"id": "t", "text": "hi", "meta": {"k": [1, 2]}},
    ]


def test_write_items_refuses_in_memory_images_and_keeps_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "items.jsonl"
    write_items(out, [Item("old", text="kept")])
    before = out.read_bytes()
    with pytest.raises(ValueError, match=r"'mem'.*held in memory"):
        write_items(out, [Item("a", text="x"), Item("mem", image=ImageRef(Image.new("RGB", (2, 2))))])
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.jsonl"]  # no temporary file left behind


def test_write_items_interrupted_midway_leaves_the_existing_file_intact(tmp_path: Path) -> None:
    out = tmp_path / "items.jsonl"
    write_items(out, [Item(f"old{i}", text="kept") for i in range(3)])
    before = out.read_bytes()

    def items_then_interrupt():
        yield Item("new1", text="x")
        yield Item("new2", text="y")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_items(out, items_then_interrupt())
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["items.jsonl"]


def test_write_items_refuses_meta_that_is_not_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'a': meta is not JSON-serialisable"):
        write_items(tmp_path / "x.jsonl", [Item("a", text="x", meta={"bad": object()})])


def test_atomic_writer_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(target) as fh:
        fh.write("half")
        raise RuntimeError
    assert target.read_text() == "old"
    with atomic_writer(target) as fh:
        fh.write("new")
    assert target.read_text() == "new"


# --- round trip: read(write(items)) == items ----------------------------------------------------------------------

_json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
_json = st.recursive(
    _json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3), max_leaves=8
)
_names = st.from_regex(r"[A-Za-z0-9_\-]{1,12}", fullmatch=True)


@st.composite
def _items(draw: st.DrawFn, base: str, query: bool) -> list[Item]:
    ids = draw(st.lists(st.text(min_size=1), min_size=0, max_size=6, unique=True))
    out: list[Item] = []
    for item_id in ids:
        image = None
        if draw(st.booleans()):
            sub = draw(st.sampled_from(["", "img/", "a/b/"]))
            image = ImageRef(f"{base}/{sub}{draw(_names)}{draw(st.sampled_from(['.png', '.jpg', '.JPEG']))}")
        text = draw(st.text(min_size=1) if image is None else st.none() | st.text())
        if image is None and not text.strip():
            text = "x" + text
        meta = draw(st.dictionaries(st.text(), _json, max_size=3))
        if query:
            instruction = draw(st.none() | st.text())
            task = draw(st.none() | st.text())
            out.append(Query(item_id, text=text, image=image, meta=meta, instruction=instruction, task=task))
        else:
            out.append(Item(item_id, text=text, image=image, meta=meta))
    return out


@settings(max_examples=60, deadline=None)
@given(data=st.data(), query=st.booleans())
def test_jsonl_round_trip_is_identity(data: st.DataObject, query: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = str(Path(tmp).resolve())
        items = data.draw(_items(base, query))
        path = Path(base) / "items.jsonl"
        assert write_items(path, items) == len(items)
        back = read_queries(path) if query else read_items(path)
        assert back == items
        # and writing what was read gives the same bytes
        first = path.read_bytes()
        write_items(path, back)
        assert path.read_bytes() == first
