"""TrainedRewriter: serve a rewriter trained by MGQRe's SFT → PRO → PPO steps (§3.2–3.5) as a query rewriter.

It loads a trained-rewriter folder (:mod:`lumir.rewrite.artifact`: a full causal LM, or a LoRA adapter over its
base), a plain ``transformers`` causal-LM folder, or an offline LLM name (``smollm2``, converted once), and
generates with the one trained prompt, :data:`lumir.rewrite.prompts.TRAINED`, rendered by the tokenizer's chat
template with the generation prompt — exactly what the trainers train on
(``lumir.train.rewriter.common.prompt_text``). Generation runs through
:class:`~lumir.models.chat.hf.TransformersChatModel` (left-padded batches), behind the on-disk LLM cache when
``llm_cache`` is given; the cache fingerprint covers the folder's files (and an adapter's base), so two adapters
never share cached rewrites. The reply is the whole rewrite: its first non-empty line, quotes stripped.
Validation, fallback, counters and provenance are those of every LLM rewriter (:mod:`lumir.rewrite.base`).

Example:
    >>> from lumir.testing.tiny import build_tiny_lm
    >>> from lumir.types import Query
    >>> rewriter = TrainedRewriter.from_model(*build_tiny_lm(), max_new_tokens=4)
    >>> [q.id for q in rewriter.rewrite([Query("q1", text="a red dog")])]
    ['q1']
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lumir.models.chat.hf import file_sample_digest
from lumir.protocols import Conversation, Embedder
from lumir.rewrite.base import LLMRewriter
from lumir.rewrite.prompts import rewriter_messages

__all__ = ["TrainedRewriter", "folder_digest"]

_QUOTES = "\"'“”‘’`"
_MODEL_FILES = (".safetensors", ".bin", ".pt", ".gguf", ".json", ".model", ".jinja", ".txt")
"""What a folder's fingerprint covers: weights, configs, tokenizer files and the manifest (not logs or plots)."""


def folder_digest(folder: str | Path, base: str | Path | None = None) -> str:
    """sha256 over the model files of a rewriter folder (name, size, first and last MiB of its weights, configs,
    tokenizer and manifest) and, for an adapter, of its ``base`` folder: the trained rewriter's LLM cache
    fingerprint. Training logs written beside them do not change it."""
    h = hashlib.sha256()
    for root in (Path(folder), *(() if base is None else (Path(base),))):
        h.update(f"|{root.name}|".encode())
        files = (p for p in root.iterdir() if p.is_file() and p.suffix in _MODEL_FILES and not p.name.startswith("."))
        for path in sorted(files):
            file_sample_digest(h, path)
    return h.hexdigest()


