"""What every ChatModel backend shares: conversations, decoding parameters, errors and cache keys.

A *conversation* is a list of ``{"role", "content"}`` messages (the OpenAI/transformers chat shape). ``content``
is a string or a list of parts ``{"type": "text", "text": ...}`` / ``{"type": "image", "image": ImageRef}``.
Backends turn it into their own prompt: a chat template (transformers, GGUF metadata) or an OpenAI request.

Two operations make up the :class:`~lumir.protocols.ChatModel` protocol:

- ``generate(conversations, **gen)`` -> one string per conversation (decoding per :class:`GenerationConfig`);
- ``token_logprobs(conversations, tokens)`` -> ``(n, len(tokens))`` float32 log-probabilities of each candidate
  token at the first assistant position (full-vocabulary log-softmax; a candidate string is scored by its first
  token, see :func:`first_token_ids`). True/False, YES/NO and position scoring are built on this.

Backends also expose ``spec()`` (how to rebuild them), ``fingerprint`` (model identity for cache keys) and
``supports_images``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lumir.errors import ChatEndpointError, ChatModelError, ModalityError, PromptTooLongError
from lumir.protocols import Conversation
from lumir.types import ImageRef, as_image_ref

__all__ = [
    "ChatEndpointError",
    "ChatModelError",
    "GenerationConfig",
    "PromptTooLongError",
    "conversation_images",
    "conversation_key",
    "conversation_text",
    "first_token_ids",
    "image_digest",
    "image_part",
    "normalize_conversation",
    "text_part",
    "user_message",
]


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding parameters shared by all backends (greedy by default, so runs are reproducible and cacheable).

    Attributes:
        max_new_tokens: generation cap.
        temperature: 0 means greedy decoding.
        top_p: nucleus sampling mass (ignored when greedy).
        stop: strings that end generation (not included in the output).
        seed: sampling seed (ignored when greedy).
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0

    @classmethod
    def from_kwargs(cls, gen: Mapping[str, Any]) -> GenerationConfig:
        """Build from ``generate(**gen)`` keyword arguments, naming any unknown key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(gen) - known)
        if unknown:
            raise TypeError(f"unknown generation option(s) {unknown}; known: {sorted(known)}")
        values = dict(gen)
        if "stop" in values:
            stop = values["stop"]
            values["stop"] = (stop,) if isinstance(stop, str) else tuple(stop or ())
        cfg = cls(**values)
        if cfg.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}")
        if cfg.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {cfg.temperature}")
        return cfg

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stop": list(self.stop)}


def text_part(text: str) -> dict[str, Any]:
    """A text content part."""
    return {"type": "text", "text": text}


def image_part(image: Any) -> dict[str, Any]:
    """An image content part (a path, bytes, PIL image or ImageRef)."""
    ref = as_image_ref(image)
    if ref is None:
        raise ValueError("image_part needs an image")
    return {"type": "image", "image": ref}


def user_message(*parts: str | dict[str, Any] | ImageRef) -> Conversation:
    """A one-message user conversation from strings, parts and images.

    Example:
        >>> user_message("Is this red?")[0]["content"]
        [{'type': 'text', 'text': 'Is this red?'}]
    """
    content = []
    for p in parts:
        if isinstance(p, str):
            content.append(text_part(p))
        elif isinstance(p, ImageRef):
            content.append(image_part(p))
        else:
            content.append(p)
    return [{"role": "user", "content": content}]


def normalize_conversation(conversation: Conversation) -> Conversation:
    """Check a conversation and return it with list-of-parts content everywhere (strings become text parts).

    Raises:
        ValueError: naming the message and part that is malformed.
    """
    if not isinstance(conversation, list) or not conversation:
        raise ValueError("a conversation is a non-empty list of {'role', 'content'} messages")
    out: Conversation = []
    for i, msg in enumerate(conversation):
        if not isinstance(msg, Mapping) or "role" not in msg or "content" not in msg:
            raise ValueError(f"message {i} must be a mapping with 'role' and 'content'")
        if msg["role"] not in ("system", "user", "assistant"):
            raise ValueError(f"message {i} has unknown role {msg['role']!r}")
        content = msg["content"]
        parts: list[dict[str, Any]] = []
        for j, part in enumerate([text_part(content)] if isinstance(content, str) else list(content)):
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image" and part.get("image") is not None:
                parts.append({"type": "image", "image": as_image_ref(part["image"])})
            else:
                raise ValueError(f"message {i} part {j} must be a text or image part, got {part!r}")
        out.append({"role": msg["role"], "content": parts})
    return out


def conversation_images(conversation: Conversation) -> list[ImageRef]:
    """The images of a conversation, in order."""
    return [p["image"] for m in normalize_conversation(conversation) for p in m["content"] if p["type"] == "image"]


def conversation_text(conversation: Conversation, *, image_token: str | None = None) -> Conversation:
    """A text-only copy (string contents): image parts become ``image_token``, or raise when it is None.

    Raises:
        ModalityError: the conversation has images and ``image_token`` is None (a text-only model).
    """
    out: Conversation = []
    for m in normalize_conversation(conversation):
        pieces = []
        for p in m["content"]:
            if p["type"] == "text":
                pieces.append(p["text"])
            elif image_token is None:
                raise ModalityError(
                    "this chat model reads text only and the conversation holds an image; use a vision-language "
                    "model, or describe images by their captions (a reranker's caption-proxy mode)"
                )
            else:
                pieces.append(image_token)
        out.append({"role": m["role"], "content": "".join(pieces)})
    return out


