"""TransformersChatModel on the tiny Qwen2 LM and tiny LLaVA (real transformers code paths), and on SmolLM2's GGUF."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from lumir.errors import ModalityError, ModelNotFoundError
from lumir.models.chat.base import PromptTooLongError, user_message
from lumir.models.chat.hf import TransformersChatModel
from lumir.models.chat.registry import load_chat_model
from lumir.protocols import ChatModel, Conversation
from lumir.testing.tiny import build_tiny_llava, build_tiny_lm, save_tiny_llava, save_tiny_lm
from lumir.types import as_image_ref

CANDIDATES = ["True", "False", "YES", "NO"]


def _image(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> object:
    return as_image_ref(Image.new("RGB", size, color))


@pytest.fixture(scope="module")
def lm() -> TransformersChatModel:
    return TransformersChatModel(*build_tiny_lm(seed=0), name="tiny-lm", batch_size=4)


@pytest.fixture(scope="module")
def llava() -> TransformersChatModel:
    return TransformersChatModel(*build_tiny_llava(seed=0), name="tiny-llava", batch_size=4)


def _texts() -> list[Conversation]:
    return [
        user_message("Is the dog red?"),
        [{"role": "system", "content": "rank"}, {"role": "user", "content": "query : a photo of a cat (1) (2) " * 4}],
        user_message("x"),
        user_message("candidate (3) is relevant ? Ans :"),
        user_message("blue square"),
    ]


def _one_by_one(chat: TransformersChatModel, convs: list[Conversation]) -> torch.Tensor:
    return torch.cat([chat.token_logprobs([c], CANDIDATES[:2]) for c in convs])


def test_protocol_and_attributes(lm: TransformersChatModel, llava: TransformersChatModel) -> None:
    chat: ChatModel = lm  # structural: mypy checks the protocol
    assert callable(chat.generate) and callable(chat.token_logprobs)
    assert lm.backend == "transformers" and not lm.supports_images and llava.supports_images
    assert lm.context_length == 512 and llava.context_length == 512
    assert TransformersChatModel(*build_tiny_lm(), max_length=32).context_length == 32


def test_render_is_the_chat_template(lm: TransformersChatModel, llava: TransformersChatModel) -> None:
    assert (
        lm.render(user_message("Is this red?")) == "<|im_start|>user\nIs this red?<|im_end|>\n<|im_start|>assistant\n"
    )
    conv = user_message(_image((255, 0, 0)), "Is this red?")
    assert llava.render(conv) == "<|im_start|>user\n<image>Is this red?<|im_end|>\n<|im_start|>assistant\n"


def test_batched_logprobs_equal_one_at_a_time(lm: TransformersChatModel) -> None:
    convs = _texts()
    batched = lm.token_logprobs(convs, CANDIDATES)  # batches of 4 and 1, left-padded
    assert batched.dtype == torch.float32 and batched.device.type == "cpu" and batched.shape == (5, 4)
    torch.testing.assert_close(batched[:, :2], _one_by_one(lm, convs), atol=1e-4, rtol=0)
    torch.testing.assert_close(lm.token_logprobs(convs, CANDIDATES, batch_size=1), batched, atol=1e-4, rtol=0)


def test_logprobs_are_the_full_vocabulary_log_softmax(lm: TransformersChatModel) -> None:
    conv = _texts()[3]
    got = lm.token_logprobs([conv], CANDIDATES)[0]
    ids = lm.tokenizer(lm.render(conv), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        expected = lm.model(**ids).logits[0, -1].log_softmax(-1)
    vocab = [lm.tokenizer.convert_tokens_to_ids(t) for t in CANDIDATES]
    torch.testing.assert_close(got, expected[vocab], atol=1e-5, rtol=0)
    assert (got <= 0).all() and got.exp().sum() < 1


def test_empty_input(lm: TransformersChatModel) -> None:
    assert lm.token_logprobs([], CANDIDATES).shape == (0, 4)
    assert lm.generate([]) == []


def test_generate_is_deterministic_and_batch_independent(lm: TransformersChatModel) -> None:
    convs = _texts()
    first = lm.generate(convs, max_new_tokens=8)
    assert first == lm.generate(convs, max_new_tokens=8)
    assert first == lm.generate(convs, max_new_tokens=8, batch_size=1)
    assert all(isinstance(t, str) and "<|im_end|>" not in t for t in first)
    assert any(first)


def test_sampling_is_seeded(lm: TransformersChatModel) -> None:
    convs = _texts()[:2]
    a = lm.generate(convs, max_new_tokens=8, temperature=1.0, seed=1)
    assert a == lm.generate(convs, max_new_tokens=8, temperature=1.0, seed=1)
    assert a != lm.generate(convs, max_new_tokens=8, temperature=1.0, seed=2)
    assert a != lm.generate(convs, max_new_tokens=8)


def test_stop_strings_cut_the_output(lm: TransformersChatModel) -> None:
    conv = _texts()[:1]
    full = lm.generate(conv, max_new_tokens=12)[0]
    words = full.split()
    stop = next(w for w in words[1:] if w != words[0])  # a word after the first one
    cut = lm.generate(conv, max_new_tokens=12, stop=[stop, "never-generated"])[0]
    assert cut == full[: full.index(stop)].strip() and cut
    assert lm.generate(conv, max_new_tokens=12, stop=stop) == [cut]


def test_unknown_generation_option(lm: TransformersChatModel) -> None:
    with pytest.raises(TypeError, match="top_k"):
        lm.generate(_texts()[:1], top_k=5)


def test_prompt_too_long_is_refused_before_running() -> None:
    chat = TransformersChatModel(*build_tiny_lm(), name="tiny-short", max_length=12)
    long = user_message("a photo of a dog on a red square")
    with pytest.raises(PromptTooLongError, match="tiny-short") as err:
        chat.token_logprobs([user_message("x"), long], CANDIDATES)
    assert err.value.limit == 12 and err.value.tokens is not None and err.value.tokens > 12
    assert chat.stats.calls == 0
    with pytest.raises(PromptTooLongError):
        chat.generate([long])


def test_generation_is_capped_by_the_context() -> None:
    chat = TransformersChatModel(*build_tiny_lm(), max_length=10)
    conv = user_message("x")  # 9 tokens with the template: room for exactly one new token
    assert len(chat.generate([conv], max_new_tokens=20)[0].split()) <= 1
    assert chat.token_logprobs([conv], CANDIDATES).shape == (1, 4)


def test_text_model_refuses_images(lm: TransformersChatModel) -> None:
    with pytest.raises(ModalityError):
        lm.token_logprobs([user_message(_image((255, 0, 0)), "red?")], CANDIDATES)
    with pytest.raises(ModalityError):
        lm.generate([user_message(_image((255, 0, 0)), "red?")])


def test_llava_reads_images(llava: TransformersChatModel) -> None:
    convs = [
        user_message(_image((255, 0, 0)), "Is the dog red?"),
        user_message(_image((0, 0, 255), (30, 50)), "Is the dog red?"),
        user_message("Is the dog red? no image here"),
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": _image((0, 255, 0))}, {"type": "text", "text": "a"}],
            }
        ],
    ]
    batched = llava.token_logprobs(convs, CANDIDATES[:2])
    torch.testing.assert_close(batched, _one_by_one(llava, convs), atol=1e-4, rtol=0)
    assert (batched[0] - batched[1]).abs().max() > 1e-3  # the image changes the next-token distribution
    assert llava.generate(convs, max_new_tokens=5) == llava.generate(convs, max_new_tokens=5, batch_size=1)


def test_stats_count_forward_passes() -> None:
    chat = TransformersChatModel(*build_tiny_lm(), batch_size=2)
    chat.token_logprobs(_texts(), CANDIDATES)
    assert (chat.stats.calls, chat.stats.conversations) == (3, 5) and chat.stats.prompt_tokens > 5 * 8
    chat.generate(_texts()[:2], max_new_tokens=3)
    assert (chat.stats.calls, chat.stats.conversations) == (4, 7) and chat.stats.extra["generated_tokens"] <= 6


def test_bfloat16_returns_float32(lm: TransformersChatModel) -> None:
    chat = TransformersChatModel(*build_tiny_lm(), dtype="bfloat16")
    out = chat.token_logprobs(_texts()[:2], CANDIDATES)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, lm.token_logprobs(_texts()[:2], CANDIDATES), atol=0.1, rtol=0)
    assert chat.fingerprint != lm.fingerprint and chat.spec()["dtype"] == "bfloat16"


def test_in_memory_fingerprint(lm: TransformersChatModel) -> None:
    assert lm.fingerprint == TransformersChatModel(*build_tiny_lm(seed=0)).fingerprint
    assert lm.fingerprint != TransformersChatModel(*build_tiny_lm(seed=1)).fingerprint
    assert lm.spec()["model_path"] is None


@pytest.mark.parametrize("kind", ["lm", "llava"])
def test_saved_folder_round_trip(tmp_path: Path, kind: str) -> None:
    save, build = (save_tiny_lm, build_tiny_lm) if kind == "lm" else (save_tiny_llava, build_tiny_llava)
    folder = save(tmp_path / "m0", seed=0)
    loaded = TransformersChatModel.from_pretrained(folder)
    assert loaded.supports_images is (kind == "llava") and loaded.name == "m0"
    convs = _texts()[:3]
    if kind == "llava":
        convs.append(user_message(_image((255, 0, 0)), "red?"))
    memory = TransformersChatModel(*build(seed=0))
    torch.testing.assert_close(loaded.token_logprobs(convs, CANDIDATES), memory.token_logprobs(convs, CANDIDATES))
    assert loaded.generate(convs, max_new_tokens=5) == memory.generate(convs, max_new_tokens=5)

    spec = loaded.spec()
    assert spec["type"] == "transformers" and spec["model_path"] == str(folder.resolve())
    again = load_chat_model(spec)
    assert again.fingerprint == loaded.fingerprint and again.spec() == spec
    assert load_chat_model(f"hf:{folder}", batch_size=1).fingerprint == loaded.fingerprint
    other = TransformersChatModel.from_pretrained(save(tmp_path / "m1", seed=1))
    assert other.fingerprint != loaded.fingerprint


def test_from_pretrained_refuses_hub_ids() -> None:
    with pytest.raises(ModelNotFoundError, match="never downloads"):
        TransformersChatModel.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_from_gguf_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotFoundError):
        TransformersChatModel.from_gguf(tmp_path / "missing.gguf")
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now raises ImportError
    with pytest.raises(ImportError, match=r"lumir\[llm\]"):
        TransformersChatModel.from_gguf(tmp_path / "missing.gguf")


@pytest.mark.slow
def test_smollm2_gguf_through_transformers() -> None:
    chat = load_chat_model("smollm2@transformers", batch_size=4)  # registry -> TransformersChatModel.from_gguf
    assert isinstance(chat, TransformersChatModel) and chat.name == "smollm2-135m-instruct"
    assert chat.context_length == 8192 and chat.backend == "transformers"
    assert chat.spec()["type"] == "smollm2-135m-instruct" and chat.spec()["backend"] == "transformers"  # portable
    assert load_chat_model(chat.spec()).fingerprint == chat.fingerprint
    convs = [
        user_message("Is Paris the capital of France? Answer Yes or No."),
        user_message("What is the capital of France?"),
        user_message("Is fire cold? Answer Yes or No."),
    ]
    lp = chat.token_logprobs(convs, ["Yes", "No"])
    assert (lp < 0).all()
    torch.testing.assert_close(lp, chat.token_logprobs(convs, ["Yes", "No"], batch_size=1), atol=1e-4, rtol=0)
    # SmolLM2-135M answers "No" to every yes/no question (P(No) > P(Yes) even for Paris), so no Yes assertion.
    answers = chat.generate(convs[1:2], max_new_tokens=12)
    assert "Paris" in answers[0]
