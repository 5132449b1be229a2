"""The persistent LLM cache: keys, provenance, persistence, partial runs, images, bad files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lumir.cli.run import message
from lumir.errors import LLMCacheError
from lumir.models.chat.base import user_message
from lumir.models.chat.cache import CACHE_FORMAT, CachedChatModel, ChatCache, cache_key
from lumir.testing.fakes import ScriptedChatModel
from lumir.types import ImageRef


def convs(*texts: str) -> list:
    return [user_message(t) for t in texts]


def counting(text: str, tokens) -> list[float]:
    return [-float(len(text) % 7) - i for i in range(len(tokens))]


def test_second_run_makes_no_model_calls_and_keeps_order(tmp_path: Path) -> None:
    model = ScriptedChatModel({"a": "A", "b": "B"}, default_reply="?", score_fn=counting)
    cached = CachedChatModel(model, tmp_path / "c.sqlite", batch_size=2)
    first = cached.generate(convs("a", "b", "c", "a"))
    assert first == ["A", "B", "?", "A"] and model.calls == 2  # 3 unique prompts in batches of 2
    scores = cached.token_logprobs(convs("a", "zz"), ["x", "y"])
    calls = model.calls
    reopened = CachedChatModel(model, tmp_path / "c.sqlite")
    assert reopened.generate(convs("c", "b", "a")) == ["?", "B", "A"]
    torch.testing.assert_close(reopened.token_logprobs(convs("a", "zz"), ["x", "y"]), scores)
    assert model.calls == calls and reopened.misses == 0 and reopened.hits == 5


def test_keys_separate_parameters_tokens_models_and_images(tmp_path: Path) -> None:
    model = ScriptedChatModel(default_reply="r", score_fn=counting)
    cached = CachedChatModel(model, tmp_path / "c.sqlite")
    cached.generate(convs("p"))
    cached.generate(convs("p"), max_new_tokens=5)
    cached.token_logprobs(convs("p"), ["a", "b"])
    cached.token_logprobs(convs("p"), ["b", "a"])
    assert cached.misses == 4 and len(cached.cache) == 4
    other = ScriptedChatModel({"x": "y"}, score_fn=counting)  # another fingerprint
    CachedChatModel(other, cached.cache).generate(convs("p"))
    assert len(cached.cache) == 5
    rng = np.random.default_rng(0)
    red, noise = Image.new("RGB", (8, 8), (255, 0, 0)), Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8))
    cached.generate([user_message(ImageRef(red), "p"), user_message(ImageRef(noise), "p")])
    assert len(cached.cache) == 7  # same text, different pixels: two entries
    path = tmp_path / "red.png"
    red.save(path)
    cached.generate([user_message(ImageRef(path), "p")])  # a path to the same pixels is a hit
    assert cached.misses == 6 and len(cached.cache) == 7


def test_provenance_is_recorded(tmp_path: Path) -> None:
    model = ScriptedChatModel(default_reply="r")
    cached = CachedChatModel(model, tmp_path / "c.sqlite")
    cached.generate(convs("hello"), max_new_tokens=3)
    params = {"max_new_tokens": 3, "temperature": 0.0, "top_p": 1.0, "stop": [], "seed": 0}
    key = cache_key("scripted", model.fingerprint, "hello", "generate", params)
    prov = cached.cache.provenance(key)
    assert prov is not None and prov["value"] == "r" and prov["prompt"] == "hello"
    assert prov["backend"] == "scripted" and prov["model_spec"]["type"] == "scripted"
    assert prov["params"] == params and prov["lumir_version"] and prov["created"] > 0


def test_an_interrupted_job_keeps_finished_batches(tmp_path: Path) -> None:
    class Failing(ScriptedChatModel):
        def generate(self, conversations, **gen):
            if any("boom" in str(c) for c in conversations):
                raise RuntimeError("model crashed")
            return super().generate(conversations, **gen)

    model = Failing(default_reply="ok")
    cached = CachedChatModel(model, tmp_path / "c.sqlite", batch_size=2)
    with pytest.raises(RuntimeError):
        cached.generate(convs("a", "b", "boom", "c"))
    assert len(ChatCache(tmp_path / "c.sqlite")) == 2  # the first batch was committed


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ValueError, match="not a lumir LLM cache"):
        ChatCache(junk)
    other = tmp_path / "other.sqlite"
    ChatCache(other).close()
    with sqlite3.connect(other) as db:
        db.execute("UPDATE meta SET value = 'someone-else/9' WHERE key = 'format'")
    with pytest.raises(ValueError, match=CACHE_FORMAT):
        ChatCache(other)


def _filled_cache(path: Path, n: int = 300) -> int:
    """A real cache file with ``n`` entries (many pages); returns its size in bytes."""
    cache = ChatCache(path)
    rows = [
        {"key": f"k{i}", "op": "generate", "value": "x" * 200, "backend": "b", "fingerprint": "f", "model_spec": {},
         "prompt": f"prompt {i} " + "p" * 300, "params": {}}
        for i in range(n)
    ]  # fmt: skip
    cache.put_many(rows)
    cache.close()
    return path.stat().st_size


def test_a_truncated_cache_is_a_clear_error_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "llm.sqlite"
    size = _filled_cache(path)
    with path.open("r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(LLMCacheError, match=r"llm\.sqlite: the LLM cache is damaged .*could not be opened") as info:
        ChatCache(path)
    assert "Move the file away" in str(info.value) and info.value.path == path
    assert "--no-llm-cache" in message(info.value) and "--llm-cache PATH" in message(info.value)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LLMCacheError, match=r"junk\.sqlite: the LLM cache is not a lumir LLM cache"):
        CachedChatModel(ScriptedChatModel(), junk)


def test_a_cache_damaged_while_open_fails_clearly_on_read_and_write(tmp_path: Path) -> None:
    path = tmp_path / "llm.sqlite"
    size = _filled_cache(path)
    model = ScriptedChatModel(default_reply="fresh")
    cached = CachedChatModel(model, path)
    with path.open("r+b") as fh:  # another process (or a full disk) damages the file under us
        fh.truncate(size // 2)
    with pytest.raises(LLMCacheError, match=r"llm\.sqlite: the LLM cache is damaged .*could not be read"):
        cached.generate(convs("a new prompt"))
    assert model.calls == 0  # nothing was asked of the model before the cache failed
    with pytest.raises(LLMCacheError, match=r"could not be (read|written)"):
        cached.cache.put_many([{"key": "new", "op": "generate", "value": "v", "backend": "b", "fingerprint": "f",
                                "model_spec": {}, "prompt": "p", "params": {}}])  # fmt: skip
    with pytest.raises(LLMCacheError):
        len(cached.cache)


def test_resolve_chat_model_opens_the_cache_before_loading_a_model(tmp_path: Path, monkeypatch) -> None:
    from lumir.models.chat import cache as cache_module

    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not sqlite" * 100)
    loaded: list[object] = []
    monkeypatch.setattr("lumir.models.chat.registry.load_chat_model", lambda spec: loaded.append(spec))
    with pytest.raises(LLMCacheError):
        cache_module.resolve_chat_model("smollm2", junk)
    assert loaded == []
