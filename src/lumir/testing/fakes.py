"""Protocol-conformant fakes with *known* behaviour, for tests, doctests and examples.

- :class:`HashEmbedder` gives deterministic pseudo-random unit vectors from the content of an item.
- :class:`ColorEmbedder` maps images to their mean RGB and colour words to the same space, so a corpus of
  solid-colour images captioned "red", "blue", ... has known correct retrieval (Recall@1 == 1.0).
- :class:`ScriptedChatModel` is a ChatModel with canned replies and scores (or a scoring function), counting
  its calls, so LLM stages can be tested with known answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lumir.errors import ModalityError, PromptTooLongError
from lumir.types import Item, Modality, Role

__all__ = ["COLORS", "ColorEmbedder", "FakeCallStats", "HashEmbedder", "ScriptedChatModel"]

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 220, 40),
    "purple": (140, 40, 170),
    "orange": (240, 140, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}


RUNTIME_OPTIONS = frozenset({"device", "show_progress", "sort_by_length"})
"""Options that change where or how fast a real embedder runs, never its vectors: the fakes accept and ignore them."""


def _runtime_only(name: str, options: Mapping[str, Any]) -> None:
    extra = sorted(set(options) - RUNTIME_OPTIONS)
    if extra:
        raise TypeError(f"{name} takes no options {extra}")


def _check(embedder: Any, items: Sequence[Item]) -> None:
    bad = [it.id for it in items if it.modality not in embedder.modalities]
    if bad:
        raise ModalityError(
            f"{type(embedder).__name__} cannot embed {len(bad)} item(s) (first: {bad[0]!r}); "
            f"supported modalities: {sorted(m.value for m in embedder.modalities)}"
        )


class HashEmbedder:
    """Deterministic unit vectors from a hash of an item's text and image bytes (no semantics).

    Example:
        >>> e = HashEmbedder(dim=8)
        >>> v = e.embed([Item("a", text="hello")], role=Role.QUERY)
        >>> tuple(v.shape), round(float(v.norm()), 4)
        ((1, 8), 1.0)
    """

    modalities = frozenset(Modality)

    def __init__(self, dim: int = 32, **runtime: Any) -> None:
        _runtime_only(type(self).__name__, runtime)
        self.dim = int(dim)

    def _vector(self, item: Item) -> np.ndarray:
        h = hashlib.sha256()
        if item.text is not None:
            h.update(item.text.encode())
        if item.image is not None:
            h.update(np.asarray(item.image.load()).tobytes())
        seed = int.from_bytes(h.digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def embed(self, items: Sequence[Item], *, role: Role, batch_size: int = 32) -> torch.Tensor:
        """Embed items; identical content gives identical vectors whatever the role."""
        _check(self, items)
        if not items:
            return torch.empty(0, self.dim)
        return torch.from_numpy(np.stack([self._vector(it) for it in items]))

    def spec(self) -> dict[str, Any]:
        """Rebuild spec."""
        return {"type": "hash", "dim": self.dim}


class ColorEmbedder:
    """Maps images to their normalised mean RGB and colour words to their RGB, in one 3-d space.

    Text is the sum of the colours it names; image+text items add the two. Unknown words are ignored.

    Example:
        >>> e = ColorEmbedder()
        >>> e.embed([Item("t", text="red")], role=Role.QUERY).argmax().item()
        0
    """

    modalities = frozenset(Modality)
    dim = 3

    def __init__(self, **runtime: Any) -> None:
        _runtime_only(type(self).__name__, runtime)

    def _text(self, text: str) -> np.ndarray:
        v = np.zeros(3, dtype=np.float32)
        for word in text.lower().replace(",", " ").replace(".", " ").split():
            if word in COLORS:
                v += np.asarray(COLORS[word], dtype=np.float32) / 255.0 - 0.5
        return v

    def _image(self, item: Item) -> np.ndarray:
        assert item.image is not None
        arr = np.asarray(item.image.load(), dtype=np.float32) / 255.0
        return arr.reshape(-1, 3).mean(0) - 0.5

    def embed(self, items: Sequence[Item], *, role: Role, batch_size: int = 32) -> torch.Tensor:
        """Embed items into the shared colour space (L2-normalised)."""
        _check(self, items)
        out = np.zeros((len(items), 3), dtype=np.float32)
        for i, it in enumerate(items):
            if it.image is not None:
                out[i] += self._image(it)
            if it.text is not None:
                out[i] += self._text(it.text)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return torch.from_numpy(out / np.maximum(norms, 1e-8))

    def spec(self) -> dict[str, Any]:
        """Rebuild spec."""
        return {"type": "color"}


def _prompt_text(conversation: Sequence[Mapping[str, Any]]) -> str:
    """All text of a conversation, images as ``<image>``, messages joined by newlines."""
    out = []
    for msg in conversation:
        content = msg["content"]
        if isinstance(content, str):
            out.append(content)
            continue
        out.append("".join(p["text"] if p.get("type") == "text" else "<image>" for p in content))
    return "\n".join(out)


@dataclass
class FakeCallStats:
    """Counters of a fake chat model (the shape of :class:`lumir.models.chat.base.CallStats`)."""

    calls: int = 0
    conversations: int = 0
    prompt_tokens: int = 0


class ScriptedChatModel:
    """A ChatModel with known behaviour: canned replies, canned or computed token scores, call counters.

    Args:
        replies: prompt text (all messages' text joined by newlines, images as ``<image>``) -> generation.
        default_reply: generation for any other prompt.
        score_fn: ``(prompt_text, tokens) -> list of log-probabilities``; without it every candidate token gets
            ``log(1/len(tokens))``.
        supports_images: whether image parts are accepted (else they raise ModalityError).

    Example:
        >>> m = ScriptedChatModel(score_fn=lambda text, toks: [0.0 if t in text else -5.0 for t in toks])
        >>> m.token_logprobs([[{"role": "user", "content": "say True"}]], ["False", "True"]).tolist()
        [[-5.0, 0.0]]
    """

    backend = "scripted"

    def __init__(
        self,
        replies: Mapping[str, str] | None = None,
        *,
        default_reply: str = "",
        score_fn: Callable[[str, Sequence[str]], Sequence[float]] | str | None = None,
        supports_images: bool = True,
        context_length: int | None = None,
    ) -> None:
        if isinstance(score_fn, str):
            raise TypeError(f"ScriptedChatModel cannot be rebuilt from a spec with score_fn {score_fn!r}")
        self.replies = dict(replies or {})
        self.default_reply = default_reply
        self.score_fn = score_fn
        self.supports_images = supports_images
        self.context_length = context_length
        self.fingerprint = hashlib.sha256(repr(sorted(self.replies.items())).encode()).hexdigest()[:16]
        self.stats = FakeCallStats()
        self.prompts: list[str] = []

    @property
    def calls(self) -> int:
        """Model calls made (``generate`` / ``token_logprobs`` invocations)."""
        return self.stats.calls

    def count_tokens(self, text: str) -> int:
        """Whitespace-separated words (the fake's tokens)."""
        return len(text.split())

    def _texts(self, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> list[str]:
        texts = [_prompt_text(c) for c in conversations]
        if not self.supports_images and any("<image>" in t for t in texts):
            raise ModalityError("ScriptedChatModel(supports_images=False) was given an image")
        if self.context_length is not None:
            for t in texts:
                if len(t.split()) > self.context_length:
                    raise PromptTooLongError(
                        f"prompt of {len(t.split())} words exceeds {self.context_length}",
                        tokens=len(t.split()),
                        limit=self.context_length,
                    )
        self.stats.calls += 1
        self.stats.conversations += len(texts)
        self.prompts.extend(texts)
        return texts

    def render(self, conversation: Sequence[Mapping[str, Any]]) -> str:
        """The prompt text the replies and scores are keyed by."""
        return _prompt_text(conversation)

    def generate(self, conversations: Sequence[Sequence[Mapping[str, Any]]], **gen: Any) -> list[str]:
        """Canned replies."""
        return [self.replies.get(t, self.default_reply) for t in self._texts(conversations)]

    def token_logprobs(
        self, conversations: Sequence[Sequence[Mapping[str, Any]]], tokens: Sequence[str]
    ) -> torch.Tensor:
        """Scores from ``score_fn`` (or uniform)."""
        texts = self._texts(conversations)
        if self.score_fn is None:
            rows = [[float(np.log(1.0 / len(tokens)))] * len(tokens) for _ in texts]
        else:
            rows = [[float(x) for x in self.score_fn(t, tokens)] for t in texts]
        return torch.tensor(rows, dtype=torch.float32).reshape(len(texts), len(tokens))

    def spec(self) -> dict[str, Any]:
        """Rebuild spec (a ``score_fn`` is code, not data: a spec cannot carry it and says so)."""
        out: dict[str, Any] = {
            "type": "scripted",
            "replies": dict(self.replies),
            "default_reply": self.default_reply,
            "supports_images": self.supports_images,
            "context_length": self.context_length,
        }
        if self.score_fn is not None:
            out["score_fn"] = f"<not serialisable: {getattr(self.score_fn, '__name__', 'callable')}>"
        return out
