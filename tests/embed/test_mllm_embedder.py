"""MLLMEmbedder over tiny offline models: prompts fed to the model, pooling, training contract, save/load, errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from lumir.embed import load_embedder
from lumir.embed.mllm import MANIFEST, PRESETS, MLLMEmbedder, MLLMInput
from lumir.errors import ModalityError, ModelNotFoundError
from lumir.models.pooling import l2_normalize
from lumir.registry import EMBEDDERS
from lumir.testing.tiny import build_tiny_llava, build_tiny_lm, save_tiny_llava, save_tiny_lm
from lumir.types import Item, Query, Role

TEXTS = ["red dog", "a blue cat is the dog of the red square", "green", "the yellow circle and a cat"]
ATOL = 1e-5


def _items(texts: list[str] = TEXTS) -> list[Item]:
    return [Item(f"t{i}", text=t) for i, t in enumerate(texts)]


def _image(color: tuple[int, int, int] = (200, 20, 20)) -> Image.Image:
    return Image.new("RGB", (40, 40), color)


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm") / "lm")


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_llava") / "llava")


def _fed_ids(embedder: MLLMEmbedder) -> list[list[int]]:
    """Record the input_ids of every forward of the embedder's backbone (real tokens only)."""
    seen: list[list[int]] = []

    def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        seen.extend([int(t) for t, m in zip(row, mrow, strict=True) if m] for row, mrow in zip(ids, mask, strict=True))

    embedder._backbone().register_forward_pre_hook(hook, with_kwargs=True)
    return seen


# ------------------------------------------------------------------------------------------------ prompts
def test_presets_render_the_documented_prompts_and_feed_them_token_for_token() -> None:
    query = Query("q", text="red dog", instruction="Find the image.", meta={"cand_modality": "image"})
    cand = Item("c", text="red dog")
    start, end = "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"
    expected = {
        "lamra": (
            f"{start}Find the image. red dog.\nSummarize above sentence in one word: {end}",
            f"{start}red dog\nSummarize above sentence in one word: {end}",
        ),
        "mmembed-e": ("Find the image.\nQuery: red dog<|im_end|>", "red dog<|im_end|>"),
        "mmembed-p": (
            f"{start}[image] red dog\nFind the image.{end}",
            f"{start}red dog\nDescribe the above in one word:{end}",
        ),
    }
    for preset, (as_query, as_candidate) in expected.items():
        e = MLLMEmbedder(*build_tiny_lm(), preset=preset)
        assert e.render_prompts([query], Role.QUERY) == [as_query], preset
        assert e.render_prompts([cand], Role.CANDIDATE) == [as_candidate], preset
        fed = _fed_ids(e)
        e.embed([query], role=Role.QUERY)
        e.embed([cand], role=Role.CANDIDATE)
        assert fed == [e.tokenizer(as_query)["input_ids"], e.tokenizer(as_candidate)["input_ids"]], preset
        if preset == "mmembed-e":  # LLaVa-E pools the <eos> state
            assert fed[0][-1] == fed[1][-1] == e.tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_lamra_image_prompts_on_a_vision_language_model() -> None:
    e = MLLMEmbedder(*build_tiny_llava(), preset="lamra")
    items = [Item("i", image=_image()), Item("it", text="red dog", image=_image()), Item("t", text="a cat")]
    start, end = "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"
    assert e.render_prompts(items, Role.CANDIDATE) == [
        f"{start}<image>\nSummarize above image in one word: {end}",
        f"{start}<image>red dog\nSummarize above image and sentence in one word: {end}",
        f"{start}a cat\nSummarize above sentence in one word: {end}",
    ]
    fed = _fed_ids(e)
    e.embed(items[:1], role=Role.CANDIDATE)
    image_id = e.tokenizer.convert_tokens_to_ids("<image>")
    assert fed[0].count(image_id) == 4  # the tiny LLaVA's 2x2 patches: <image> expands to 4 tokens


def test_instructed_image_query_and_queries_without_instructions() -> None:
    e = MLLMEmbedder(*build_tiny_llava(), preset="lamra", instructions={"t2": "find a caption"})
    query = Query("q", image=_image(), task="t2")
    assert "image and sentence" in e.render_prompts([query], Role.QUERY)[0]  # LamRA/UniIR: becomes image+text
    p = MLLMEmbedder(*build_tiny_lm(), preset="mmembed-p")
    plain = Query("q", text="red dog")  # no instruction: embeds as the same item does as a candidate
    torch.testing.assert_close(p.embed([plain], role="query"), p.embed([plain], role="candidate"))
    assert p.input_key(plain, Role.QUERY) == p.input_key(plain, Role.CANDIDATE)
    no_target = Query("q", text="red dog", instruction="Describe it in one word:")
    assert p.render_prompts([no_target], "query")[0].startswith("<|im_start|>user\nred dog\n")


