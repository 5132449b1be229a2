"""Local ``transformers`` chat models: text causal LMs, vision-language models and (dequantised) GGUF files.

:class:`TransformersChatModel` implements the :class:`~lumir.protocols.ChatModel` protocol over any local model
folder: ``config.json`` with a ``vision_config`` loads as ``AutoModelForImageTextToText`` + ``AutoProcessor``
(images go through the processor), anything else as ``AutoModelForCausalLM`` + ``AutoTokenizer`` (text only).
Prompts are the model's own chat template with ``add_generation_prompt=True``; batches are left-padded, so the
next-token distribution of every row sits at the last position.

A **LoRA adapter folder** loads too: ``adapter_config.json`` (peft) beside a lumir manifest naming the base model
(``lumir_reranker.json`` written by :mod:`lumir.train.reranker`, ``lumir_rewriter.json`` by the rewriter
trainers) loads the base folder and applies the adapter with ``peft`` (``lumir[train]``), so
``load_chat_model("hf:ADAPTER_DIR")`` is a trained reranker or rewriter behind the same protocol. Trainers reuse
:meth:`TransformersChatModel.model_inputs` and :meth:`TransformersChatModel.answer_token_ids`, so what is trained is
exactly what :meth:`~TransformersChatModel.token_logprobs` scores.

Example:
    >>> from lumir.models.chat.base import user_message
    >>> from lumir.testing.tiny import build_tiny_lm
    >>> chat = TransformersChatModel(*build_tiny_lm(), name="tiny")
    >>> chat.token_logprobs([user_message("Is this red?")], ["True", "False"]).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from lumir._deps import require
from lumir.models.chat.base import (
    CallStats,
    ChatModelError,
    GenerationConfig,
    PromptTooLongError,
    conversation_images,
    conversation_text,
    first_token_ids,
    normalize_conversation,
)
from lumir.models.hub import dtype_name, quiet_loading, resolve_device, resolve_dtype, resolve_local_model
from lumir.protocols import Conversation

__all__ = ["ADAPTER_MANIFESTS", "TransformersChatModel", "adapter_base"]

ADAPTER_MANIFESTS = ("lumir_reranker.json", "lumir_rewriter.json")
"""lumir manifests that name an adapter folder's base model (``{"adapter": true, "base": FOLDER_OR_NAME}``)."""

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
_SAMPLE = 1 << 20  # bytes hashed at each end of a weights file
_PARAM_SAMPLE = 4096  # elements hashed per parameter tensor of an in-memory model


def file_sample_digest(h: Any, path: Path) -> None:
    """Feed a weights file's name, size and first/last MiB into ``h`` (cheap, yet seed-sensitive)."""
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with path.open("rb") as fh:
        h.update(fh.read(_SAMPLE))
        if size > 2 * _SAMPLE:
            fh.seek(size - _SAMPLE)
            h.update(fh.read(_SAMPLE))


def _folder_digest(folder: Path, files: Sequence[Path] | None = None) -> str:
    """sha256 over a model folder's ``config.json`` and a sample of each weights file."""
    h = hashlib.sha256()
    config = folder / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    weights = files if files is not None else sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    for path in weights:
        file_sample_digest(h, path)
    return h.hexdigest()


def _adapter_digest(base: Path, adapter: Path) -> str:
    """sha256 over a base folder's digest and its adapter's config and weights (distinct per adapter)."""
    h = hashlib.sha256(_folder_digest(base).encode())
    h.update((adapter / "adapter_config.json").read_bytes())
    for path in sorted(p for p in adapter.iterdir() if p.suffix in _WEIGHT_SUFFIXES):
        file_sample_digest(h, path)
    return h.hexdigest()


def _module_digest(model: Any) -> str:
    """sha256 over an in-memory model's config and a prefix of each parameter tensor."""
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, param in model.named_parameters():
        h.update(f"{name}:{tuple(param.shape)}".encode())
        h.update(param.detach().flatten()[:_PARAM_SAMPLE].float().cpu().numpy().tobytes())
    return h.hexdigest()


