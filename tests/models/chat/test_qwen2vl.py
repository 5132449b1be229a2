"""Qwen2-VL-style models through TransformersChatModel (needs torchvision for the Qwen2-VL processor).

Skipped where torchvision is absent (this project's CPU machines); run with `pip install 'lumir[vision]'`, e.g. on
the GPU machine. The tiny config follows docs/architecture.md §4.2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.vision


def test_tiny_qwen2vl_scores_image_prompts(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    from lumir.models.chat.base import user_message
    from lumir.models.chat.hf import TransformersChatModel
    from lumir.testing.tiny import TINY_CHAT_TEMPLATE, tiny_chat_tokenizer
    from lumir.types import ImageRef

    tok = tiny_chat_tokenizer()
    extra = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok.add_special_tokens({"additional_special_tokens": extra})
    ids = tok.convert_tokens_to_ids(extra)
    torch.manual_seed(0)
    cfg = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1]},
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        vision_config={"depth": 2, "embed_dim": 16, "hidden_size": 16, "num_heads": 2, "patch_size": 14},
        vision_start_token_id=ids[0],
        vision_end_token_id=ids[1],
        image_token_id=ids[2],
        video_token_id=ids[3],
    )
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    template = TINY_CHAT_TEMPLATE.replace("'<image>'", "'<|vision_start|><|image_pad|><|vision_end|>'")
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56),
        video_processor=Qwen2VLVideoProcessor(),
        tokenizer=tok,
        chat_template=template,
    )
    chat = TransformersChatModel(model, processor)
    rng = np.random.default_rng(0)
    imgs = [ImageRef(Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))) for _ in range(2)]
    convs = [user_message(im, "Is this a red dog? True or False") for im in imgs]
    batched = chat.token_logprobs(convs, ["False", "True"])
    single = torch.cat([chat.token_logprobs([c], ["False", "True"]) for c in convs])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=0)
    assert (batched[0] - batched[1]).abs().max() > 0
