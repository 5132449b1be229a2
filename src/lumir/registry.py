"""One registry and one spec format for every component kind.

Every component lumir builds by name — embedders, indexes, chat models, rerankers, rewriters, augmenters, tasks,
data sources and training-recipe kinds — is described by a **spec**: a JSON-serialisable mapping with a ``"type"``
and that type's options, e.g. ``{"type": "yes-no", "llm": "qwen-coder", "k": 20, "alpha": 0.5}``. Components
return their spec from ``spec()``, and :meth:`Registry.build` turns a spec back into the component, so a saved
artifact (an index directory, an eval result, a pipeline file) records how to rebuild what made it.

A spec can also be written as one CLI-friendly string::

    NAME                        {"type": NAME}
    NAME:VALUE                  {"type": NAME, <its positional option>: VALUE}    e.g. mini:runs/heads
    NAME:key=value,key=value    {"type": NAME, key: value, ...}                   e.g. yes-no:k=20,alpha=0.5
    NAME:VALUE,key=value        both
    {type: NAME, key: value}    inline YAML/JSON

Values are read as ``true``/``false``/``null``, integers, floats, or else strings. Some types parse their own
string form (``mbeir:ROOT:TASK,TASK``, ``openai:URL#MODEL``, ``beir:PATH:SPLIT``).

Entries are **strings** (``"lumir.embed.text:TextEmbedder"``), imported on first use, so ``import lumir`` stays
cheap and optional extras stay optional: a missing extra raises an ImportError naming it. An unknown name raises a
KeyError listing the known ones. Short names stay as aliases (``st`` → ``sentence-transformers``, ``smollm2`` →
``smollm2-135m-instruct``, ``yesno`` → ``yes-no``).

Example:
    >>> EMBEDDERS.parse("hash:64")
    {'type': 'hash', 'dim': 64}
    >>> RERANKERS.parse("yesno:llm=qwen-coder,k=20,alpha=0.5")
    {'type': 'yes-no', 'llm': 'qwen-coder', 'k': 20, 'alpha': 0.5}
    >>> EMBEDDERS.build("hash:8").spec()
    {'type': 'hash', 'dim': 8}
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

__all__ = [
    "AUGMENTERS",
    "CHAT_MODELS",
    "EMBEDDERS",
    "INDEXES",
    "RECIPES",
    "REGISTRIES",
    "RERANKERS",
    "REWRITERS",
    "SOURCES",
    "TASKS",
    "Entry",
    "Registry",
    "build",
    "parse_options",
    "parse_scalar",
]

T = TypeVar("T")

Spec = Mapping[str, Any]
SpecLike = str | Path | Mapping[str, Any]

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")


def parse_scalar(text: str) -> Any:
    """A spec-string value: ``true``/``false``/``null``/``none``, an int, a float, or the string itself.

    Example:
        >>> [parse_scalar(s) for s in ("20", "0.5", "true", "none", "qwen-coder", "1e-3")]
        [20, 0.5, True, None, 'qwen-coder', 0.001]
    """
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none", "~"):
        return None
    if _INT.match(text.strip()):
        return int(text)
    if _FLOAT.match(text.strip()):
        return float(text)
    return text


def parse_options(text: str) -> dict[str, Any] | None:
    """``"a=1,b=x"`` as ``{"a": 1, "b": "x"}``, or None when ``text`` is not a list of ``key=value`` pairs.

    Example:
        >>> parse_options("k=20,alpha=0.5"), parse_options("runs/my,dir")
        ({'k': 20, 'alpha': 0.5}, None)
    """
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not _KEY.match(key.strip()):
            return None
        out[key.strip()] = parse_scalar(value.strip())
    return out


@dataclass(frozen=True)
class Entry:
    """One registered type.

    Attributes:
        name: the canonical type name (what ``spec()["type"]`` holds).
        target: ``"module:attr"`` (imported on first use) or a callable; called with the spec's options.
        aliases: other accepted names.
        extra: the ``lumir[...]`` extra whose packages the target needs (named in ImportErrors).
        arg: the option a bare ``NAME:VALUE`` fills (None: the value must be ``key=value`` pairs).
        parse: ``"module:attr"`` or a callable turning the text after ``NAME:`` into options (overrides ``arg``).
        defaults: options an entry implies (e.g. the ``scifact`` task is a ``beir`` task at ``beir-scifact``).
        help: one line for listings.
    """

    name: str
    target: str | Callable[..., Any]
    aliases: tuple[str, ...] = ()
    extra: str | None = None
    arg: str | None = "path"
    parse: str | Callable[[str], dict[str, Any]] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    help: str = ""


def _import(target: str, *, what: str, extra: str | None) -> Any:
    module, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module)
    except ImportError as err:
        if extra is None or (err.name or "").startswith("lumir"):
            raise
        raise ImportError(
            f"{what} needs the optional package {err.name!r}; install it with: pip install 'lumir[{extra}]'"
        ) from err
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Name → lazily imported factory for one component kind, with spec parsing and building.

    Args:
        kind: what it holds, for messages (``"embedder"``).
        fallback: turns a spec string that names no type (e.g. a model folder) into a spec, or returns None.
    """

    def __init__(self, kind: str, *, fallback: Callable[[str], dict[str, Any] | None] | str | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}
        self._fallback = fallback

    # ------------------------------------------------------------------ registration
    def register(
        self,
        name: str,
        target: str | Callable[..., Any],
        *,
        aliases: tuple[str, ...] = (),
        extra: str | None = None,
        arg: str | None = "path",
        parse: str | Callable[[str], dict[str, Any]] | None = None,
        defaults: Mapping[str, Any] | None = None,
        help: str = "",
        overwrite: bool = False,
    ) -> None:
        """Register ``target`` under ``name`` (and ``aliases``).

        Raises:
            ValueError: the name is empty, holds ``":"`` or ``","``, or is taken (pass ``overwrite=True``).
        """
        for n in (name, *aliases):
            if not n or ":" in n or "," in n or "=" in n:
                raise ValueError(f"{self.kind} name must be non-empty and contain no ':', ',' or '=', got {n!r}")
            taken = self._aliases.get(n.lower())
            if taken is not None and not overwrite and taken != name:
                raise ValueError(f"{self.kind} name {n!r} is taken by {taken!r}; pass overwrite=True to replace it")
        if name in self._entries and not overwrite:
            raise ValueError(f"{self.kind} type {name!r} is already registered; pass overwrite=True to replace it")
        entry = Entry(name, target, tuple(aliases), extra, arg, parse, dict(defaults or {}), help)
        self._entries[name] = entry
        for n in (name, *aliases):
            self._aliases[n.lower()] = name

    def unregister(self, name: str) -> None:
        """Remove a type and its aliases (KeyError when unknown)."""
        canonical = self.resolve(name)
        del self._entries[canonical]
        self._aliases = {a: n for a, n in self._aliases.items() if n != canonical}

    # ------------------------------------------------------------------ lookup
    def names(self) -> list[str]:
        """Canonical type names, sorted."""
        return sorted(self._entries)

    def aliases(self) -> dict[str, str]:
        """Every accepted name (aliases included) → its canonical name."""
        return dict(sorted(self._aliases.items()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._aliases

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"

    def resolve(self, name: str) -> str:
        """The canonical name of ``name`` or an alias.

        Raises:
            KeyError: unknown, listing the known names.
        """
        try:
            return self._aliases[str(name).lower()]
        except KeyError:
            known = ", ".join(self.names())
            others = sorted(set(self._aliases) - set(self._entries))
            more = f" (aliases: {', '.join(others)})" if others else ""
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}{more}") from None

    def entry(self, name: str) -> Entry:
        """The entry of a name or alias (KeyError listing the known names)."""
        return self._entries[self.resolve(name)]

    def load(self, name: str) -> Callable[..., T]:
        """The factory of a type, imported now.

        Raises:
            KeyError: unknown name. ImportError: its optional packages are missing (naming the extra).
        """
        entry = self.entry(name)
        if callable(entry.target):
            return entry.target
        factory: Callable[..., T] = _import(entry.target, what=f"{self.kind} {entry.name!r}", extra=entry.extra)
        return factory

    # ------------------------------------------------------------------ specs
    def parse(self, spec: str | Path) -> dict[str, Any]:
        """A spec string (see the module docstring) as a spec dict with the canonical ``type``.

        Raises:
            KeyError: no registered type matches (the message lists the known ones).
            ValueError: the value part does not fit the type.
        """
        text = str(spec).strip()
        if text.startswith("{"):
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise ValueError(f"{self.kind} spec {text!r} is not valid YAML: {err}") from None
            if not isinstance(data, dict):
                raise ValueError(f"{self.kind} spec {text!r} must be a mapping")
            return self.normalize(data)
        if text.lower() in self._aliases:
            entry = self.entry(text)
            return {"type": entry.name, **entry.defaults}
        head, sep, rest = text.partition(":")
        if sep and head.lower() in self._aliases:
            entry = self.entry(head)
            return {"type": entry.name, **entry.defaults, **self._value(entry, rest)}
        if self._fallback is not None:
            fallback = self._fallback
            if isinstance(fallback, str):
                fallback = _import(fallback, what=f"{self.kind} spec parser", extra=None)
            found = fallback(text)
            if found is not None:
                return self.normalize(found)
        self.resolve(head)  # raises KeyError listing the known names
        raise AssertionError("unreachable")  # pragma: no cover

    def _value(self, entry: Entry, rest: str) -> dict[str, Any]:
        if entry.parse is not None:
            parse = entry.parse
            if isinstance(parse, str):
                parse = _import(parse, what=f"{self.kind} {entry.name!r} spec parser", extra=None)
            return dict(parse(rest))
        if not rest:
            return {}
        options = parse_options(rest)
        if options is not None:
            return options
        head, comma, tail = rest.partition(",")
        tail_options = parse_options(tail) if comma else None
        positional, options = (head, tail_options) if tail_options is not None else (rest, {})
        if entry.arg is None:
            raise ValueError(
                f"{self.kind} {entry.name!r} takes options as key=value pairs ({entry.name}:key=value,...), "
                f"got {rest!r}"
            )
        return {entry.arg: parse_scalar(positional) if entry.arg != "path" else positional, **options}

    def normalize(self, spec: SpecLike) -> dict[str, Any]:
        """A spec string or mapping as a spec dict with the canonical ``type`` (defaults of aliases filled in).

        Raises:
            KeyError: no ``type``, or an unknown one.
        """
        if isinstance(spec, (str, Path)):
            return self.parse(spec)
        data = dict(spec)
        name = data.pop("type", None)
        if name is None:
            raise KeyError(f"{self.kind} spec {dict(spec)!r} has no 'type'; known types: {', '.join(self.names())}")
        entry = self.entry(str(name))
        return {"type": entry.name, **entry.defaults, **data}

    def build(self, spec: SpecLike, **overrides: Any) -> T:
        """Build the component a spec describes; ``overrides`` replace spec options (e.g. ``device="cuda"``).

        Raises:
            KeyError: unknown type. ImportError: a missing extra (named). TypeError: an option the type does not take.
        """
        options = {**self.normalize(spec), **overrides}
        factory = self.load(options.pop("type"))
        return factory(**options)


# ---------------------------------------------------------------------------------------------------- the registries

EMBEDDERS: Registry[Any] = Registry("embedder", fallback="lumir.embed.factories:detect_spec")
INDEXES: Registry[Any] = Registry("index")
CHAT_MODELS: Registry[Any] = Registry("chat model", fallback="lumir.models.chat.registry:parse_fallback")
RERANKERS: Registry[Any] = Registry("reranker")
REWRITERS: Registry[Any] = Registry("rewriter")
AUGMENTERS: Registry[Any] = Registry("augmenter")
TASKS: Registry[Any] = Registry("task", fallback="lumir.eval.tasks:parse_directional")
SOURCES: Registry[Any] = Registry("data source")
RECIPES: Registry[Any] = Registry("recipe kind")

REGISTRIES: dict[str, Registry[Any]] = {
    "embedder": EMBEDDERS,
    "index": INDEXES,
    "chat_model": CHAT_MODELS,
    "reranker": RERANKERS,
    "rewriter": REWRITERS,
    "augmenter": AUGMENTERS,
    "task": TASKS,
    "source": SOURCES,
    "recipe": RECIPES,
}
"""Every registry by kind."""


def build(kind: str, spec: SpecLike, **overrides: Any) -> Any:
    """Build a component of ``kind`` (a key of :data:`REGISTRIES`) from its spec.

    Example:
        >>> build("index", {"type": "flat", "dim": 4})
        FlatIndex(dim=4, ntotal=0, chunk_size=8192)
    """
    try:
        registry = REGISTRIES[kind]
    except KeyError:
        raise KeyError(f"unknown component kind {kind!r}; known: {', '.join(REGISTRIES)}") from None
    return registry.build(spec, **overrides)


# The built-in types: one table of lazy "module:attr" entries (imported last; it registers into the instances above).
from lumir import _components  # noqa: E402, F401
