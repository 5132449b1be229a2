"""Test configuration: offline by construction, seeded, with the shared data folder located once."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """The shared data folder: $LUMIR_DATA or <repo>/../shared/data; fails loudly (never skips) when absent."""
    root = Path(os.environ.get("LUMIR_DATA") or REPO.parent / "shared" / "data")
    if not root.is_dir():
        pytest.fail(
            f"shared data folder not found at {root}; set LUMIR_DATA to the folder holding flickr8k/ and beir-scifact/"
        )
    return root


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Fixture form of :func:`shared_data_root`."""
    return shared_data_root()


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture()
def mbeir_root(tmp_path: Path) -> Path:
    """A tiny M-BEIR in UniIR's layout (see :func:`mbeir_files.write_tiny_mbeir`)."""
    from mbeir_files import write_tiny_mbeir

    return write_tiny_mbeir(tmp_path)