def _vocab_id(tokenizer: Any, text: str) -> int | None:
    """The id of the vocabulary entry spelled exactly ``text`` (e.g. ``"▁True"``), or None."""
    i = tokenizer.convert_tokens_to_ids(text)
    if i is None or (i == tokenizer.unk_token_id and text != tokenizer.unk_token):
        return None
    return int(i)


def adapter_base(folder: Path) -> Path | None:
    """The base model folder of a LoRA adapter folder, or None when ``folder`` is not an adapter.

    The base comes from the folder's lumir manifest (:data:`ADAPTER_MANIFESTS`); an offline LLM name there
    (``smollm2``) resolves to its converted transformers folder under ``$LUMIR_HOME/hf``.

    Raises:
        ModelNotFoundError: an adapter whose manifest names no base, or a base that is not on this machine.
    """
    import json

    from lumir.errors import ModelNotFoundError

    if not (folder / "adapter_config.json").is_file():
        return None
    manifest: dict[str, Any] | None = None
    manifest_file = folder / ADAPTER_MANIFESTS[0]
    for name in ADAPTER_MANIFESTS:
        if (folder / name).is_file():
            manifest_file = folder / name
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
            break
    if not manifest or not manifest.get("base"):
        raise ModelNotFoundError(
            f"{folder} holds a LoRA adapter (adapter_config.json) but no lumir manifest naming its base model "
            f"(one of {list(ADAPTER_MANIFESTS)} with a 'base' key); load the base with the adapter through peft, "
            "or merge the adapter into a full model folder"
        )
    base = Path(str(manifest["base"])).expanduser()
    if base.is_dir():
        return base.resolve()
    from lumir.models.chat.registry import OFFLINE_LLMS, lumir_home, offline_llm

    try:
        converted = lumir_home() / "hf" / offline_llm(str(manifest["base"])).name
    except KeyError:
        converted = None
    if converted is not None and (converted / "config.json").is_file():
        return converted
    raise ModelNotFoundError(
        f"the adapter in {folder} was trained on base model {str(manifest['base'])!r}, which is not a folder on this "
        f"machine{'' if converted is None else f' (nor converted yet at {converted})'}; put the base there, or "
        f"edit 'base' in {manifest_file}" + (f" (offline LLMs: {sorted(OFFLINE_LLMS)})" if converted is None else "")
    )


