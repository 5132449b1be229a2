from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lumir.data.folder import load_image_folder
from lumir.types import ImageRef, Modality


def _tree(root: Path) -> Path:
    (root / "cats" / "deep").mkdir(parents=True)
    Image.new("RGB", (4, 4), (255, 0, 0)).save(root / "b.png")
    Image.new("RGB", (4, 4), (0, 255, 0)).save(root / "cats" / "tom.JPG", format="JPEG")
    Image.new("RGB", (4, 4), (0, 0, 255)).save(root / "cats" / "deep" / "x.webp")
    (root / "b.txt").write_text("  a red square \n")
    (root / "cats" / "deep" / "x.txt").write_text("")  # an empty sidecar: no caption
    (root / "notes.md").write_text("not an image")
    (root / "cats" / "data.csv").write_text("1,2")
    return root


def test_loads_images_recursively_with_posix_ids_and_meta_captions(tmp_path: Path) -> None:
    root = _tree(tmp_path / "pics")
    with pytest.warns(
        UserWarning, match=r"skipped 2 file\(s\) that are not images \(first: \['cats/data\.csv', 'notes\.md'\]\)"
    ):
        items = load_image_folder(root)
    assert [it.id for it in items] == ["b.png", "cats/deep/x.webp", "cats/tom.JPG"]
    assert all(it.modality is Modality.IMAGE for it in items)
    assert items[0].meta == {"caption": "a red square"}
    assert items[1].meta == {} and items[2].meta == {}
    assert items[2].image == ImageRef(str(root / "cats" / "tom.JPG"))
    assert items[0].image.load().getpixel((0, 0)) == (255, 0, 0)


def test_caption_mode_item_makes_image_text_items(tmp_path: Path) -> None:
    root = _tree(tmp_path / "pics")
    with pytest.warns(UserWarning):
        items = load_image_folder(root, captions="item")
    assert items[0].modality is Modality.IMAGE_TEXT and items[0].text == "a red square"
    assert items[1].modality is Modality.IMAGE


def test_non_recursive_looks_only_at_the_top(tmp_path: Path) -> None:
    root = _tree(tmp_path / "pics")
    with pytest.warns(UserWarning, match=r"skipped 1 file"):
        items = load_image_folder(root, recursive=False)
    assert [it.id for it in items] == ["b.png"]


def test_no_warning_when_every_file_is_used(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    Image.new("RGB", (2, 2)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("cap")
    assert len(load_image_folder(tmp_path)) == 1
    assert len(recwarn) == 0


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="captions must be 'meta' or 'item'"):
        load_image_folder(tmp_path, captions="text")  # type: ignore[arg-type]


def test_symlinked_folders_and_files_are_followed(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "trip").mkdir(parents=True)
    Image.new("RGB", (4, 4), (1, 2, 3)).save(elsewhere / "trip" / "beach.png")
    Image.new("RGB", (4, 4), (4, 5, 6)).save(elsewhere / "single.png")
    root = tmp_path / "photos"
    root.mkdir()
    Image.new("RGB", (4, 4)).save(root / "home.png")
    (root / "holiday").symlink_to(elsewhere / "trip", target_is_directory=True)
    (root / "one.png").symlink_to(elsewhere / "single.png")
    items = load_image_folder(root)
    assert [it.id for it in items] == ["holiday/beach.png", "home.png", "one.png"]
    assert items[0].image is not None and items[0].image.load().getpixel((0, 0)) == (1, 2, 3)
    assert [it.id for it in load_image_folder(root, recursive=False)] == ["home.png", "one.png"]
    assert len(recwarn) == 0


def test_symlink_loops_and_broken_links_are_skipped_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(root / "a" / "x.png")
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)  # back to the top: a loop
    (root / "again").symlink_to(root / "a", target_is_directory=True)  # a second way into a/
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (4, 4)).save(outside / "y.png")
    (outside / "self").symlink_to(outside, target_is_directory=True)  # a loop outside the root
    (root / "out").symlink_to(outside, target_is_directory=True)
    (root / "gone.png").symlink_to(tmp_path / "missing.png")
    with pytest.warns(UserWarning) as record:
        items = load_image_folder(root)
    assert [it.id for it in items] == ["a/x.png", "out/y.png"]
    text = " ".join(str(w.message) for w in record)
    assert "skipped 3 linked folder(s) that lead to a folder already loaded or to a loop" in text
    assert "'a/loop -> " in text and "skipped 1 broken link(s) (first: ['gone.png'])" in text
