"""A persistent cache of generations and scores, so rerunning a job makes no model calls.

Entries live in one SQLite file (safe for concurrent readers, atomic commits, survives a crash mid-run: finished
entries are committed in batches, nothing half-written is read back). Each entry is keyed by the sha256 of

    (backend, model fingerprint, rendered prompt, operation, decoding parameters or candidate tokens)

and keeps that provenance beside the value: backend, fingerprint, the model's ``spec()``, the rendered prompt,
the parameters, lumir's version and the time it was written. :class:`CachedChatModel` wraps any ChatModel and
calls it only for the conversations it has not seen, in one batched call.

Example:
    >>> import tempfile, pathlib
    >>> from lumir.testing.fakes import ScriptedChatModel
    >>> model = ScriptedChatModel(replies={"hi": "hello"})
    >>> cached = CachedChatModel(model, pathlib.Path(tempfile.mkdtemp()) / "llm.sqlite")
    >>> cached.generate([[{"role": "user", "content": "hi"}]]), cached.generate([[{"role": "user", "content": "hi"}]])
    (['hello'], ['hello'])
    >>> model.calls, cached.hits, cached.misses
    (1, 1, 1)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from lumir.config import lumir_version
from lumir.errors import LLMCacheError, with_cli_message
from lumir.models.chat.base import (
    CallStats,
    GenerationConfig,
    conversation_images,
    image_digest,
)
from lumir.protocols import ChatModel, Conversation

__all__ = [
    "CACHE_FORMAT",
    "CachedChatModel",
    "ChatCache",
    "cache_error",
    "cache_key",
    "default_llm_cache",
    "resolve_chat_model",
]

CACHE_FORMAT = "lumir-llm-cache/1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    op TEXT NOT NULL,
    value TEXT NOT NULL,
    backend TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    model_spec TEXT NOT NULL,
    prompt TEXT NOT NULL,
    params TEXT NOT NULL,
    lumir_version TEXT NOT NULL,
    created REAL NOT NULL
);
"""


def default_llm_cache() -> Path:
    """Where LLM generations and scores are cached by default: ``$LUMIR_HOME/llm-cache.sqlite``."""
    from lumir.models.chat.registry import lumir_home

    return lumir_home() / "llm-cache.sqlite"


def resolve_chat_model(llm: Any, cache: str | Path | None = None) -> ChatModel:
    """A ChatModel from a model or its spec (string, path or mapping); behind the on-disk cache at ``cache`` when
    one is given (a model already behind a cache is left as it is)."""
    from lumir.models.chat.registry import load_chat_model

    if isinstance(llm, Path):
        llm = str(llm)
    # the cache is opened first: a damaged file fails before a model loads
    store = None if cache is None or isinstance(llm, CachedChatModel) else ChatCache(cache)
    chat: ChatModel = load_chat_model(llm) if isinstance(llm, (str, Mapping)) else llm
    if store is not None and not isinstance(chat, CachedChatModel):
        chat = CachedChatModel(chat, store)
    elif store is not None:
        store.close()
    return chat


