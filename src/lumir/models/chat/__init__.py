"""Language models behind one ChatModel protocol: local transformers, local GGUF (llama.cpp), OpenAI-compatible HTTP.

Submodules are imported on use so the heavy backends stay optional:

- :mod:`lumir.models.chat.base` — conversations, decoding parameters, cache keys;
- :mod:`lumir.models.chat.hf` — ``TransformersChatModel`` (text LMs and LLaVA-style vision-language models);
- :mod:`lumir.models.chat.llamacpp` — ``LlamaCppChatModel`` (GGUF files; extra ``lumir[llm]``);
- :mod:`lumir.models.chat.openai` — ``OpenAIChatModel`` (vLLM, Ollama, llama.cpp server, hosted APIs);
- :mod:`lumir.models.chat.cache` — ``CachedChatModel``, a persistent cache of generations and scores;
- :mod:`lumir.models.chat.registry` — the offline LLMs by name and ``load_chat_model(spec)``.
"""

from __future__ import annotations

from lumir.models.chat.base import GenerationConfig, image_part, text_part, user_message
from lumir.models.chat.cache import CachedChatModel, ChatCache
from lumir.models.chat.registry import OFFLINE_LLMS, gguf_path, load_chat_model

__all__ = [
    "OFFLINE_LLMS",
    "CachedChatModel",
    "ChatCache",
    "GenerationConfig",
    "gguf_path",
    "image_part",
    "load_chat_model",
    "text_part",
    "user_message",
]
