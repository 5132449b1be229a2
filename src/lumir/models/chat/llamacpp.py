"""A ChatModel over a local GGUF file through llama-cpp-python (``pip install 'lumir[llm]'``).

The prompt is the GGUF's own chat template (metadata ``tokenizer.chat_template``, rendered with
``add_generation_prompt=True``; ChatML when the file has none), tokenized with special tokens parsed and without an
extra BOS (the template adds one where the model wants it), exactly as llama-cpp-python's own chat handler and its
OpenAI-compatible server do.

``token_logprobs`` evaluates each prompt, takes the logits at the last position and log-softmaxes them over the
whole vocabulary. Consecutive prompts that share a prefix (the chat template's system message, a reranker's
instructions) reuse llama.cpp's KV cache for that prefix: only the differing suffix is evaluated
(``reuse_prefix=True``; ``stats.extra["reused_tokens"]`` counts what was saved). The values equal a fresh
evaluation (measured identical, max |difference| 0.0, on SmolLM2; the tests allow 1e-4).

``generate`` reuses the previous prompt's common prefix too (llama-cpp-python does it), and with ``prefix_snapshots``
it also keeps the KV cache of the prefix shared by all conversations of one call (a few-shot prompt's instruction and
examples) as a snapshot: a later call whose prompts start with it restores the snapshot instead of evaluating the
prefix again, when another prompt came in between (two prompt families taking turns, as the action-knowledge
extractor's joint prompt and Q2 retries do). Greedy outputs are unchanged (tested on SmolLM2).

llama.cpp runs one sequence at a time here (llama-cpp-python has no batched generation; on CPU, batching several
sequences in one decode measured no faster per token), so conversations are processed sequentially; the model is
guarded by a lock and may be shared between threads.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lumir._deps import require
from lumir.errors import ModelNotFoundError
from lumir.models.chat.base import (
    CallStats,
    ChatModelError,
    GenerationConfig,
    PromptTooLongError,
    conversation_text,
    first_token_ids,
)
from lumir.protocols import Conversation

__all__ = ["LlamaCppChatModel", "gguf_fingerprint"]


def llama_cpp_lib() -> Any:
    """The low-level ``llama_cpp`` bindings (state save / restore of one sequence)."""
    import llama_cpp

    return llama_cpp


_MIB = 1 << 20


def gguf_fingerprint(path: str | Path) -> str:
    """``gguf-ht:`` + sha256 of the file's size, first MiB and last MiB (specific to a GGUF, and O(1) to compute).

    The first MiB holds the GGUF header and metadata (architecture, tokenizer, chat template), the last MiB the
    final tensor data, so different models or quantisations of one model differ.
    """
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with p.open("rb") as fh:
        h.update(fh.read(_MIB))
        if size > _MIB:
            fh.seek(max(_MIB, size - _MIB))
            h.update(fh.read(_MIB))
    return f"gguf-ht:{h.hexdigest()}"


class LlamaCppChatModel:
    """A local GGUF language model (text only).

    Args:
        model_path: the ``.gguf`` file.
        name: a display name (defaults to the file's stem).
        n_ctx: context window in tokens; longer prompts raise :class:`PromptTooLongError`.
        n_threads: CPU threads (llama.cpp's default when None).
        n_batch: tokens per llama.cpp decode call.
        seed: default sampling seed (greedy decoding ignores it).
        verbose: let llama.cpp log to stderr.
        reuse_prefix: reuse the KV cache of the previous prompt's common prefix in :meth:`token_logprobs`.
        prefix_snapshots: how many shared-prefix KV snapshots :meth:`generate` keeps (0: none).
        source: how :meth:`spec` locates the model (default ``{"type": "llama-cpp", "model_path": ...}``; the
            offline LLMs use their portable name).

    Raises:
        ModelNotFoundError: ``model_path`` is not a file.
        ImportError: llama-cpp-python is not installed (names the extra).
    """

    backend = "llama-cpp"
    supports_images = False

    def __init__(
        self,
        model_path: str | Path,
        *,
        name: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        seed: int = 0,
        verbose: bool = False,
        reuse_prefix: bool = True,
        prefix_snapshots: int = 4,
        source: Mapping[str, Any] | None = None,
    ) -> None:
        llama_cpp = require("llama_cpp", extra="llm", package="llama-cpp-python")
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF model file {path} does not exist")
        self.model_path = path
        self.name = name or path.stem
        self.n_threads = n_threads
        self.n_batch = int(n_batch)
        self.seed = int(seed)
        self.verbose = bool(verbose)
        self.reuse_prefix = bool(reuse_prefix)
        self.prefix_snapshots = int(prefix_snapshots)
        self._snapshots: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self._source = dict(source) if source is not None else {"type": "llama-cpp", "model_path": str(path)}
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=int(n_ctx),
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_batch=self.n_batch,
                seed=self.seed,
                logits_all=False,
                verbose=self.verbose,
            )
        except (ValueError, RuntimeError) as err:
            raise ChatModelError(f"llama.cpp could not load {path}: {err}") from err
        self.context_length: int = int(self._llm.n_ctx())
        self.n_ctx = int(n_ctx)
        self._n_vocab = int(self._llm.n_vocab())
        self.stats = CallStats()
        self._lock = threading.RLock()
        self._fingerprint: str | None = None
        self._formatter = self._make_formatter()

    def _make_formatter(self) -> Any:
        from llama_cpp import llama_chat_format

        llm = self._llm
        template = llm.metadata.get("tokenizer.chat_template") or llama_chat_format.CHATML_CHAT_TEMPLATE
        self.chat_template: str = template

        def text(token_id: int) -> str:
            return str(llm._model.token_get_text(token_id)) if token_id != -1 else ""

        self._eos_text = text(llm.token_eos())
        return llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=self._eos_text, bos_token=text(llm.token_bos()), add_generation_prompt=True
        )

    # ------------------------------------------------------------------ identity

    @property
    def fingerprint(self) -> str:
        """Model identity for cache keys: see :func:`gguf_fingerprint` (decoding settings are not part of it)."""
        if self._fingerprint is None:
            self._fingerprint = gguf_fingerprint(self.model_path)
        return self._fingerprint

    def spec(self) -> dict[str, Any]:
        """A JSON dict from which :func:`~lumir.models.chat.registry.load_chat_model` rebuilds this model."""
        return {
            **self._source,
            "name": self.name,
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "n_batch": self.n_batch,
            "seed": self.seed,
            "verbose": self.verbose,
            "reuse_prefix": self.reuse_prefix,
            "prefix_snapshots": self.prefix_snapshots,
        }

    def __repr__(self) -> str:
        return f"LlamaCppChatModel({str(self.model_path)!r}, n_ctx={self.context_length})"

    def close(self) -> None:
        """Free the llama.cpp model and context."""
        with self._lock:
            self._llm.close()

    # ------------------------------------------------------------------ prompts

    def render(self, conversation: Conversation) -> str:
        """The exact prompt text for a conversation (the GGUF's chat template, ending at the assistant turn).

        Raises:
            ModalityError: the conversation holds an image (this backend reads text only).
        """
        messages = conversation_text(conversation, image_token=None)
        try:
            return str(self._formatter(messages=messages).prompt)
        except Exception as err:  # jinja2 errors, raise_exception() in templates
            raise ChatModelError(f"{self.name}: the chat template failed on this conversation: {err}") from err

    def count_tokens(self, text: str) -> int:
        """Length of plain ``text`` in this model's tokens (no BOS, special-token strings read as text)."""
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a rendered prompt (special tokens parsed, no BOS added)."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _prompt_tokens(self, conversation: Conversation, *, room: int) -> list[int]:
        ids = self.tokenize(self.render(conversation))
        if not ids:
            raise ValueError("the rendered prompt is empty")
        if len(ids) + room > self.context_length:
            raise PromptTooLongError(
                f"{self.name}: the prompt has {len(ids)} tokens and the context window is {self.context_length} "
                f"(n_ctx); shorten the prompt or load the model with a larger n_ctx",
                tokens=len(ids),
                limit=self.context_length,
            )
        return ids

    # ------------------------------------------------------------------ evaluation

    def _eval_last_logits(self, ids: list[int]) -> np.ndarray:
        """Evaluate ``ids`` (reusing the cached common prefix) and return the last position's logits."""
        llm = self._llm
        keep = 0
        if self.reuse_prefix and llm.n_tokens > 0:
            cached = np.asarray(llm.input_ids[: llm.n_tokens])
            m = min(len(cached), len(ids))
            same = cached[:m] == np.asarray(ids[:m], dtype=cached.dtype)
            keep = m if bool(same.all()) else int(np.argmin(same))
            keep = min(keep, len(ids) - 1)  # always evaluate the last token, so its logits are fresh
            if keep > 0 and not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
                keep = 0
        if keep > 0:
            llm.n_tokens = keep
        else:
            llm.reset()
        try:
            llm.eval(ids[keep:])
        except RuntimeError as err:
            llm.reset()
            raise ChatModelError(
                f"{self.name}: llama.cpp failed to evaluate a {len(ids)}-token prompt: {err}"
            ) from err
        ptr = llm._ctx.get_logits_ith(-1)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).astype(np.float64)
        self.stats.calls += 1
        self.stats.conversations += 1
        self.stats.prompt_tokens += len(ids)
        self.stats.extra["reused_tokens"] = self.stats.extra.get("reused_tokens", 0) + keep
        return logits

    def token_logprobs(self, conversations: Sequence[Conversation], tokens: Sequence[str]) -> torch.Tensor:
        """(n, len(tokens)) float32 log-probabilities of each candidate's first token at the assistant position.

        Raises:
            PromptTooLongError: a prompt does not fit ``n_ctx``.
            ValueError: a candidate encodes to nothing, or two share their first token.
        """
        with self._lock:
            llm = self._llm
            ids = first_token_ids(
                lambda s: llm.tokenize(s.encode("utf-8"), add_bos=False, special=False),
                tokens,
                model=self.name,
                piece=lambda i: llm.detokenize([i]).decode("utf-8", errors="replace"),  # "▁" reads as " "
            )
            prompts = [self._prompt_tokens(c, room=0) for c in conversations]  # errors before any work
            out = np.zeros((len(prompts), len(ids)), dtype=np.float32)
            for i, prompt in enumerate(prompts):
                logits = self._eval_last_logits(prompt)
                top = logits.max()
                log_z = top + np.log(np.exp(logits - top).sum())
                out[i] = (logits[ids] - log_z).astype(np.float32)
        return torch.from_numpy(out)

    # ------------------------------------------------------------------ shared-prefix snapshots

    _MIN_SNAPSHOT = 32
    """Shorter shared prefixes are not worth a snapshot."""

    def _cached_prefix(self, ids: Sequence[int]) -> int:
        """How many leading tokens of ``ids`` the KV cache holds now."""
        llm = self._llm
        m = min(int(llm.n_tokens), len(ids))
        if m == 0:
            return 0
        same = np.asarray(llm.input_ids[:m]) == np.asarray(ids[:m], dtype=llm.input_ids.dtype)
        return m if bool(same.all()) else int(np.argmin(same))

    def _snapshot(self, prompts: Sequence[list[int]]) -> None:
        """Evaluate the prefix all ``prompts`` share (but their last tokens) and keep its KV cache as a snapshot."""
        first = np.asarray(prompts[0])
        n = min(len(p) for p in prompts) - 1
        for p in prompts[1:]:
            same = first[:n] == np.asarray(p[:n])
            n = n if bool(same.all()) else int(np.argmin(same))
        key = tuple(int(t) for t in first[:n])
        if n < self._MIN_SNAPSHOT or key in self._snapshots:
            return
        llm = self._llm
        keep = min(self._cached_prefix(key), n - 1)
        if keep > 0 and llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            llm.n_tokens = keep
        else:
            llm.reset()
            keep = 0
        llm.eval(list(key[keep:]))
        ctx = llm._ctx.ctx
        size = int(llama_cpp_lib().llama_state_seq_get_size(ctx, 0))
        buf = (ctypes.c_uint8 * size)()
        written = int(llama_cpp_lib().llama_state_seq_get_data(ctx, buf, size, 0))
        if written <= 0:
            return
        self._snapshots[key] = bytes(buf[:written])
        while len(self._snapshots) > self.prefix_snapshots:
            self._snapshots.popitem(last=False)

    def _restore(self, ids: list[int]) -> None:
        """Load the longest snapshot that is a prefix of ``ids`` when it beats what the KV cache holds now."""
        cached = self._cached_prefix(ids)
        best: tuple[int, ...] | None = None
        for key in self._snapshots:
            if (
                cached < len(key) < len(ids)
                and (best is None or len(key) > len(best))
                and tuple(ids[: len(key)]) == key
            ):
                best = key
        if best is None:
            return
        llm = self._llm
        blob = self._snapshots[best]
        self._snapshots.move_to_end(best)
        llm.reset()
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        buf = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
        if int(llama_cpp_lib().llama_state_seq_set_data(llm._ctx.ctx, buf, len(blob), 0)) == 0:
            llm.reset()
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            return
        llm.input_ids[: len(best)] = best
        llm.n_tokens = len(best)
        llm._requires_eval = True
        self.stats.extra["restored_tokens"] = self.stats.extra.get("restored_tokens", 0) + len(best)

    def generate(self, conversations: Sequence[Conversation], **gen: Any) -> list[str]:
        """The assistant's reply to each conversation (greedy unless ``temperature > 0``; see GenerationConfig).

        Generation ends at the model's end-of-turn token, a ``stop`` string (not included) or ``max_new_tokens``
        (fewer when the context window fills up).
        """
        cfg = GenerationConfig.from_kwargs(gen)
        with self._lock:
            prompts = [self._prompt_tokens(c, room=1) for c in conversations]
            outs: list[str] = []
            if self.prefix_snapshots > 0 and len(prompts) > 1:
                self._snapshot(prompts)
            for prompt in prompts:
                if self._snapshots:
                    self._restore(prompt)
                try:
                    res = self._llm.create_completion(
                        prompt=prompt,
                        max_tokens=cfg.max_new_tokens,
                        temperature=cfg.temperature,
                        top_p=cfg.top_p,
                        top_k=0,
                        min_p=0.0,
                        repeat_penalty=1.0,
                        stop=list(cfg.stop),
                        seed=cfg.seed,
                    )
                except (RuntimeError, ValueError) as err:
                    self._llm.reset()
                    raise ChatModelError(f"{self.name}: llama.cpp generation failed: {err}") from err
                text = str(res["choices"][0]["text"])
                self.stats.calls += 1
                self.stats.conversations += 1
                self.stats.prompt_tokens += len(prompt)
                outs.append(text)
        return outs