def cache_key(backend: str, fingerprint: str, prompt: str, op: str, params: Any) -> str:
    """The sha256 hex key of one model call (see the module docstring)."""
    blob = json.dumps([backend, fingerprint, prompt, op, params], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def cache_error(path: Path, problem: str, err: BaseException | None = None) -> LLMCacheError:
    """An :class:`~lumir.errors.LLMCacheError` naming the cache file and what to do (CLI wording attached)."""
    detail = f" ({err})" if err is not None else ""
    library = (
        f"{problem}{detail}. Move the file away (a new cache is started in its place), pass another cache path, "
        "or run without the cache"
    )
    cli = f"{path}: {problem}{detail}. Move the file away (a new cache is started in its place), give another "
    cli += "file with --llm-cache PATH, or run with --no-llm-cache"
    return with_cli_message(LLMCacheError(library, path=path), cli)


class ChatCache:
    """The SQLite store behind :class:`CachedChatModel` (one file; ``path`` is created on first use).

    Raises:
        LLMCacheError: (when opened, read or written) the file is not SQLite, is damaged (e.g. truncated), holds
            another cache format, or cannot be used; the message names the file and what to do.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        except sqlite3.Error as err:
            raise cache_error(self.path, "the LLM cache cannot be opened", err) from err
        try:
            with self._sqlite("opened"):
                self._db.executescript(_SCHEMA)
                row = self._db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
                if row is None:
                    with self._db:
                        self._db.execute("INSERT INTO meta VALUES ('format', ?)", (CACHE_FORMAT,))
            if row is not None and row[0] != CACHE_FORMAT:
                raise cache_error(
                    self.path, f"this LLM cache has format {row[0]!r}; this lumir reads {CACHE_FORMAT!r}"
                )
        except BaseException:
            self._db.close()
            raise

    @contextmanager
    def _sqlite(self, doing: str) -> Iterator[None]:
        """Turn SQLite failures into an :class:`LLMCacheError` naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as err:
            name = getattr(err, "sqlite_errorname", None)
            if name == "SQLITE_NOTADB":
                problem = "is not a lumir LLM cache (not an SQLite database)"
            elif name == "SQLITE_CORRUPT" or "malformed" in str(err):
                problem = "is damaged (truncated or overwritten)"
            else:
                problem = "cannot be used"
            raise cache_error(self.path, f"the LLM cache {problem}; it could not be {doing}", err) from err

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """Values of the keys present (decoded JSON)."""
        out: dict[str, Any] = {}
        with self._lock, self._sqlite("read"):
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for key, value in self._db.execute(f"SELECT key, value FROM entries WHERE key IN ({marks})", chunk):
                    out[key] = json.loads(value)
        return out

    def put_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert entries (``key, op, value, backend, fingerprint, model_spec, prompt, params``) in one commit."""
        now = time.time()
        version = lumir_version()
        data = [
            (
                r["key"],
                r["op"],
                json.dumps(r["value"]),
                r["backend"],
                r["fingerprint"],
                json.dumps(r["model_spec"], sort_keys=True, default=str),
                r["prompt"],
                json.dumps(r["params"], sort_keys=True),
                version,
                now,
            )
            for r in rows
        ]
        with self._lock, self._sqlite("written"), self._db:
            self._db.executemany("INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?,?,?,?)", data)

    def provenance(self, key: str) -> dict[str, Any] | None:
        """Everything recorded with one entry (or None)."""
        with self._lock, self._sqlite("read"):
            cur = self._db.execute("SELECT * FROM entries WHERE key = ?", (key,))
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        if row is None:
            return None
        out = dict(zip(names, row, strict=True))
        for name in ("value", "model_spec", "params"):
            out[name] = json.loads(out[name])
        return out

    def __len__(self) -> int:
        with self._lock, self._sqlite("read"):
            return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedChatModel:
    """Wrap a ChatModel with a persistent cache; only uncached conversations reach the model.

    Args:
        model: any ChatModel; its ``backend``, ``fingerprint``, ``spec()`` and ``render()`` (when present) make the
            key. A model without ``render`` is keyed by the canonical conversation (images by pixel hash).
        cache: a :class:`ChatCache` or the path of its SQLite file.
        batch_size: how many misses are sent to the model per call (and committed together).

    Attributes:
        hits, misses: conversations answered from the cache / by the model so far.
        stats: calls that reached the model (a fully cached rerun makes none): ``calls``, ``conversations``.
    """

    def __init__(self, model: ChatModel, cache: ChatCache | str | Path, *, batch_size: int = 64) -> None:
        self.model = model
        self.cache = cache if isinstance(cache, ChatCache) else ChatCache(cache)
        self.batch_size = batch_size
        self.hits = 0
        self.misses = 0
        self.stats = CallStats()
        self.backend = model.backend
        self.supports_images = model.supports_images
        self.context_length = model.context_length

    @classmethod
    def from_spec(cls, model: Any, path: str | Path, *, batch_size: int = 64) -> CachedChatModel:
        """Build from a spec: ``model`` is a chat-model spec (or a ChatModel), ``path`` the SQLite file."""
        from lumir.models.chat.registry import load_chat_model

        inner = (
            load_chat_model(str(model) if isinstance(model, Path) else model)
            if isinstance(model, (str, Path, Mapping))
            else model
        )
        return cls(inner, path, batch_size=batch_size)

    @property
    def fingerprint(self) -> str:
        """The wrapped model's fingerprint (the cache does not change what the model answers)."""
        return self.model.fingerprint

    def spec(self) -> dict[str, Any]:
        """``{"type": "cached", "model": <the wrapped model's spec>, "path": <the SQLite file>}``."""
        return {"type": "cached", "model": self.model.spec(), "path": str(self.cache.path)}

    def count_tokens(self, text: str) -> int:
        """The wrapped model's token count."""
        return self.model.count_tokens(text)

    def render(self, conversation: Conversation) -> str:
        """The key's prompt: the model's rendered prompt plus the pixel hash of every image it holds.

        A chat template renders an image as a placeholder (``<image>``), so the images must join the key.
        """
        images = conversation_images(conversation)
        text = self.model.render(conversation)
        return text if not images else text + "\n#images:" + ",".join(image_digest(im) for im in images)

    def _run(self, op: str, params: Any, conversations: Sequence[Conversation], call: Any) -> list[Any]:
        prompts = [self.render(c) for c in conversations]
        keys = [cache_key(self.backend, self.fingerprint, p, op, params) for p in prompts]
        found = self.cache.get_many(sorted(set(keys)))
        todo: dict[str, int] = {}  # unique missing key -> first index (duplicates are computed once)
        for i, k in enumerate(keys):
            if k not in found and k not in todo:
                todo[k] = i
        self.hits += len(keys) - sum(1 for k in keys if k not in found)
        self.misses += sum(1 for k in keys if k not in found)
        pending = list(todo.values())
        spec = self.model.spec()
        for start in range(0, len(pending), self.batch_size):
            idx = pending[start : start + self.batch_size]
            values = call([conversations[i] for i in idx])
            self.stats.calls += 1
            self.stats.conversations += len(idx)
            rows = []
            for i, value in zip(idx, values, strict=True):
                found[keys[i]] = value
                rows.append(
                    {
                        "key": keys[i],
                        "op": op,
                        "value": value,
                        "backend": self.backend,
                        "fingerprint": self.fingerprint,
                        "model_spec": spec,
                        "prompt": prompts[i],
                        "params": params,
                    }
                )
            self.cache.put_many(rows)  # committed per batch: an interrupted job keeps what it finished
        return [found[k] for k in keys]

    def generate(self, conversations: Sequence[Conversation], **gen: Any) -> list[str]:
        """Cached :meth:`ChatModel.generate` (keyed by the full decoding configuration)."""
        cfg = GenerationConfig.from_kwargs(gen)
        values = self._run("generate", cfg.to_dict(), conversations, lambda convs: self.model.generate(convs, **gen))
        return [str(v) for v in values]

    def token_logprobs(self, conversations: Sequence[Conversation], tokens: Sequence[str]) -> torch.Tensor:
        """Cached :meth:`ChatModel.token_logprobs` (keyed by the candidate tokens)."""

        def call(convs: list[Conversation]) -> list[list[float]]:
            return [[float(x) for x in row] for row in self.model.token_logprobs(convs, tokens).tolist()]

        values = self._run("token_logprobs", {"tokens": list(tokens)}, conversations, call)
        if not values:
            return torch.zeros((0, len(tokens)), dtype=torch.float32)
        return torch.tensor(values, dtype=torch.float32)
