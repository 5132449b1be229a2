"""PromptRewriter: an instruction-following LLM rewrites each query from a fixed prompt (the paper's LLMsRewrite).

MGQRe §4.1.2 compares against "LLMsRewrite", a description-rewriting scheme: an LLM prompted to rewrite the query,
with no feedback from the retriever. Here the prompt is :data:`lumir.rewrite.prompts.LLMS_REWRITE` (versioned;
the paper's own wording is not available), generation is greedy and cut before the model starts another
few-shot example, and the reply is parsed with :func:`~lumir.rewrite.validate.parse_rewrite`. A refused rewrite
(empty, an echo, too long or off-topic) falls back to the original query and is counted
(:class:`~lumir.rewrite.base.RewriteStats`).

Example:
    >>> from lumir.rewrite.prompts import LLMS_REWRITE
    >>> from lumir.testing.fakes import ScriptedChatModel
    >>> from lumir.types import Query
    >>> prompt = LLMS_REWRITE.system + "\\n" + LLMS_REWRITE.render(query="dog on grass")
    >>> chat = ScriptedChatModel(replies={prompt: " A brown dog lying on green grass."})
    >>> [q.text for q in PromptRewriter(chat).rewrite([Query("q1", text="dog on grass")])]
    ['A brown dog lying on green grass.']
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lumir.models.chat.cache import resolve_chat_model
from lumir.protocols import ChatModel, Conversation, Embedder
from lumir.rewrite.base import LLMRewriter
from lumir.rewrite.prompts import get_prompt
from lumir.rewrite.validate import parse_rewrite

__all__ = ["PromptRewriter"]

STOP = ("\nQuery:",)
"""Where generation ends: a model that goes on to invent the next few-shot example is cut before it."""


class PromptRewriter(LLMRewriter):
    """Rewrite queries with a prompted LLM (the LLMsRewrite baseline) behind the ``Rewriter`` protocol.

    Args:
        llm: a ChatModel, or a chat-model spec (``"smollm2"``, ``"qwen-coder"``, ``"hf:FOLDER"``, ...).
        prompt: a prompt of :data:`lumir.rewrite.prompts.PROMPTS` whose only fields are ``{query}`` (and
            ``{max_words}``): ``"llms-rewrite"`` (default) or ``"trained"``.
        max_words: longest acceptable rewrite (longer ones fall back as ``too_long``).
        max_new_tokens: generation cap per reply.
        batch_size: conversations per model call.
        similarity: an embedder or embedder spec; then ``off_topic`` means cosine < ``min_similarity`` (without
            one: no content word in common with the query).
        min_similarity: see ``similarity``.
        llm_cache: SQLite file of the on-disk LLM cache to put in front of the model (None: no cache).
    """

    name = "llm"

    def __init__(
        self,
        llm: ChatModel | str | Mapping[str, Any],
        *,
        prompt: str = "llms-rewrite",
        max_words: int = 40,
        max_new_tokens: int = 64,
        batch_size: int = 16,
        similarity: Embedder | str | Mapping[str, Any] | None = None,
        min_similarity: float = 0.5,
        llm_cache: str | Path | None = None,
    ) -> None:
        self.prompt = get_prompt(prompt)
        try:
            self.prompt.render(query="x", max_words=max_words)
        except KeyError as err:
            raise ValueError(
                f"rewrite prompt {prompt!r} needs the field {err.args[0]!r}; a PromptRewriter fills only "
                "{query} and {max_words} (use 'llms-rewrite' or 'trained')"
            ) from None
        self._setup_common(
            max_words=max_words,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            similarity=similarity,
            min_similarity=min_similarity,
        )
        self.chat = resolve_chat_model(llm, llm_cache)

    def spec(self) -> dict[str, Any]:
        """``{"type": "llm", "llm": <the chat model's spec (its cache included)>, "prompt": ..., ...}``."""
        return {
            "type": self.name,
            "llm": self.chat.spec(),
            "prompt": self.prompt.name,
            "max_words": self.max_words,
            "max_new_tokens": self.max_new_tokens,
            "batch_size": self.batch_size,
            **self._similarity_spec(),
        }

    def conversation(self, text: str) -> Conversation:
        """The prompt's system message (when it has one) and its user message filled with ``text``."""
        user: Conversation = [{"role": "user", "content": self.prompt.render(query=text, max_words=self.max_words)}]
        return [{"role": "system", "content": self.prompt.system}, *user] if self.prompt.system else user

    def generation_options(self) -> dict[str, Any]:
        """Greedy, ``max_new_tokens``, stopped before a new ``Query:`` line."""
        return {"max_new_tokens": self.max_new_tokens, "stop": list(STOP)}

    def parse(self, output: str) -> str:
        """The text after a ``Rewrite:`` label, else the first non-empty line (backends that ignore ``stop``
        are cut at the next ``Query:`` line here)."""
        for stop in STOP:
            output = output.split(stop, 1)[0]
        return parse_rewrite(output, field="Rewrite", fallback="first")

    def __repr__(self) -> str:
        return f"PromptRewriter(llm={self.chat.backend!r}, prompt={self.prompt.version!r})"