def test_custom_templates_and_chat_switch() -> None:
    e = MLLMEmbedder(*build_tiny_lm(), template="{content} is in one word:", chat_template=False)
    assert e.render_prompts([Query("q", text="red", instruction="find it")], "query") == [
        "Find it. red. is in one word:"
    ]
    d = MLLMEmbedder(*build_tiny_lm(), template={"candidate": "{content}!", "query": "{instruction}|{content}"})
    assert d.render_prompts([Query("q", text="red", instruction="i")], "query")[0].endswith(
        "user\ni|red<|im_end|>\n<|im_start|>assistant\n"
    )
    assert d.spec()["template"]["candidate"] == "{content}!"
    assert MLLMEmbedder(*build_tiny_lm(), preset="lamra", chat_template=False).render_prompts(
        [Item("c", text="red")], "candidate"
    ) == ["red\nSummarize above sentence in one word: "]
    with pytest.raises(ValueError, match=r"no \{content\}"):
        MLLMEmbedder(*build_tiny_lm(), template="in one word:")
    with pytest.raises(ValueError, match="unknown MLLM embedder preset"):
        MLLMEmbedder(*build_tiny_lm(), preset="e5")


def test_truncation_cuts_the_text_never_the_template(caplog: pytest.LogCaptureFixture) -> None:
    e = MLLMEmbedder(*build_tiny_lm(), preset="mmembed-e", max_length=12)
    long = Query("q", text=" ".join(["red dog"] * 30), instruction="find the image")
    [prompt] = e.render_prompts([long], Role.QUERY)
    ids = e.tokenizer(prompt)["input_ids"]
    assert len(ids) == 12 and prompt.startswith("find the image\nQuery: red dog") and prompt.endswith("<|im_end|>")
    with caplog.at_level(logging.WARNING, logger="lumir.embed.mllm"):
        e.embed([long, Query("s", text="red")], role=Role.QUERY)
    assert "1 of 2 texts were cut" in caplog.text
    lamra = MLLMEmbedder(*build_tiny_lm(), max_length=30)
    assert lamra.render_prompts([Item("c", text="red " * 100)], "candidate")[0].endswith(
        "\nSummarize above sentence in one word: <|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(ValueError, match="shorter than the prompt template"):
        MLLMEmbedder(*build_tiny_lm(), max_length=3).embed([Item("c", text="red " * 10)], role="candidate")


# ------------------------------------------------------------------------------------------------ vectors
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_text_vectors_are_unit_norm_with_the_hidden_size(preset: str) -> None:
    e = MLLMEmbedder(*build_tiny_lm(), preset=preset)
    out = e.embed(_items(), role=Role.CANDIDATE)
    assert out.shape == (4, 16) and e.dim == 16 and e.modalities == {"text"}
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    assert torch.cdist(out, out).fill_diagonal_(1).min() > 1e-3  # different texts, different vectors


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_text_embeds_the_same_alone_and_in_a_padded_batch(preset: str, padding_side: str) -> None:
    e = MLLMEmbedder(*build_tiny_lm(), preset=preset, padding_side=padding_side)
    batch = e.embed(_items(), role=Role.CANDIDATE, batch_size=4)
    alone = torch.cat([e.embed([item], role=Role.CANDIDATE) for item in _items()])
    torch.testing.assert_close(batch, alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_vision_language_items_embed_alone_as_in_a_mixed_batch(padding_side: str) -> None:
    e = MLLMEmbedder(*build_tiny_llava(), preset="mmembed-e", padding_side=padding_side)
    items = [
        Item("i", image=_image()),
        Item("it", text="red dog", image=_image()),
        Item("t", text="a blue cat and the dog"),
        Item("i2", image=_image((20, 20, 200))),
    ]
    out = e.embed(items, role=Role.CANDIDATE)
    assert out.shape == (4, 16) and e.modalities == {"text", "image", "image,text"}
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    assert (out[0] - out[1]).abs().max() > 1e-3 and (out[0] - out[3]).abs().max() > 1e-3
    mixed = l2_normalize(e.forward_inputs(e.prepare(items, Role.CANDIDATE), Role.CANDIDATE))  # one mixed batch
    torch.testing.assert_close(mixed, out, atol=ATOL, rtol=0)


@pytest.mark.parametrize("build", [build_tiny_lm, build_tiny_llava], ids=["lm", "llava"])
def test_forward_inputs_is_differentiable_and_equals_embed(build: Any) -> None:
    e = MLLMEmbedder(*build(), preset="lamra")
    items = [Query("q1", text="red dog", instruction="find"), Query("q2", text="a cat")]
    expected = e.embed(items, role=Role.QUERY)
    inputs = e.prepare(items, Role.QUERY)
    assert all(isinstance(i, MLLMInput) and i.role is Role.QUERY for i in inputs)
    e.model.gradient_checkpointing_enable()
    e.model.train()
    vectors = e.forward_inputs(inputs, Role.QUERY)
    assert vectors.requires_grad and vectors.dtype == torch.float32 and vectors.shape == (2, 16)
    vectors.pow(2).sum().backward()
    grads = [p.grad for p in e.model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    torch.testing.assert_close(l2_normalize(vectors.detach()), expected, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="prepared as a query"):
        e.forward_inputs(inputs, Role.CANDIDATE)


# ------------------------------------------------------------------------------------------------ artifacts
def test_registry_spec_and_plain_save_round_trip(lm_dir: Path, tmp_path: Path) -> None:
    assert EMBEDDERS.parse(f"mllm:{lm_dir}") == {"type": "mllm", "path": str(lm_dir)}
    e = load_embedder(f"mllm:{lm_dir}")
    assert isinstance(e, MLLMEmbedder) and e.spec() == {
        "type": "mllm", "path": str(lm_dir), "preset": "lamra", "dtype": "float32"
    }  # fmt: skip
    p = load_embedder({"type": "mllm", "path": str(lm_dir), "preset": "mmembed-p", "max_length": 64})
    expected = p.embed(_items(), role=Role.CANDIDATE)
    torch.testing.assert_close(load_embedder(p.spec()).embed(_items(), role="candidate"), expected)
    assert isinstance(p, MLLMEmbedder)
    with torch.no_grad():  # a "trained" full model: saved whole with its tokenizer and options
        next(p.model.parameters()).add_(0.1)
    trained = p.embed(_items(), role=Role.CANDIDATE)
    p.save(tmp_path / "full")
    assert (tmp_path / "full" / MANIFEST).is_file() and (tmp_path / "full" / "config.json").is_file()
    again = load_embedder(f"mllm:{tmp_path / 'full'}")
    assert again.spec()["preset"] == "mmembed-p" and again.spec()["max_length"] == 64
    torch.testing.assert_close(again.embed(_items(), role="candidate"), trained)


@pytest.mark.parametrize("which", ["lm", "llava"])
def test_lora_adapter_saves_alone_and_reloads_as_one_spec(
    which: str, lm_dir: Path, llava_dir: Path, tmp_path: Path
) -> None:
    peft = pytest.importorskip("peft")
    base_dir = lm_dir if which == "lm" else llava_dir
    items = [*_items(), Item("i", image=_image())] if which == "llava" else _items()
    e = MLLMEmbedder.from_pretrained(base_dir, preset="mmembed-e")
    base = e.embed(items, role=Role.CANDIDATE)
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    e.model = peft.get_peft_model(e.model, config)
    tuned = e.embed(items, role=Role.CANDIDATE)
    assert (tuned - base).abs().max() > 1e-3
    e.save(tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", MANIFEST} <= files and "config.json" not in files
    reloaded = load_embedder(f"mllm:{tmp_path / 'adapter'}")
    assert reloaded.spec()["preset"] == "mmembed-e"
    torch.testing.assert_close(reloaded.embed(items, role=Role.CANDIDATE), tuned, atol=1e-6, rtol=0)
    explicit = load_embedder({"type": "mllm", "path": str(base_dir), "adapter": str(tmp_path / "adapter")})
    torch.testing.assert_close(explicit.embed(items, role=Role.CANDIDATE), tuned, atol=1e-6, rtol=0)
    torch.testing.assert_close(load_embedder(explicit.spec()).embed(items, role="candidate"), tuned)
    in_memory = MLLMEmbedder(*build_tiny_lm())
    in_memory.model = peft.get_peft_model(in_memory.model, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="in-memory base"):
        in_memory.save(tmp_path / "nope")


def test_clear_errors(lm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_embedder(f"mllm:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        MLLMEmbedder.from_pretrained(tmp_path / "empty")
    e = MLLMEmbedder.from_pretrained(lm_dir)
    with pytest.raises(ModalityError, match=r"'pic'.*Supported modalities: \['text'\]"):
        e.embed([Item("pic", image=_image())], role=Role.CANDIDATE)
    with pytest.raises(ModalityError, match="text-only"):
        e.forward_inputs([MLLMInput(0, "pic", None, Item("pic", image=_image()).image)], Role.CANDIDATE)
    with pytest.raises(ValueError, match="padding_side"):
        MLLMEmbedder(*build_tiny_lm(), padding_side="middle")


@pytest.mark.slow
def test_smollm2_sentences_rank_their_paraphrase_first() -> None:
    from lumir.rewrite.artifact import base_model_folder

    folder = base_model_folder("smollm2")
    texts = [
        "A dog runs across the grass.",
        "The stock market fell sharply today.",
        "A puppy is running on a lawn.",
        "Shares dropped steeply on Wall Street.",
    ]
    e = load_embedder({"type": "mllm", "path": str(folder), "preset": "lamra", "max_length": 64})
    v = e.embed(_items(texts), role=Role.CANDIDATE)
    sims = (v @ v.T).fill_diagonal_(-1)
    assert sims.argmax(dim=1).tolist() == [2, 3, 0, 1]
