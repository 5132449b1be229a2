"""Fixtures of the CLI tests: small real files the commands read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lumir.testing.fakes import COLORS


@pytest.fixture()
def color_jsonl(tmp_path: Path) -> Path:
    """A lumir jsonl corpus of 8 solid-colour PNG files plus 8 colour captions (16 items)."""
    (tmp_path / "img").mkdir()
    lines = []
    for c, rgb in COLORS.items():
        Image.new("RGB", (24, 24), rgb).save(tmp_path / "img" / f"{c}.png")
        lines.append({"id": f"img-{c}", "image": f"img/{c}.png"})
        lines.append({"id": f"txt-{c}", "text": f"a {c} thing"})
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path
