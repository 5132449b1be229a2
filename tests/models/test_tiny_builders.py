"""lumir.testing.tiny: offline, seeded, fast tiny CLIP/SigLIP builders."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lumir.testing.tiny import TINY_VOCAB, build_tiny_clip, build_tiny_siglip, save_tiny_clip, tiny_tokenizer


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
