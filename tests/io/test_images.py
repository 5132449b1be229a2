from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from lumir.errors import ImageLoadError
from lumir.io.images import IMAGE_EXTENSIONS, find_bad_images, load_image, thumbnail_data_uri
from lumir.types import ImageRef, Item


def _png(path: Path, color: tuple[int, int, int] = (200, 10, 10), size: tuple[int, int] = (6, 4)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def test_image_extensions_are_lower_case_with_dot() -> None:
    assert {".jpg", ".jpeg", ".png", ".webp"} <= IMAGE_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)


def test_load_image_returns_rgb(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.new("L", (3, 5), 128).save(path)
    img = load_image(ImageRef(str(path)), "i1")
    assert img.mode == "RGB" and img.size == (3, 5)


def test_load_image_error_names_item_and_source(tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageLoadError, match=r"item 'cat-7': image file not found: .*missing\.png"):
        load_image(ImageRef(str(missing)), "cat-7")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"definitely not a jpeg")
    with pytest.raises(ImageLoadError, match=r"item 'dog': cannot decode image .*corrupt\.jpg"):
        load_image(ImageRef(str(corrupt)), "dog")
    with pytest.raises(ImageLoadError, match=r"^cannot decode image <3 bytes>"):
        load_image(ImageRef(b"abc"))


def test_load_image_reports_truncated_files(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.effect_noise((64, 64), 50).convert("RGB").save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="item 'half'"):
        load_image(ImageRef(str(path)), "half")


def test_find_bad_images_lists_each_bad_image_with_a_reason(tmp_path: Path) -> None:
    good = _png(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    items = [
        Item("good", image=ImageRef(str(good))),
        Item("text-only", text="no image here"),
        Item("bad", image=ImageRef(str(bad))),
        Item("gone", image=ImageRef(str(tmp_path / "gone.jpg")), text="caption"),
        Item("mem", image=ImageRef(Image.new("RGB", (2, 2)))),
    ]
    bad_ones = find_bad_images(items, progress=False)
    assert [item_id for item_id, _ in bad_ones] == ["bad", "gone"]
    assert "cannot decode" in bad_ones[0][1] and "bad.png" in bad_ones[0][1]
    assert "not found" in bad_ones[1][1]


def test_find_bad_images_empty_when_all_fine(tmp_path: Path) -> None:
    items = [Item(f"i{i}", image=ImageRef(str(_png(tmp_path / f"{i}.png")))) for i in range(20)]
    assert find_bad_images(items, progress=False) == []


def test_thumbnail_data_uri_is_a_small_jpeg(tmp_path: Path) -> None:
    path = _png(tmp_path / "wide.png", size=(400, 200))
    uri = thumbnail_data_uri(ImageRef(str(path)), size=100)
    prefix = "data:image/jpeg;base64,"
    assert uri.startswith(prefix)
    img = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :])))
    assert img.format == "JPEG" and img.size == (100, 50)
    r, g, b = img.convert("RGB").getpixel((50, 25))
    assert r > 150 and g < 60 and b < 60


def test_thumbnail_does_not_modify_an_in_memory_image() -> None:
    original = Image.new("RGB", (300, 300), (0, 0, 255))
    thumbnail_data_uri(ImageRef(original), size=10)
    assert original.size == (300, 300)


def _bomb(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A 1x1 PNG whose header claims ``width`` x ``height``: opening it trips Pillow's decompression-bomb check."""
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # the IHDR chunk's width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_a_decompression_bomb_is_an_image_load_error(tmp_path: Path) -> None:
    bomb = _bomb(tmp_path / "huge.png")
    with pytest.raises(Image.DecompressionBombError):  # what Pillow alone does (lumir must not leak it)
        Image.open(bomb)
    with pytest.raises(ImageLoadError, match=r"huge\.png is too large to decode safely .*MAX_IMAGE_PIXELS"):
        ImageRef(bomb).load()
    with pytest.raises(ImageLoadError, match=r"item 'big': image .*huge\.png is too large"):
        load_image(ImageRef(bomb), "big")
    with pytest.raises(ImageLoadError, match="too large"):
        ImageRef(bomb.read_bytes()).load()  # encoded bytes in memory too
    ok = _png(tmp_path / "ok.png")
    bad = find_bad_images([Item("ok", image=ImageRef(ok)), Item("big", image=ImageRef(bomb))], progress=False)
    assert [item_id for item_id, _ in bad] == ["big"] and "too large" in bad[0][1]


def test_the_pixel_limit_is_pillows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = _png(tmp_path / "a.png", size=(30, 30))  # 900 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # over 2x the limit: refused
    with pytest.raises(ImageLoadError, match="too large"):
        ImageRef(img).load()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert ImageRef(img).load().size == (30, 30)
