from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lumir.data.flickr8k import flickr8k_tasks, load_flickr8k
from lumir.errors import DataFormatError
from lumir.types import Modality

NAMES = ["111_aa.jpg", "222_bb.jpg", "333_cc.jpg"]


def _flickr(root: Path, names: list[str] = NAMES, split: list[str] | None = None, with_images: bool = True) -> Path:
    (root / "images").mkdir(parents=True)
    lines = []
    for i, name in enumerate(names):
        if with_images:
            Image.new("RGB", (4, 4), (i * 60, 0, 0)).save(root / "images" / name)
        lines += [f"{name}#{n}\tcaption {n} of {name} ." for n in range(5)]
    (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (root / "test_1k.txt").write_text("\n".join(split or names[:2]) + "\n")
    return root


def test_load_flickr8k_images_and_captions(tmp_path: Path) -> None:
    root = _flickr(tmp_path / "flickr8k")
    images, captions = load_flickr8k(root)
    assert [im.id for im in images] == ["111_aa.jpg", "222_bb.jpg"]
    assert all(im.modality is Modality.IMAGE for im in images)
    assert images[1].image.load().getpixel((0, 0)) == (60, 0, 0)
    assert len(captions) == 10
    assert captions[0].id == "111_aa.jpg#0" and captions[0].text == "caption 0 of 111_aa.jpg ."
    assert captions[7].meta == {"image": "222_bb.jpg"}
    assert all(c.modality is Modality.TEXT for c in captions)


def test_flickr8k_tasks_t2i_and_i2t(tmp_path: Path) -> None:
    t2i, i2t = flickr8k_tasks(_flickr(tmp_path / "flickr8k"))
    assert t2i.name == "flickr8k/t2i" and i2t.name == "flickr8k/i2t"
    assert (t2i.query_modality, t2i.candidate_modality) == (Modality.TEXT, Modality.IMAGE)
    assert (i2t.query_modality, i2t.candidate_modality) == (Modality.IMAGE, Modality.TEXT)
    assert t2i.metrics == i2t.metrics == ("R@1", "R@5", "R@10")
    assert len(t2i.queries) == 10 and len(t2i.corpus) == 2
    assert t2i.qrels["222_bb.jpg#3"] == {"222_bb.jpg": 1}
    assert all(q.task == "flickr8k/t2i" for q in t2i.queries)
    assert len(i2t.queries) == 2 and len(i2t.corpus) == 10
    assert i2t.qrels["111_aa.jpg"] == {f"111_aa.jpg#{n}": 1 for n in range(5)}
    assert i2t.queries[0].image == t2i.corpus["111_aa.jpg"].image


def test_missing_folder_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"Flickr8k folder not found.*--data PATH.*LUMIR_DATA"):
        load_flickr8k(tmp_path / "nowhere")


def test_missing_split_lists_the_splits_found(tmp_path: Path) -> None:
    root = _flickr(tmp_path / "flickr8k")
    with pytest.raises(FileNotFoundError, match=r"train_4k\.txt \(splits found: \['test_1k'\]\).*LUMIR_DATA"):
        load_flickr8k(root, "train_4k")


def test_listed_images_absent_gives_count_and_first_names(tmp_path: Path) -> None:
    root = _flickr(tmp_path / "flickr8k", with_images=False)
    with pytest.raises(
        FileNotFoundError, match=r"2 of 2 listed images are missing .*\['111_aa\.jpg', '222_bb\.jpg'\]"
    ):
        load_flickr8k(root)


def test_split_image_without_captions(tmp_path: Path) -> None:
    root = _flickr(tmp_path / "flickr8k", split=["111_aa.jpg", "999_zz.jpg"])
    Image.new("RGB", (2, 2)).save(root / "images" / "999_zz.jpg")
    with pytest.raises(DataFormatError, match=r"1 images of split 'test_1k' have no caption .*999_zz\.jpg"):
        load_flickr8k(root)


def test_malformed_caption_line_names_file_and_line(tmp_path: Path) -> None:
    root = _flickr(tmp_path / "flickr8k")
    token = root / "Flickr8k.token.txt"
    token.write_text(token.read_text() + "no tab on this line\n")
    with pytest.raises(DataFormatError, match=r"Flickr8k\.token\.txt, line 16: expected '<image>#<n><TAB><caption>'"):
        load_flickr8k(root)


def test_duplicate_split_entry(tmp_path: Path) -> None:
    root = _flickr(tmp_path / "flickr8k", split=["111_aa.jpg", "111_aa.jpg"])
    with pytest.raises(DataFormatError, match=r"test_1k\.txt, line 2: image '111_aa\.jpg' is listed twice"):
        load_flickr8k(root)


@pytest.mark.realdata
@pytest.mark.parametrize(("split", "n_images"), [("test_1k", 1000), ("train_4k", 4000)])
def test_load_real_flickr8k(data_root: Path, split: str, n_images: int) -> None:
    images, captions = load_flickr8k(data_root / "flickr8k", split)
    assert len(images) == n_images
    assert len(captions) == 5 * n_images
    assert len({c.meta["image"] for c in captions}) == n_images
    t2i, i2t = flickr8k_tasks(data_root / "flickr8k", split)
    assert (len(t2i.queries), len(t2i.corpus)) == (5 * n_images, n_images)
    assert (len(i2t.queries), len(i2t.corpus)) == (n_images, 5 * n_images)
    assert all(len(j) == 5 for j in i2t.qrels.values())
    assert images[0].image.load().size == (224, 224)