def image_digest(ref: ImageRef) -> str:
    """sha256 of an image's pixels (decoded, RGB), so a path and its bytes hash alike."""
    img = ref.load()
    h = hashlib.sha256(f"{img.size[0]}x{img.size[1]}".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def conversation_key(conversation: Conversation) -> str:
    """Canonical JSON of a conversation with each image replaced by the sha256 of its pixels (for cache keys)."""
    canon = []
    for m in normalize_conversation(conversation):
        parts = [
            {"type": "text", "text": p["text"]}
            if p["type"] == "text"
            else {"type": "image", "sha256": image_digest(p["image"])}
            for p in m["content"]
        ]
        canon.append({"role": m["role"], "content": parts})
    return json.dumps(canon, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


_WORD_MARKERS = "▁Ġ "
"""Word-start markers: SentencePiece's ``▁``, byte-level BPE's ``Ġ``, or a plain space in decoded pieces."""


def _word(piece: str) -> str:
    """A token's text without word-start markers and surrounding whitespace (``"▁True"`` -> ``"True"``)."""
    return piece.replace("▁", " ").replace("Ġ", " ").strip()


def first_token_ids(
    encode: Any,
    tokens: Sequence[str],
    *,
    model: str,
    piece: Callable[[int], str] | None = None,
    lookup: Callable[[str], int | None] | None = None,
) -> list[int]:
    """The token id each candidate answer is scored by, refusing candidates that share it.

    ``encode(text) -> list[int]`` encodes without special tokens. A candidate's log-probability is that of *one*
    token at the next position: the first token of its encoding (``"True"``, ``"YES"`` and ``"1"``..``"9"`` are one
    token in common vocabularies; a longer word is scored by its first piece). Two refinements make this hold for
    SentencePiece (Llama-style) vocabularies too, where a word at the start of a text gains a ``▁`` marker:

    1. With ``piece(id) -> token text``, leading tokens that are a lone word-start marker (``"▁"``, ``"Ġ"``, a
       space) are skipped: a tokenizer without ``"▁YES"`` encodes ``"YES"`` as ``["▁", "YES"]``, and ``"▁"`` (shared
       by every such candidate, and no answer) would otherwise be scored.
    2. With ``lookup(token text) -> id or None`` as well, the candidates are kept in one form: when some resolve to
       a marked token (``"▁Yes"``) and others to a bare one (``"No"``, because ``"▁No"`` is not in the vocabulary),
       all switch to the marked form if every candidate has it as a single token, else to the bare form if every
       candidate has that, else stay as they are (P(True) over ``"▁True"`` vs ``"False"`` would compare two kinds
       of token).

    Candidates are never scored by several tokens combined: one id each, so results stay what they were for
    tokenizers where the first token already is the word (GPT-2-style BPE), and cached scores stay valid.
    (:class:`~lumir.models.chat.openai.OpenAIChatModel` sees only token texts; it matches a candidate to the
    best-scored top entry whose text, markers stripped, equals it, and so never scores a lone marker either.)

    Raises:
        ValueError: a candidate encodes to nothing, or two candidates resolve to the same token.
    """
    ids: list[int] = []
    for tok in tokens:
        enc = [int(i) for i in encode(tok)]
        if piece is not None:
            while len(enc) > 1 and not _word(piece(enc[0])):  # a lone "▁" before the word
                enc = enc[1:]
        if not enc:
            raise ValueError(f"candidate token {tok!r} encodes to no token for {model}")
        ids.append(enc[0])
    if piece is not None and lookup is not None:
        ids = _one_form(ids, tokens, piece, lookup)
    seen: dict[int, str] = {}
    for tok, i in zip(tokens, ids, strict=True):
        if i in seen:
            raise ValueError(f"candidates {seen[i]!r} and {tok!r} start with the same token ({i}) for {model}")
        seen[i] = tok
    return ids


def _one_form(
    ids: list[int], tokens: Sequence[str], piece: Callable[[int], str], lookup: Callable[[str], int | None]
) -> list[int]:
    """Rule 2 of :func:`first_token_ids`: marked or bare tokens for every candidate, not a mix."""
    pieces = [piece(i) for i in ids]
    marked = [p[:1] != "" and p[0] in _WORD_MARKERS for p in pieces]
    if all(marked) or not any(marked):
        return ids
    for marker in sorted({p[0] for p, m in zip(pieces, marked, strict=True) if m} - {" "}):
        with_marker = [lookup(marker + t.strip()) for t in tokens]
        if all(i is not None for i in with_marker):
            return [int(i) for i in with_marker if i is not None]
    bare = [lookup(t.strip()) for t in tokens]
    if all(i is not None for i in bare):
        return [int(i) for i in bare if i is not None]
    return ids


@dataclass
class CallStats:
    """Counters a backend keeps: model calls (forward passes or requests), conversations and tokens in."""

    calls: int = 0
    conversations: int = 0
    prompt_tokens: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "conversations": self.conversations, "prompt_tokens": self.prompt_tokens}


def encode_image_png(ref: ImageRef) -> bytes:
    """PNG bytes of an image (what HTTP backends send as data URLs)."""
    buf = io.BytesIO()
    ref.load().save(buf, format="PNG")
    return buf.getvalue()