class TrainedRewriter(LLMRewriter):
    """Rewrite queries with a trained rewriter (or any local causal LM) on the trained prompt.

    Args:
        path: a trained-rewriter folder, a ``transformers`` causal-LM folder, or an offline LLM name (``smollm2``).
        batch_size: queries per ``generate`` call (left-padded together).
        do_sample: sample with ``temperature``/``top_p``/``seed`` instead of greedy decoding.
        max_new_tokens: generation cap per rewrite.
        device: ``"cpu"``, ``"cuda[:N]"`` or ``"auto"``; dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        max_words: longest acceptable rewrite (longer ones fall back as ``too_long``).
        similarity, min_similarity: an embedder (or spec) for the ``off_topic`` check (cosine < ``min_similarity``).
        llm_cache: SQLite file of the on-disk LLM cache (None: every call runs the model).

    Attributes:
        model, tokenizer: the loaded model (a peft model for an adapter) and its tokenizer (trainers reuse them).
        manifest: the folder's ``lumir_rewriter.json`` (a stub ``{"stage": "base", ...}`` for a plain folder).
        folder: where the weights were read (an offline name's converted folder); None for :meth:`from_model`.
    """

    name = "trained"

    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 16,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        max_new_tokens: int = 48,
        seed: int = 0,
        device: str = "cpu",
        dtype: str = "float32",
        max_words: int = 40,
        similarity: Embedder | str | Mapping[str, Any] | None = None,
        min_similarity: float = 0.5,
        llm_cache: str | Path | None = None,
    ) -> None:
        from lumir.rewrite.artifact import base_model_folder, load_rewriter_model

        folder = base_model_folder(path)
        model, tokenizer, manifest = load_rewriter_model(folder, dtype=dtype)
        base = base_model_folder(manifest["base"]) if manifest.get("adapter") else None
        self.path: str | None = str(path)
        self._init(
            model,
            tokenizer,
            manifest,
            name=folder.name,
            digest=folder_digest(folder, base),
            options={
                "batch_size": batch_size,
                "do_sample": do_sample,
                "temperature": temperature,
                "top_p": top_p,
                "max_new_tokens": max_new_tokens,
                "seed": seed,
                "device": device,
                "dtype": dtype,
                "max_words": max_words,
            },
            similarity=similarity,
            min_similarity=min_similarity,
            llm_cache=llm_cache,
        )
        self.folder: Path | None = folder
        self.chat_model._source = {"type": "trained-rewriter", "path": str(folder)}

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        manifest: Mapping[str, Any] | None = None,
        name: str = "in-memory",
        similarity: Embedder | str | Mapping[str, Any] | None = None,
        min_similarity: float = 0.5,
        **options: Any,
    ) -> TrainedRewriter:
        """A rewriter over a model already in memory (a trainer's policy), without the LLM cache: its weights
        change while it trains. The model is moved to ``device``/``dtype`` and put in eval mode; its spec has
        ``path: None`` (save it with :func:`~lumir.rewrite.artifact.save_rewriter` to rebuild it).

        ``options``: ``batch_size``, ``do_sample``, ``temperature``, ``top_p``, ``max_new_tokens``, ``seed``,
        ``device``, ``dtype``, ``max_words`` (the constructor's defaults otherwise).
        """
        defaults: dict[str, Any] = {"batch_size": 16, "do_sample": False, "temperature": 0.7, "top_p": 0.9,
                                    "max_new_tokens": 48, "seed": 0, "device": "cpu", "dtype": "float32",
                                    "max_words": 40}  # fmt: skip
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise TypeError(f"unknown TrainedRewriter option(s) {unknown}; known: {sorted(defaults)}")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        rewriter = cls.__new__(cls)
        rewriter.path = None
        rewriter.folder = None
        stub = {"format": "lumir-rewriter/1", "stage": "in-memory", "adapter": hasattr(model, "peft_config")}
        rewriter._init(model, tokenizer, dict(manifest or stub), name=name, digest=None,
                   options={**defaults, **options}, similarity=similarity, min_similarity=min_similarity,
                   llm_cache=None)  # fmt: skip
        return rewriter

    def _init(
        self,
        model: Any,
        tokenizer: Any,
        manifest: Mapping[str, Any],
        *,
        name: str,
        digest: str | None,
        options: Mapping[str, Any],
        similarity: Embedder | str | Mapping[str, Any] | None,
        min_similarity: float,
        llm_cache: str | Path | None,
    ) -> None:
        from lumir.models.chat.cache import CachedChatModel
        from lumir.models.chat.hf import TransformersChatModel

        if float(options["temperature"]) <= 0 and options["do_sample"]:
            raise ValueError(f"do_sample needs temperature > 0, got {options['temperature']}")
        self._setup_common(
            max_words=int(options["max_words"]),
            max_new_tokens=int(options["max_new_tokens"]),
            batch_size=int(options["batch_size"]),
            similarity=similarity,
            min_similarity=min_similarity,
        )
        self.do_sample = bool(options["do_sample"])
        self.temperature = float(options["temperature"])
        self.top_p = float(options["top_p"])
        self.seed = int(options["seed"])
        self.manifest = dict(manifest)
        self.llm_cache = None if llm_cache is None else str(llm_cache)
        chat = TransformersChatModel(
            model, tokenizer, name=name, device=options["device"], dtype=options["dtype"], batch_size=self.batch_size
        )
        chat._weights_digest = digest  # None: the in-memory parameters are hashed on first use
        self.chat_model = chat
        self.device, self.dtype = str(options["device"]), str(options["dtype"])
        self.chat = CachedChatModel(chat, llm_cache) if llm_cache is not None else chat

    # ------------------------------------------------------------------ the trained model
    @property
    def model(self) -> Any:
        """The causal LM (a peft model for an adapter), on :attr:`device`."""
        return self.chat_model.model

    @property
    def tokenizer(self) -> Any:
        """Its tokenizer (left padding, a pad token set)."""
        return self.chat_model.tokenizer

    def prompt(self, text: str) -> str:
        """The exact prompt string for a query (the trained prompt in the chat template, generation prompt on)."""
        return self.chat_model.render(self.conversation(text))

    # ------------------------------------------------------------------ LLMRewriter
    def spec(self) -> dict[str, Any]:
        """``{"type": "trained", "path": ..., <decoding>, ...}`` (``llm_cache`` only when one is used)."""
        out: dict[str, Any] = {
            "type": self.name,
            "path": self.path,
            "batch_size": self.batch_size,
            "do_sample": self.do_sample,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
            "device": self.device,
            "dtype": self.dtype,
            "max_words": self.max_words,
            **self._similarity_spec(),
        }
        if self.llm_cache is not None:
            out["llm_cache"] = self.llm_cache
        return out

    def conversation(self, text: str) -> Conversation:
        """:func:`~lumir.rewrite.prompts.rewriter_messages` of the query (no system message)."""
        return list(rewriter_messages(text))

    def generation_options(self) -> dict[str, Any]:
        """Greedy by default; with ``do_sample``, seeded sampling at ``temperature``/``top_p``."""
        if not self.do_sample:
            return {"max_new_tokens": self.max_new_tokens}
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "seed": self.seed}  # fmt: skip

    def parse(self, output: str) -> str:
        """The first non-empty line of the reply, quotes stripped."""
        line = next((ln for ln in output.splitlines() if ln.strip()), "")
        return line.strip().strip(_QUOTES + " ").strip()

    def __repr__(self) -> str:
        return f"TrainedRewriter(path={self.path!r}, stage={self.manifest.get('stage')!r})"
