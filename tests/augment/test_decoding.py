"""MLLM-augmented captions Table 10 / §4.1 as named values: the fixed cap and the per-model decoding presets."""

from __future__ import annotations

import pytest

from lumir.augment.decoding import GREEDY, PAPER_MAX_NEW_TOKENS, TABLE10_DECODING, resolve_decoding
from lumir.models.chat.base import GenerationConfig


def test_paper_cap_is_30_new_tokens() -> None:
    assert PAPER_MAX_NEW_TOKENS == 30  # §4.1 "a maximum token limit of 30"; Table 10 max_new_tokens
    assert all(p.paper["max_new_tokens"] == PAPER_MAX_NEW_TOKENS for p in TABLE10_DECODING.values())
    assert all(p.paper["num_beams"] == 1 for p in TABLE10_DECODING.values())  # §4.1 "number of beams equal to 1"


def test_table10_is_verbatim() -> None:
    assert {k: p.model for k, p in TABLE10_DECODING.items()} == {
        "minigpt4": "Mini-GPT4-Vicuna13B",
        "otter": "Otter-Image-MPT7B",
        "qwen-vl": "Qwen-VL-Chat",
        "llava-1.5": "LLaVA-v1.5-13B",
    }
    assert TABLE10_DECODING["minigpt4"].paper == {
        "max_new_tokens": 30,
        "num_beams": 1,
        "do_sample": True,
        "min_length": 1,
        "top_p": 0.3,
        "repetition_penalty": 1.0,
        "length_penalty": 1,
        "temperature": 1.0,
    }
    assert TABLE10_DECODING["otter"].paper == {"max_new_tokens": 30, "num_beams": 1, "no_repeat_ngram_size": 3}
    assert TABLE10_DECODING["qwen-vl"].paper == {
        "max_new_tokens": 30,
        "num_beams": 1,
        "do_sample": False,
        "min_new_tokens": 8,
        "length_penalty": 0,
    }
    assert TABLE10_DECODING["llava-1.5"].paper == {
        "num_return_sequences": 1,
        "max_new_tokens": 30,
        "num_beams": 1,
        "do_sample": True,
        "top_p": None,
        "temperature": 0.2,
    }


def test_every_table10_setting_is_carried_a_no_op_or_a_documented_drop() -> None:
    carried = {"do_sample", "temperature", "top_p", "max_new_tokens"}  # temperature > 0 is do_sample=True
    for preset in TABLE10_DECODING.values():
        accounted = carried | set(preset.no_ops) | set(preset.dropped)
        assert set(preset.paper) <= accounted, preset.name
        assert not set(preset.no_ops) & set(preset.dropped)
        cfg = GenerationConfig.from_kwargs({**preset.generation, "max_new_tokens": PAPER_MAX_NEW_TOKENS})
        assert cfg.greedy == (not preset.paper.get("do_sample", False)), preset.name
        if preset.paper.get("do_sample"):
            assert cfg.temperature == preset.paper["temperature"]
            assert cfg.top_p == (preset.paper["top_p"] if preset.paper["top_p"] is not None else 1.0)
    assert {k: dict(p.dropped) for k, p in TABLE10_DECODING.items() if p.dropped} == {
        "otter": {"no_repeat_ngram_size": 3},
        "qwen-vl": {"min_new_tokens": 8},
    }


def test_resolve_decoding() -> None:
    assert resolve_decoding(None) == resolve_decoding(GREEDY) == ({}, {"preset": "greedy"})
    assert resolve_decoding("otter") == (
        {"temperature": 0.0},
        {"preset": "otter", "temperature": 0.0, "dropped": {"no_repeat_ngram_size": 3}},
    )
    assert resolve_decoding({"temperature": 0.5}) == ({"temperature": 0.5}, {"preset": "custom", "temperature": 0.5})
    with pytest.raises(KeyError, match="llava-1.5"):
        resolve_decoding("llava")
    with pytest.raises(ValueError, match="max_new_tokens"):
        resolve_decoding({"max_new_tokens": 30})
