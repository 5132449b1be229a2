"""A tiny Flickr8k-layout folder of real photos (scikit-image samples cropped into distinct views) for trainers."""

from __future__ import annotations

from pathlib import Path

import pytest

from flickr8k_files import write_tiny_flickr8k


@pytest.fixture(scope="session")
def tiny_flickr8k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder *holding* ``flickr8k/`` (what ``--data`` takes)."""
    root = tmp_path_factory.mktemp("data")
    write_tiny_flickr8k(root)
    return root
