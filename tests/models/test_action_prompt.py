"""LAMP modules (action-aware prompt tuning §3.3, eq. 4-9): shapes and equations on small hand-checkable cases."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lumir.models.action_model import ActionAwareModel
from lumir.models.action_prompt import (
    ActionPromptConfig,
    ActionPrompter,
    AdaptiveInteraction,
    KnowledgeBatch,
    PromptAdapter,
    TripletEncoder,
    handcrafted_text,
    state_text,
)
from lumir.testing.tiny import build_tiny_clip, save_tiny_clip

TINY_PROMPT = {"num_triplets": 2, "heads": 2, "adapter_dim": 4}
KNOWLEDGE = [
    ([("dog", "runs", "park")], ["It runs fast."]),
    ([], []),
    ([("man", "rides", "horse"), ("horse", "is", "brown")], ["He holds the reins.", ""]),
]


def _photos(n: int = 3) -> list[Image.Image]:
    return [Image.new("RGB", (30, 30), c) for c in ("red", "blue", "green", "white")[:n]]


def test_templates_are_the_papers() -> None:
    assert state_text(("girl", "study", "laptop"), "She types.") == (
        "Fine-grained state description of action triplet <girl, study, laptop> is She types."
    )
    assert handcrafted_text(("a", "b", "c")) == "A photo capturing a a performing b in relation to c."


def test_prompt_adapter_is_eq6() -> None:
    torch.manual_seed(0)
    adapter = PromptAdapter(6, 2)
    p = torch.randn(3, 6)
    ln = F.layer_norm(p, (6,), adapter.norm.weight, adapter.norm.bias)
    expected = torch.relu(ln @ adapter.down.weight.T) @ adapter.up.weight.T
    assert torch.allclose(adapter(p), expected, atol=1e-6)
    assert adapter.down.weight.shape == (2, 6)  # d -> t with t << d


def test_triplet_encoder_concatenates_elements_and_ignores_padding() -> None:
    torch.manual_seed(0)
    enc = TripletEncoder(word_dim=4, dim=8, layers=1, heads=2).eval()
    words = torch.randn(1, 3, 3, 4)
    mask = torch.tensor([[True, True, False]])
    out = enc(words, mask)
    assert out.shape == (1, 3, 8)
    assert enc.proj.in_features == 12  # [W_s, W_a, W_o] concatenated
    other = words.clone()
    other[0, 2] = torch.randn(3, 4)  # the padded triplet changes: the real ones must not
    assert torch.allclose(enc(other, mask)[0, :2], out[0, :2], atol=1e-6)


def test_interaction_is_eq7_eq8() -> None:
    torch.manual_seed(0)
    aim = AdaptiveInteraction(8, 2, lam=0.7).eval()
    p_t, p_s, patches = torch.randn(2, 3, 8), torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    v_t, a_t = aim.attend(p_t, patches, mask)
    v_s, a_s = aim.attend(p_s, patches, mask)
    assert a_t.shape == (2, 3, 3)
    assert torch.allclose(a_t.sum(-1), torch.ones(2, 3), atol=1e-6)  # attention rows are distributions
    assert torch.all(a_t[1, :, 2] == 0)  # nobody attends to a padded triplet
    expected = (0.7 * a_t + 0.3 * a_s) @ aim.mlp(torch.cat([v_t, v_s], dim=-1))
    assert torch.allclose(aim(p_t, p_s, patches, mask), expected, atol=1e-6)
    # one prompt set stands in for the missing one
    assert torch.allclose(aim(p_t, None, patches, mask), a_t @ aim.mlp(torch.cat([v_t, v_t], -1)), atol=1e-6)


@pytest.mark.parametrize(
    ("options", "tokens"),
    [
        ({}, 2 + 4),
        ({"interaction": "cat"}, 2 * 2 + 4),
        ({"interaction": "cat", "use_states": False}, 2 + 4),
        ({"use_triplets": False, "use_states": False}, 4),
        ({"num_visual_prompts": 0}, 2),
    ],
)
def test_prompt_token_count(options: dict, tokens: int) -> None:
    config = ActionPromptConfig(dim=8, word_dim=4, text_dim=6, num_layers=3, heads=2, num_triplets=2, **options)
    assert config.num_prompt_tokens == tokens
    prompter = ActionPrompter(config)
    kb = KnowledgeBatch(torch.randn(2, 2, 3, 4), torch.randn(2, 2, 6), torch.randn(2, 2, 6), torch.ones(2, 2).bool())
    assert prompter.prompt_tokens(torch.randn(2, 5, 8), kb).shape == (2, tokens, 8)


class _RecordingBackbone:
    """A fake backbone of identity layers that records what each layer sees."""

    hidden, num_layers = 8, 3

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def embed(self, images: dict) -> torch.Tensor:
        return images["x"]

    def layer(self, i: int, hidden: torch.Tensor) -> torch.Tensor:
        self.seen.append(hidden.clone())
        return hidden

    def pool(self, hidden: torch.Tensor, images: dict) -> torch.Tensor:
        return hidden[:, 0]


def test_early_layers_see_adapter_prompts_later_layers_their_own() -> None:
    config = ActionPromptConfig(dim=8, word_dim=4, text_dim=6, num_layers=3, heads=2, num_triplets=2, early_layers=1)
    prompter = ActionPrompter(config)
    backbone = _RecordingBackbone()
    kb = KnowledgeBatch(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 6), torch.randn(1, 2, 6), torch.ones(1, 2).bool())
    x = torch.randn(1, 5, 8)
    prompter.encode(backbone, {"x": x}, kb)  # type: ignore[arg-type]
    first, second, third = backbone.seen
    assert first.shape == (1, 5 + 6, 8)
    assert torch.equal(first[:, :5], x)
    assert torch.allclose(first[:, 5:], prompter.prompt_tokens(x, kb))  # eq. 9: [Ṽ, P_v] appended
    assert torch.equal(second[0, 5:], prompter.layer_prompts[0])  # later layers: independent prompts
    assert torch.equal(third[0, 5:], prompter.layer_prompts[1])
    assert prompter.layer_prompts.shape == (2, 6, 8)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="interaction"):
        ActionPromptConfig(dim=8, word_dim=4, text_dim=6, num_layers=2, interaction="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="early_layers"):
        ActionPromptConfig(dim=8, word_dim=4, text_dim=6, num_layers=2, early_layers=3)
    with pytest.raises(ValueError, match="unknown"):
        ActionPromptConfig.from_dict({"dim": 8, "word_dim": 4, "text_dim": 6, "num_layers": 2, "lambda": 0.5})


def test_tiny_clip_knowledge_steers_the_image_embedding() -> None:
    model = ActionAwareModel.from_towers(*build_tiny_clip(), prompt=TINY_PROMPT)
    images = model.images(_photos())
    kb = model.knowledge(KNOWLEDGE)
    assert kb.mask.tolist() == [[True, False], [True, False], [True, True]]
    z = model.encode(images, kb)
    assert z.shape == (3, 16)
    assert torch.allclose(z.norm(dim=-1), torch.ones(3), atol=1e-5)
    same_image = {k: v[[0, 0]] for k, v in images.items()}
    z2 = model.encode(same_image, kb.index([0, 2]))
    assert (z2[0] - z2[1]).abs().max() > 1e-6  # one photo, two texts' knowledge: two embeddings
    texts = model.caption_embeddings(["a dog runs", "a man rides a horse"])
    cross = model.cross_scores(images, kb.index([0, 2]), texts)
    assert cross.shape == (2, 3)
    manual = (model.encode({k: v[[1]] for k, v in images.items()}, kb.index([2])) * texts[1]).sum()
    assert torch.allclose(cross[1, 1], manual, atol=1e-5)


def test_no_knowledge_model_ignores_knowledge() -> None:
    model = ActionAwareModel.from_towers(
        *build_tiny_clip(), prompt={**TINY_PROMPT, "use_triplets": False, "use_states": False}
    )
    images = model.images(_photos(2))
    z = model.encode(images, None)
    assert z.shape == (2, 16)
    assert model.prompter.interaction is None and model.prompter.adapter is None


def test_save_load_round_trip(tmp_path: Path) -> None:
    clip_dir = save_tiny_clip(tmp_path / "clip")
    model = ActionAwareModel.build(
        {"backbone": {"kind": "clip", "path": str(clip_dir)}, "prompt": TINY_PROMPT}, seed=3
    )
    with torch.no_grad():
        model.prompter.visual_prompts.add_(1.0)
    out = model.save(tmp_path / "lamp")
    again = ActionAwareModel.load(out)
    assert again.config == model.config
    images, kb = model.images(_photos()), model.knowledge(KNOWLEDGE)
    assert torch.allclose(again.encode(images, kb), model.encode(images, kb), atol=1e-6)
    assert set(again.trainable_state()) == set(model.trainable_state())
    assert not any(k.startswith("backbone.vision") for k in model.trainable_state())  # CLIP is never saved/trained


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    from lumir.errors import DataFormatError, ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="lumir_action_model.json"):
        ActionAwareModel.load(tmp_path)
    (tmp_path / "lumir_action_model.json").write_text('{"format": "other"}')
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(DataFormatError, match="not an action-aware model"):
        ActionAwareModel.load(tmp_path)


def test_mini_adaptation_starts_at_the_first_stage(data_root: Path) -> None:
    """lumir's adaptation is a zero-initialised residual on lumir-mini's image embedding: before training, the
    re-scorer gives exactly the first stage's image vectors."""
    from lumir.embed.mini import MiniEmbedder
    from lumir.types import Item, Role

    photos = sorted((data_root / "flickr8k" / "images").glob("*.jpg"))[:2]
    model = ActionAwareModel.build({"backbone": {"kind": "mini"}})
    images = model.images([Image.open(p).convert("RGB") for p in photos])
    assert images["tokens"].shape == (2, 49, 512)
    first_stage = MiniEmbedder().embed([Item(p.stem, image=str(p)) for p in photos], role=Role.CANDIDATE)
    assert torch.allclose(images["base"], first_stage, atol=1e-4)
    z = model.encode(images, model.knowledge(KNOWLEDGE[:2]))
    assert torch.allclose(z, first_stage, atol=1e-4)
