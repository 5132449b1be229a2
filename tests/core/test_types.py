from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from lumir.errors import ImageLoadError
from lumir.types import ImageRef, Item, Modality, Query


def test_modality_values_match_mbeir_strings() -> None:
    assert [m.value for m in Modality] == ["text", "image", "image,text"]
    assert Modality.parse("text,image") is Modality.IMAGE_TEXT
    assert Modality.parse("IMAGE") is Modality.IMAGE
    with pytest.raises(ValueError, match="unknown modality"):
        Modality.parse("audio")


@given(text=st.one_of(st.none(), st.text(min_size=1).filter(str.strip)), has_image=st.booleans())
def test_item_modality_consistent_with_fields(text: str | None, has_image: bool) -> None:
    if text is None and not has_image:
        with pytest.raises(ValueError, match="neither text nor image"):
            Item("x", text=text)
        return
    item = Item("x", text=text, image=ImageRef(b"fake") if has_image else None)
    expected = {(True, False): Modality.TEXT, (False, True): Modality.IMAGE, (True, True): Modality.IMAGE_TEXT}
    assert item.modality is expected[(text is not None, has_image)]


def test_empty_text_is_an_error_naming_the_item() -> None:
    with pytest.raises(ValueError, match="'cap-7' has empty text"):
        Item("cap-7", text="   ")
    # with an image, empty text just means "image only"
    assert Item("i", text="", image=ImageRef(b"x")).modality is Modality.IMAGE


def test_item_coerces_image_sources_and_rejects_empty_id() -> None:
    assert isinstance(Item("a", image="some/path.jpg").image, ImageRef)
    with pytest.raises(ValueError, match="non-empty string"):
        Item("", text="x")


def test_image_ref_loads_path_bytes_and_pil(tmp_path) -> None:
    img = Image.new("L", (4, 3), 128)
    p = tmp_path / "a.png"
    img.save(p)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    for src in (p, str(p), buf.getvalue(), img):
        out = ImageRef(src).load()
        assert out.mode == "RGB" and out.size == (4, 3)


def test_image_ref_errors_name_the_source(tmp_path) -> None:
    with pytest.raises(ImageLoadError, match="not found: .*missing.jpg"):
        ImageRef(tmp_path / "missing.jpg").load()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        ImageRef(bad).load()


def test_query_is_an_item_with_instruction_and_task() -> None:
    q = Query("q1", text="a dog", instruction="Find an image.", task="mscoco_task0")
    assert isinstance(q, Item) and q.modality is Modality.TEXT and q.task == "mscoco_task0"
