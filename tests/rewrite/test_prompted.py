"""PromptRewriter (LLMsRewrite) with a scripted chat model: rewrites, every fallback reason, provenance, cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from lumir.models.chat.cache import CachedChatModel
from lumir.pipeline import PipelineSpec, load_stages
from lumir.registry import REWRITERS, build
from lumir.rewrite import PromptRewriter
from lumir.rewrite.prompts import LLMS_REWRITE, TRAINED
from lumir.testing.fakes import ScriptedChatModel
from lumir.testing.toy import color_image
from lumir.types import ImageRef, Query


def key(query: str) -> str:
    """What ScriptedChatModel keys replies by: the system and user messages' text joined by a newline."""
    return LLMS_REWRITE.system + "\n" + LLMS_REWRITE.render(query=query)


REPLIES = {
    key("dog on grass"): " A brown dog lying on green grass.",
    key("a red car"): "A red car.",  # echo
    key("kids playing"): "Stock prices fell sharply.",  # off topic
    key("a cat"): "A cat " + "sitting quietly " * 30,  # too long
    key("a bird"): "   ",  # empty
    key("man on bike"): "A man riding a bicycle.\n\nQuery: cat\nRewrite: A cat sleeping.",  # goes on: cut
    key("two kids"): "Rewrite: Two kids splashing in a pool.",  # repeats the label
}


def test_rewrites_fallbacks_by_reason_and_provenance() -> None:
    chat = ScriptedChatModel(replies=REPLIES)
    rewriter = PromptRewriter(chat, batch_size=3)
    image = ImageRef(color_image("red"))
    qs = [
        Query("q1", text="dog on grass", task="t"),
        Query("q2", text="a red car"),
        Query("q3", text="kids playing"),
        Query("q4", text="a cat"),
        Query("q5", text="a bird"),
        Query("q6", image=image),  # image-only: unchanged
        Query("q7", text="man on bike", image=image),  # composed: the text is rewritten, the image kept
        Query("q8", text="two kids"),
        Query("q9", text="dog on grass"),  # a repeated text is generated once
    ]
    out = rewriter.rewrite(qs)
    assert [q.id for q in out] == [q.id for q in qs]
    assert [q.text for q in out] == [
        "A brown dog lying on green grass.",
        "a red car",
        "kids playing",
        "a cat",
        "a bird",
        None,
        "A man riding a bicycle.",
        "Two kids splashing in a pool.",
        "A brown dog lying on green grass.",
    ]
    assert out[0].task == "t" and out[6].image is image and out[5] is qs[5]
    assert out[0].meta["rewrite"] == {"original": "dog on grass", "rewriter": rewriter.spec()}
    assert out[1].meta["rewrite"]["fallback"] == "echo" and out[1].meta["rewrite"]["refused"] == "A red car."
    assert out[1].meta["rewrite"]["original"] == "a red car"
    reasons = {q.id: q.meta["rewrite"].get("fallback") for q in out if "rewrite" in q.meta}
    assert reasons == {"q1": None, "q2": "echo", "q3": "off_topic", "q4": "too_long", "q5": "empty", "q7": None,
                       "q8": None, "q9": None}  # fmt: skip
    stats = rewriter.last_stats.to_dict()
    assert stats["fallbacks"] == {"empty": 1, "echo": 1, "too_long": 1, "off_topic": 1}  # REFUSALS order
    assert (stats["queries"], stats["rewritten"], stats["unchanged"], stats["fallback_total"]) == (9, 4, 1, 4)
    assert stats["model_calls"] == 3 == chat.calls  # 7 distinct texts in batches of 3
    assert chat.stats.conversations == 7
    rewriter.rewrite(qs[:2])
    assert rewriter.stats.queries == 11 and rewriter.last_stats.queries == 2 and rewriter.stats.fallbacks["echo"] == 2


