"""Training recipes: one immutable YAML file = one run (``lumir train embedder --config recipes/...yaml``).

A recipe is a mapping with a ``kind`` (which trainer runs it) and that trainer's blocks. Command-line overrides use
dotted keys (``--set train.epochs=5``) and are recorded with the resolved recipe in the run's output folder; the file
itself is never rewritten. A recipe may also hold named ``profiles:`` of dotted overrides (``profiles: {cpu:
{train.epochs: 2}}``), applied by ``--profile NAME`` before any ``--set``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from lumir.errors import DataFormatError

__all__ = ["apply_overrides", "apply_profile", "load_recipe", "run_recipe"]


def _kinds() -> list[str]:
    from lumir.registry import RECIPES

    return RECIPES.names()


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: invalid YAML, not a mapping, or an unknown ``kind`` (naming the file).
    """
    from lumir.config import read_yaml_mapping

    path = Path(path)
    recipe = read_yaml_mapping(path, what="recipe")
    if recipe.get("kind") not in _kinds():
        raise DataFormatError(f"recipe kind {recipe.get('kind')!r} is not one of {_kinds()}", path=path)
    recipe.setdefault("source", str(path))
    return recipe


def apply_overrides(recipe: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``recipe`` with ``"a.b=value"`` overrides applied (values parsed as YAML scalars).

    Raises:
        ValueError: an override without ``=`` or one that descends into a non-mapping.

    Example:
        >>> apply_overrides({"train": {"epochs": 10}}, ["train.epochs=3", "name=x"])
        {'train': {'epochs': 3}, 'name': 'x'}
    """
    out = copy.deepcopy(dict(recipe))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like 'section.key=value'")
        _set_dotted(out, key, yaml.safe_load(raw), what=f"override {item!r}")
    return out


def _set_dotted(out: dict[str, Any], key: str, value: Any, *, what: str) -> None:
    node = out
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"{what}: {part!r} is not a section")
        node = child
    node[leaf] = copy.deepcopy(value)


def apply_profile(recipe: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Return a copy of ``recipe`` with its ``profiles[name]`` dotted overrides applied (values as written).

    Raises:
        ValueError: the recipe has no profile ``name`` (naming those it has), or a profile is not a mapping.

    Example:
        >>> apply_profile({"train": {"epochs": 10}, "profiles": {"cpu": {"train.epochs": 2}}}, "cpu")["train"]
        {'epochs': 2}
    """
    profiles = recipe.get("profiles") or {}
    if not isinstance(profiles, Mapping) or name not in profiles:
        known = sorted(profiles) if isinstance(profiles, Mapping) else []
        raise ValueError(f"recipe has no profile {name!r}; its profiles: {known}")
    values = profiles[name]
    if not isinstance(values, Mapping):
        raise ValueError(f"profile {name!r} must be a mapping of dotted keys to values, got {type(values).__name__}")
    out = copy.deepcopy(dict(recipe))
    for key, value in values.items():
        _set_dotted(out, str(key), value, what=f"profile {name!r} key {key!r}")
    return out


def run_recipe(
    recipe: Mapping[str, Any] | str | Path,
    overrides: Sequence[str] = (),
    *,
    profile: str | None = None,
    **options: Any,
) -> Any:
    """Load (if a path), apply ``profile`` then ``overrides``, and run a recipe with the runner for its ``kind``."""
    loaded = load_recipe(recipe) if isinstance(recipe, (str, Path)) else dict(recipe)
    if profile:
        loaded = apply_profile(loaded, profile)
    resolved = apply_overrides(loaded, overrides)
    from lumir.registry import RECIPES

    kind = resolved.get("kind")
    if kind not in _kinds():
        raise ValueError(f"recipe kind {kind!r} is not one of {_kinds()}")
    return RECIPES.load(str(kind))(resolved, **options)
