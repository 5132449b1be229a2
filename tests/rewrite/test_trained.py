"""TrainedRewriter on tiny real causal LMs: full-model and LoRA-adapter folders, the exact trained prompt, left-padded
batches, cache fingerprints per adapter, cache hits, registry and pipeline wiring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lumir.errors import ModelNotFoundError
from lumir.pipeline import PipelineSpec, load_stages
from lumir.registry import build
from lumir.rewrite import TrainedRewriter
from lumir.rewrite.artifact import save_rewriter
from lumir.rewrite.trained import folder_digest
from lumir.testing.tiny import build_tiny_lm, save_tiny_lm
from lumir.train.rewriter.common import prompt_text
from lumir.types import Query

QUERIES = [
    Query("q1", text="a red dog"),
    Query("q2", text="the blue cat is in a photo of a green square and a yellow circle"),
    Query("q3", text="red"),
    Query("q4", text="a dog and a cat"),
]
TEXTS = [q.text or "" for q in QUERIES]


def _perturbed(seed: int) -> Any:
    model, _ = build_tiny_lm()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def _adapter(tmp: Path, base: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model

    model, tokenizer = build_tiny_lm()
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p))
    return save_rewriter(peft_model, tokenizer, tmp / f"adapter{seed}", stage="sft", base=base, config={"seed": seed})


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("rewriters")
    base = save_tiny_lm(tmp / "base")
    _, tokenizer = build_tiny_lm()
    full = save_rewriter(_perturbed(1), tokenizer, tmp / "full", stage="sft", base=base)
    return {"base": base, "full": full, "a1": _adapter(tmp, base, 1), "a2": _adapter(tmp, base, 2)}


def test_full_model_folder_prompt_and_batched_greedy_equals_one_at_a_time(folders: dict[str, Path]) -> None:
    rewriter = TrainedRewriter(folders["full"], max_new_tokens=6, batch_size=4)
    assert rewriter.manifest["stage"] == "sft" and not rewriter.manifest["adapter"]
    for text in TEXTS:  # exactly what the trainers train on
        assert rewriter.prompt(text) == prompt_text(rewriter.tokenizer, text)
    assert rewriter.tokenizer.padding_side == "left"
    batched = rewriter.generate(TEXTS)
    assert len(set(batched)) > 1
    single = TrainedRewriter(folders["full"], max_new_tokens=6, batch_size=1)
    assert single.generate(TEXTS) == batched
    assert single.chat.stats.calls == len(TEXTS) and rewriter.chat.stats.calls == 1
    plain = TrainedRewriter(folders["base"], max_new_tokens=6)  # a plain causal-LM folder loads too
    assert plain.manifest["stage"] == "base" and plain.generate(TEXTS) != batched


def test_rewrite_validates_and_records_provenance(folders: dict[str, Path]) -> None:
    rewriter = TrainedRewriter(folders["full"], max_new_tokens=6, max_words=3)
    out = rewriter.rewrite(QUERIES)
    assert [q.id for q in out] == [q.id for q in QUERIES]
    for q, before in zip(out, QUERIES, strict=True):
        record = q.meta["rewrite"]
        assert record["original"] == before.text and record["rewriter"] == rewriter.spec()
        if "fallback" in record:
            assert q.text == before.text and record["fallback"] in {"empty", "echo", "too_long", "off_topic"}
        else:
            assert q.text == record.get("refused", q.text) and len((q.text or "").split()) <= 3
    stats = rewriter.last_stats
    assert stats.queries == 4 and stats.rewritten + stats.fallback_total == 4 and stats.model_calls == 1
    assert rewriter.parse('\n  "A red dog."\nmore') == "A red dog."


def test_lora_adapters_load_and_get_their_own_cache_fingerprints(folders: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "llm.sqlite"
    a1 = TrainedRewriter(folders["a1"], max_new_tokens=5, llm_cache=cache)
    a2 = TrainedRewriter(folders["a2"], max_new_tokens=5, llm_cache=cache)
    base = TrainedRewriter(folders["base"], max_new_tokens=5)
    assert hasattr(a1.model, "peft_config") and a1.manifest["adapter"]
    assert len({a1.chat.fingerprint, a2.chat.fingerprint, base.chat.fingerprint}) == 3
    digest = folder_digest(folders["a1"], folders["base"])
    assert a1.chat_model._weights_digest == digest  # the folder's files, not a sample of the module
    (folders["a1"] / "train_log.jsonl").write_text("{}\n")
    assert folder_digest(folders["a1"], folders["base"]) == digest  # logs beside the weights do not count
    first = a1.generate(TEXTS)
    assert first != base.generate(TEXTS)  # the adapter's weights are applied
    a1.rewrite(QUERIES)
    assert a1.last_stats.model_calls == 0 and a1.last_stats.cache_hits == 4  # generate() filled the cache
    again = TrainedRewriter(folders["a1"], max_new_tokens=5, llm_cache=cache)
    again.rewrite(QUERIES)
    assert again.last_stats.model_calls == 0 and again.last_stats.cache_hits == 4
    a2.rewrite(QUERIES)  # another adapter: nothing of a1's is reused
    assert a2.last_stats.model_calls == 1 and a2.last_stats.cache_misses == 4


def test_sampling_is_seeded_and_options_are_checked(folders: dict[str, Path]) -> None:
    sampler = TrainedRewriter(folders["full"], do_sample=True, temperature=1.0, top_p=0.95, seed=3, max_new_tokens=5)
    assert sampler.generation_options() == {"max_new_tokens": 5, "temperature": 1.0, "top_p": 0.95, "seed": 3}
    assert sampler.generate(TEXTS) == sampler.generate(TEXTS)
    with pytest.raises(ValueError, match="temperature > 0"):
        TrainedRewriter(folders["full"], do_sample=True, temperature=0.0)
    with pytest.raises(ModelNotFoundError, match="neither a local transformers folder nor an offline LLM"):
        TrainedRewriter(folders["full"].parent / "missing")


def test_registry_round_trip_and_pipeline_cache(folders: dict[str, Path], tmp_path: Path) -> None:
    rewriter = build("rewriter", f"trained:{folders['a1']},max_new_tokens=4")
    assert isinstance(rewriter, TrainedRewriter) and rewriter.spec()["path"] == str(folders["a1"])
    assert "llm_cache" not in rewriter.spec()
    assert build("rewriter", rewriter.spec()).spec() == rewriter.spec()
    cache = tmp_path / "c.sqlite"
    staged = load_stages(PipelineSpec(rewriter=f"trained:{folders['a1']}", llm_cache=str(cache))).rewriter
    assert isinstance(staged, TrainedRewriter) and staged.spec()["llm_cache"] == str(cache)  # injected
    none = load_stages(PipelineSpec(rewriter=f"trained:{folders['a1']}", llm_cache="none")).rewriter
    assert isinstance(none, TrainedRewriter) and none.llm_cache is None


def test_from_model_serves_an_in_memory_policy() -> None:
    model, tokenizer = build_tiny_lm()
    rewriter = TrainedRewriter.from_model(model, tokenizer, max_new_tokens=4)
    assert rewriter.model is model and rewriter.spec()["path"] is None
    assert [q.id for q in rewriter.rewrite(QUERIES[:2])] == ["q1", "q2"]
    with pytest.raises(TypeError, match="unknown TrainedRewriter option"):
        TrainedRewriter.from_model(model, tokenizer, llm_cache="x")