def test_prompt_rendering_and_decoding_options() -> None:
    chat = ScriptedChatModel()
    rewriter = PromptRewriter(chat, max_new_tokens=20)
    conv = rewriter.conversation("a dog")
    assert conv == [
        {"role": "system", "content": LLMS_REWRITE.system},
        {"role": "user", "content": LLMS_REWRITE.render(query="a dog")},
    ]
    assert rewriter.generation_options() == {"max_new_tokens": 20, "stop": ["\nQuery:"]}
    trained = PromptRewriter(chat, prompt="trained")  # no system message
    assert trained.conversation("a dog") == [{"role": "user", "content": TRAINED.render(query="a dog")}]
    with pytest.raises(ValueError, match="needs the field 'rank'"):
        PromptRewriter(chat, prompt="challenge")
    with pytest.raises(KeyError, match="unknown rewrite prompt"):
        PromptRewriter(chat, prompt="nope")
    with pytest.raises(ValueError, match="max_words"):
        PromptRewriter(chat, max_words=0)


def test_similarity_embedder_decides_off_topic() -> None:
    replies = {key("a red car"): "A blue car parked outside.", key("red"): "A red and shiny red thing."}
    qs = [Query("a", text="a red car"), Query("b", text="red")]
    plain = PromptRewriter(ScriptedChatModel(replies=replies)).rewrite(qs)
    assert [q.text for q in plain] == ["A blue car parked outside.", "A red and shiny red thing."]  # "car" shared
    colour = PromptRewriter(ScriptedChatModel(replies=replies), similarity="color", min_similarity=0.5)
    out = colour.rewrite(qs)
    assert [q.meta["rewrite"].get("fallback") for q in out] == ["off_topic", None]  # red vs blue: cosine < 0.5
    assert colour.spec()["similarity"] == {"type": "color"} and colour.spec()["min_similarity"] == 0.5
    again = build("rewriter", colour.spec())
    assert isinstance(again, PromptRewriter) and again.spec() == colour.spec()


def test_registry_specs_and_the_pipeline_llm_cache(tmp_path: Path) -> None:
    spec = {"type": "llm", "llm": {"type": "scripted", "replies": REPLIES}, "batch_size": 2}
    assert REWRITERS.parse("llm:smollm2") == {"type": "llm", "llm": "smollm2"}
    assert REWRITERS.parse("prompt:qwen-coder,max_words=20") == {"type": "llm", "llm": "qwen-coder", "max_words": 20}
    stages = load_stages(PipelineSpec(rewriter=spec, llm_cache=str(tmp_path / "llm.sqlite")))
    rewriter = stages.rewriter
    assert isinstance(rewriter, PromptRewriter) and isinstance(rewriter.chat, CachedChatModel)
    assert rewriter.spec()["llm"]["type"] == "cached"
    qs = [Query("q1", text="dog on grass"), Query("q2", text="a red car")]
    first = rewriter.rewrite(qs)
    assert rewriter.last_stats.model_calls == 1 and rewriter.last_stats.cache_misses == 2
    again = build("rewriter", rewriter.spec())  # a fresh rewriter on the same cache file
    assert [q.text for q in again.rewrite(qs)] == [q.text for q in first]
    assert again.last_stats.model_calls == 0 and again.last_stats.cache_hits == 2
    no_cache = load_stages(PipelineSpec(rewriter=spec, llm_cache="none")).rewriter
    assert isinstance(no_cache, PromptRewriter) and not isinstance(no_cache.chat, CachedChatModel)


def test_eval_reports_record_the_rewrite_cost_and_fallbacks() -> None:
    from lumir.eval import evaluate
    from lumir.eval.report import stage_summary

    llm = {"type": "scripted", "default_reply": "a bright red thing"}
    spec = {"embedder": "color", "k": 8, "rewriter": {"type": "llm", "llm": llm}, "llm_cache": "none"}
    result = evaluate(spec, "toy")
    task = result.task("toy/t2i")
    assert task["rewrites"] == {"q-red": "a bright red thing"}
    assert task["rewrite_ms_per_query"] >= 0 and task["timings"]["rewrite"] >= 0
    stats = task["rewrite_stats"]
    assert (stats["queries"], stats["rewritten"], stats["model_calls"]) == (8, 1, 1)
    assert stats["fallbacks"] == {"off_topic": 7}
    assert "- toy/t2i / rewrite: " in stage_summary(result)
    template = evaluate({"embedder": "color", "k": 8, "rewriter": "template:a {text} photo"}, "toy")
    assert template.task("toy/t2i")["rewrite_stats"] == {"queries": 8, "rewritten": 8, "fallbacks": {}}