class _StopOnStrings:
    """A ``transformers`` stopping criterion: a row is done once its new text holds any stop string."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], prompt_length: int) -> None:
        self.tokenizer, self.stop, self.prompt_length = tokenizer, tuple(stop), prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        done = [any(s in t for s in self.stop) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _cut(text: str, stop: Sequence[str]) -> str:
    """``text`` up to its earliest stop string."""
    ends = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(ends)] if ends else text


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch for sampling without disturbing the caller's RNG state."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class TransformersChatModel:
    """A local ``transformers`` LLM or vision-language model behind the ChatModel protocol.

    Args:
        model: a causal LM or image-text-to-text model (moved to ``device``/``dtype`` and put in eval mode).
        processor_or_tokenizer: the tokenizer of a text LM, or the processor of a vision-language model; its
            chat template renders conversations. The tokenizer is switched to left padding.
        name: model name for messages and specs (default: the config's ``name_or_path`` or model type).
        device: ``"cpu"``, ``"cuda[:N]"`` or ``"auto"``.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        batch_size: conversations per forward pass (1 runs them one at a time).
        max_length: context length override (default: the config's ``max_position_embeddings``).

    Attributes:
        backend: ``"transformers"``.
        supports_images: True for vision-language models.
        context_length: longest prompt accepted, in tokens (None when unknown).
        stats: calls (forward passes or ``generate`` calls), conversations and prompt tokens so far.
    """

    backend = "transformers"

    def __init__(
        self,
        model: Any,
        processor_or_tokenizer: Any,
        *,
        name: str | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        batch_size: int = 8,
        max_length: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, device=self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.processor = processor_or_tokenizer
        self.tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        config = model.config
        self.supports_images = getattr(config, "vision_config", None) is not None and hasattr(
            processor_or_tokenizer, "image_processor"
        )
        self.name = name or str(getattr(config, "name_or_path", "") or config.model_type)
        self.batch_size = batch_size
        self.max_length = max_length
        text_config = config.get_text_config()
        self.context_length: int | None = max_length or getattr(text_config, "max_position_embeddings", None)
        self.stats = CallStats()
        self._source: dict[str, Any] = {"type": self.backend, "model_path": None}
        self._weights_digest: str | None = None

    # ----------------------------------------------------------------------------------------------- constructors

    @classmethod
    def from_pretrained(cls, model_path: str | Path, **options: Any) -> TransformersChatModel:
        """Load a local model folder: a vision-language model when its config has ``vision_config``, else a text LM.

        Args:
            model_path: a local directory (never a hub id; nothing is downloaded).
            options: ``name``, ``device``, ``dtype``, ``batch_size``, ``max_length`` (see the class).

        Raises:
            ModelNotFoundError: ``model_path`` is not a local directory.
        """
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        path = resolve_local_model(model_path, what="chat model")
        dtype = resolve_dtype(options.get("dtype", "float32"))
        base = adapter_base(path)
        weights = base or path
        model: Any
        with quiet_loading():
            config = AutoConfig.from_pretrained(weights, local_files_only=True)
            if getattr(config, "vision_config", None) is not None:
                model = AutoModelForImageTextToText.from_pretrained(weights, dtype=dtype, local_files_only=True)
                processor = AutoProcessor.from_pretrained(weights, local_files_only=True)
            else:
                model = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype, local_files_only=True)
                processor = AutoTokenizer.from_pretrained(weights, local_files_only=True)
            if base is not None:
                require("peft", extra="train")
                from peft import PeftModel

                with warnings.catch_warnings():  # peft asks for a transformers 5 deprecated attribute
                    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
                    model = PeftModel.from_pretrained(model, path, is_trainable=False)
        chat = cls(model, processor, **{"name": path.name, **options})
        chat._source = {"type": cls.backend, "model_path": str(path)}
        chat._weights_digest = _folder_digest(path) if base is None else _adapter_digest(base, path)
        return chat

    @classmethod
    def from_gguf(cls, gguf_path: str | Path, name: str | None = None, **options: Any) -> TransformersChatModel:
        """Load a GGUF file through transformers' GGUF support (weights are dequantised to ``dtype``).

        Needs the ``gguf`` and ``accelerate`` packages. Loading parses and dequantises the whole file (SmolLM2-135M:
        about 20 s on a CPU); llama-cpp-python runs the same file quantised and faster.

        Raises:
            ImportError: ``gguf`` or ``accelerate`` is missing, naming the extra that installs it.
            ModelNotFoundError: the file does not exist.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lumir.errors import ModelNotFoundError

        require("gguf", extra="llm")
        require("accelerate", extra="llm")
        path = Path(gguf_path).expanduser().resolve()
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {str(gguf_path)!r} does not exist")
        dtype = resolve_dtype(options.get("dtype", "float32"))
        kwargs: dict[str, Any] = {"gguf_file": path.name, "local_files_only": True}
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=dtype, **kwargs)
        chat = cls(model, tokenizer, name=name or path.stem, **options)
        chat._source = {"type": "transformers-gguf", "gguf_path": str(path)}
        chat._weights_digest = _folder_digest(path.parent, [path])
        return chat

    # ------------------------------------------------------------------------------------------------- identity

    @property
    def fingerprint(self) -> str:
        """A stable id of the weights, chat template and dtype (for cache keys); differs across seeds."""
        if self._weights_digest is None:
            self._weights_digest = _module_digest(self.model)
        template = getattr(self.processor, "chat_template", None) or self.tokenizer.chat_template or ""
        h = hashlib.sha256(f"{self._weights_digest}|{dtype_name(self.dtype)}|{template}".encode())
        return f"{self.backend}:{h.hexdigest()[:24]}"

    def spec(self) -> dict[str, Any]:
        """A JSON-serialisable description that ``registry.load_chat_model`` rebuilds (when loaded from disk)."""
        return {
            **self._source,
            "name": self.name,
            "device": str(self.device),
            "dtype": dtype_name(self.dtype),
            "batch_size": self.batch_size,
            "max_length": self.max_length,
        }

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in this model's tokens (no special tokens added)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def __repr__(self) -> str:
        return f"TransformersChatModel(name={self.name!r}, images={self.supports_images}, device={self.device})"

    # -------------------------------------------------------------------------------------------------- prompts

    def render(self, conversation: Conversation) -> str:
        """The exact prompt string for a conversation: the chat template with ``add_generation_prompt=True``.

        Raises:
            ModalityError: a text-only model was given an image.
            ChatModelError: the model has no chat template.
        """
        if self.supports_images:
            messages: Conversation = [
                {"role": m["role"], "content": [p if p["type"] == "text" else {"type": "image"} for p in m["content"]]}
                for m in normalize_conversation(conversation)
            ]
            owner = self.processor
        else:
            messages, owner = conversation_text(conversation), self.tokenizer
        if not getattr(owner, "chat_template", None):
            raise ChatModelError(f"{self.name} has no chat template; save one with its tokenizer or processor")
        return str(owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def _encode(self, conversations: Sequence[Conversation], *, reserve: int) -> dict[str, torch.Tensor]:
        """Left-padded model inputs for one batch, refusing any prompt that leaves under ``reserve`` free tokens."""
        prompts = [self.render(c) for c in conversations]
        bos = self.tokenizer.bos_token
        special = not (bos and prompts[0].startswith(bos))  # templates that write BOS themselves get no second one
        if self.supports_images:
            images = [ref.load() for c in conversations for ref in conversation_images(c)]
            enc = self.processor(
                text=prompts, images=images or None, padding=True, add_special_tokens=special, return_tensors="pt"
            )
        else:
            enc = self.tokenizer(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        if self.context_length is not None:
            for i, n in enumerate(lengths):
                if n + reserve > self.context_length:
                    raise PromptTooLongError(
                        f"{self.name}: prompt {i} of the batch has {n} tokens and the context length is "
                        f"{self.context_length}"
                        + (f" (keeping {reserve} for the answer)" if reserve else "")
                        + "; shorten it (fewer or shorter candidates) or use a longer-context model",
                        tokens=int(n),
                        limit=self.context_length,
                    )
        self.stats.calls += 1
        self.stats.conversations += len(conversations)
        self.stats.prompt_tokens += int(sum(lengths))
        return {k: v.to(self.device) for k, v in enc.items()}

    def _batches(self, conversations: Sequence[Conversation], batch_size: int | None) -> Iterator[list[Conversation]]:
        size = self.batch_size if batch_size is None else batch_size
        if size < 1:
            raise ValueError(f"batch_size must be >= 1, got {size}")
        for start in range(0, len(conversations), size):
            yield list(conversations[start : start + size])

    # ------------------------------------------------------------------------------------------------ protocol

    def token_logprobs(
        self, conversations: Sequence[Conversation], tokens: Sequence[str], *, batch_size: int | None = None
    ) -> torch.Tensor:
        """Log-probabilities (n, len(tokens)) of each candidate's first token at the first assistant position.

        One forward pass per batch (``batch_size`` overrides the model's; 1 runs one conversation per pass); a
        full-vocabulary log-softmax at the last (left-padded) position. Returns a float32 CPU tensor.

        Raises:
            PromptTooLongError: a prompt does not fit the context (checked before the model runs).
            ValueError: a candidate encodes to nothing, or two candidates share their first token.
        """
        ids = self.answer_token_ids(tokens)
        index = torch.tensor(ids, device=self.device)
        rows = [torch.empty(0, len(ids))]
        for batch in self._batches(conversations, batch_size):
            inputs = self.model_inputs(batch)
            with torch.inference_mode():
                logits = self.model(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1]  # (batch, vocab)
            rows.append(logits.float().log_softmax(dim=-1)[:, index].cpu())
        return torch.cat(rows)

    def answer_token_ids(self, tokens: Sequence[str]) -> list[int]:
        """The vocabulary id each candidate answer is scored by in :meth:`token_logprobs` (its first token,
        per :func:`~lumir.models.chat.base.first_token_ids`); trainers use them as next-token targets.

        Raises:
            ValueError: a candidate encodes to nothing, or two candidates share their first token.
        """
        tok = self.tokenizer
        return first_token_ids(
            lambda s: tok.encode(s, add_special_tokens=False),
            tokens,
            model=self.name,
            piece=lambda i: str(tok.convert_ids_to_tokens(i)),
            lookup=lambda text: _vocab_id(tok, text),
        )

    def model_inputs(self, conversations: Sequence[Conversation]) -> dict[str, torch.Tensor]:
        """The exact forward-pass inputs :meth:`token_logprobs` gives the model for one batch: chat template with
        the generation prompt, left padding, and (text models) position ids that skip the padding, so the logits
        at the last position are the first assistant token's. On this model's device.

        Raises:
            PromptTooLongError: a prompt does not fit the context.
        """
        inputs = self._encode(conversations, reserve=0)
        if not self.supports_images:  # positions that ignore the left padding (VLMs compute their own)
            inputs["position_ids"] = (inputs["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
        return inputs

    def generate(
        self, conversations: Sequence[Conversation], *, batch_size: int | None = None, **gen: Any
    ) -> list[str]:
        """Complete each conversation: the new text only, special tokens skipped, cut at a stop string, stripped.

        ``gen`` holds :class:`~lumir.models.chat.base.GenerationConfig` fields (greedy unless ``temperature`` > 0,
        then seeded by ``seed``). ``max_new_tokens`` is capped by the room the context leaves. ``batch_size``
        overrides the model's (1 runs one conversation per ``generate`` call).

        Raises:
            PromptTooLongError: a prompt leaves no room for one new token.
            TypeError: an unknown generation option.
        """
        cfg = GenerationConfig.from_kwargs(gen)
        eos = self.model.generation_config.eos_token_id
        eos_ids = sorted({*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id} - {None})
        out: list[str] = []
        for batch in self._batches(conversations, batch_size):
            inputs = self._encode(batch, reserve=1)
            prompt_length = inputs["input_ids"].shape[1]
            max_new = cfg.max_new_tokens
            if self.context_length is not None:  # _encode left room for at least one token
                max_new = min(max_new, self.context_length - int(inputs["attention_mask"].sum(dim=1).max()))
            options: dict[str, Any] = {
                "max_new_tokens": max_new,
                "do_sample": not cfg.greedy,
                "pad_token_id": self.tokenizer.pad_token_id,
                "eos_token_id": eos_ids,
                "repetition_penalty": 1.0,
            }
            if not cfg.greedy:
                options.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
            if cfg.stop:
                options["stopping_criteria"] = [_StopOnStrings(self.tokenizer, cfg.stop, prompt_length)]
            with torch.inference_mode(), nullcontext() if cfg.greedy else _seeded(cfg.seed, self.device):
                ids = self.model.generate(**inputs, **options)
            new = ids[:, prompt_length:]
            self.stats.extra["generated_tokens"] = self.stats.extra.get("generated_tokens", 0) + int(
                (new != self.tokenizer.pad_token_id).sum()
            )
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            out.extend(_cut(t, cfg.stop).strip() if cfg.stop else t.strip() for t in texts)
        return out
