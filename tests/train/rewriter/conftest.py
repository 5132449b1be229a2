"""A tiny offline causal LM (the rewriters' base in these tests) and tiny D_SFT / D_PRO files in its vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest

from lumir.testing.tiny import save_tiny_lm
from rewriter_files import COLOURS, write_jsonl


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-lm") / "base")


@pytest.fixture(scope="session")
def sft_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [
        {"id": f"q{i}", "prompt": f"a {c} dog", "completion": f"the {c} dog in a photo", "source": "rewrite"}
        for i, c in enumerate(COLOURS)
    ]
    return write_jsonl(tmp_path_factory.mktemp("dsft") / "sft.jsonl", rows)


@pytest.fixture(scope="session")
def pro_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = []
    for i, c in enumerate(COLOURS):
        rewrites = [f"the {c} dog in a photo", f"a {c} dog", "a photo", "the image"][: 2 + i % 3]
        rows.append(
            {
                "id": f"q{i}",
                "prompt": f"a {c} dog",
                "rewrites": rewrites,
                "scores": [0.9, 0.6, 0.3, 0.1][: len(rewrites)],
                "ranks": list(range(1, len(rewrites) + 1)),
            }
        )
    return write_jsonl(tmp_path_factory.mktemp("dpro") / "pro.jsonl", rows)
