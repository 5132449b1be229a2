"""lumir.testing.tiny: offline, seeded, fast tiny CLIP/SigLIP and chat (Llama, LLaVA) builders."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from PIL import Image

from lumir.testing.tiny import (
    TINY_CHAT_TEMPLATE,
    TINY_CHAT_VOCAB,
    TINY_VOCAB,
    build_tiny_clip,
    build_tiny_llava,
    build_tiny_lm,
    build_tiny_siglip,
    save_tiny_clip,
    save_tiny_llava,
    save_tiny_lm,
    tiny_chat_tokenizer,
    tiny_tokenizer,
)


def _params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_builds_are_fast_after_import() -> None:
    build_tiny_clip(), build_tiny_siglip()  # first call pays the transformers imports
    for build in (build_tiny_clip, build_tiny_siglip):
        start = time.perf_counter()
        build(seed=1)
        assert time.perf_counter() - start < 1.0


def test_seeded_and_global_rng_untouched() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, _ = build_tiny_clip(seed=0)
    assert torch.equal(torch.rand(1), expected_next)  # builder forks the RNG
    b, _ = build_tiny_clip(seed=0)
    c, _ = build_tiny_clip(seed=1)
    assert torch.equal(_params(a), _params(b))
    assert not torch.equal(_params(a), _params(c))


def test_architecture_recipe() -> None:
    model, _ = build_tiny_clip()
    assert model.config.projection_dim == 16
    assert model.config.text_config.hidden_size == 32 and model.config.vision_config.num_hidden_layers == 2
    assert model.config.vision_config.image_size == 30 and model.config.vision_config.patch_size == 6
    assert sum(p.numel() for p in model.parameters()) < 60_000
    siglip, _ = build_tiny_siglip()
    assert siglip.config.vision_config.hidden_size == 32


def test_tokenizer_specials_and_unknowns() -> None:
    tok = tiny_tokenizer()
    ids = tok("A RED zebra")["input_ids"]
    assert ids == [
        TINY_VOCAB.index("<bos>"),
        TINY_VOCAB.index("a"),
        TINY_VOCAB.index("red"),
        1,
        TINY_VOCAB.index("<eos>"),
    ]
    assert tiny_tokenizer(bos=False)("red")["input_ids"] == [TINY_VOCAB.index("red"), TINY_VOCAB.index("<eos>")]


def test_saved_folder_is_complete(tmp_path: Path) -> None:
    out = save_tiny_clip(tmp_path / "clip")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names


def test_chat_builders_are_fast_and_seeded() -> None:
    build_tiny_lm(), build_tiny_llava()
    for build in (build_tiny_lm, build_tiny_llava):
        start = time.perf_counter()
        a, _ = build(seed=0)
        assert time.perf_counter() - start < 1.0
        b, _ = build(seed=0)
        c, _ = build(seed=1)
        assert torch.equal(_params(a), _params(b)) and not torch.equal(_params(a), _params(c))
    lm, _ = build_tiny_lm()
    llava, _ = build_tiny_llava()
    assert sum(p.numel() for p in lm.parameters()) < 10_000 and sum(p.numel() for p in llava.parameters()) < 30_000
    assert llava.config.image_token_id == TINY_CHAT_VOCAB.index("<image>") < lm.config.vocab_size
    assert lm.config.eos_token_id == TINY_CHAT_VOCAB.index("<|im_end|>")


def test_chat_tokenizer_splits_digits_brackets_and_newlines() -> None:
    tok = tiny_chat_tokenizer()
    ids = tok.encode("(12) zebra\nYES", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids) == ["(", "1", "2", ")", "<unk>", "\n", "YES"]
    for word in ("True", "False", "YES", "NO", "Ans", "1", "9"):
        assert tok.encode(word, add_special_tokens=False) == [TINY_CHAT_VOCAB.index(word)]
    assert tok.encode("<|im_start|>user", add_special_tokens=False) == [2, TINY_CHAT_VOCAB.index("user")]
    assert tok.padding_side == "left" and tok.pad_token == "<pad>"


def test_chat_templates_render_chatml_and_images() -> None:
    conv = [{"role": "system", "content": "rank"}, {"role": "user", "content": "Is this red?"}]
    text = tiny_chat_tokenizer().apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert (
        text == "<|im_start|>system\nrank<|im_end|>\n<|im_start|>user\nIs this red?<|im_end|>\n<|im_start|>assistant\n"
    )
    _, processor = build_tiny_llava()
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "red?"}]}]
    prompt = processor.apply_chat_template(parts, tokenize=False, add_generation_prompt=False)
    assert prompt == "<|im_start|>user\n<image>red?<|im_end|>\n"
    enc = processor(text=[prompt], images=[Image.new("RGB", (50, 40))], return_tensors="pt")
    assert enc["pixel_values"].shape == (1, 3, 28, 28)
    assert (enc["input_ids"] == TINY_CHAT_VOCAB.index("<image>")).sum() == 4  # 2x2 patches, CLS dropped


def test_saved_chat_folders_reload(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    lm_dir, llava_dir = save_tiny_lm(tmp_path / "lm"), save_tiny_llava(tmp_path / "llava")
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in lm_dir.iterdir()
    }
    tok = AutoTokenizer.from_pretrained(lm_dir, local_files_only=True)
    assert tok.encode("(1) True", add_special_tokens=False) == tiny_chat_tokenizer().encode(
        "(1) True", add_special_tokens=False
    )
    model = AutoModelForCausalLM.from_pretrained(lm_dir, local_files_only=True)
    assert torch.equal(_params(model), _params(build_tiny_lm()[0]))
    processor = AutoProcessor.from_pretrained(llava_dir, local_files_only=True)
    assert processor.chat_template == TINY_CHAT_TEMPLATE and processor.image_processor.crop_size["height"] == 28
    llava = AutoModelForImageTextToText.from_pretrained(llava_dir, local_files_only=True)
    assert torch.equal(_params(llava), _params(build_tiny_llava()[0]))
