"""Optional-dependency guard: import a heavy backend or say which pip extra provides it."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, *, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the lumir extra that installs it.

    Args:
        module: the module to import, e.g. ``"faiss"``.
        extra: the lumir extra that provides it, e.g. ``"faiss"``.
        package: the pip distribution name when it differs from the module name.

    Raises:
        ImportError: with the exact ``pip install`` command to run.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        dist = package or module
        raise ImportError(
            f"{module!r} is not installed; it is an optional backend. "
            f"Install it with: pip install 'lumir[{extra}]' (or: pip install {dist})"
        ) from err
