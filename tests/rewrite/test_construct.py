"""The MGQRe pair builder end to end with a scripted agent and a known-answer retriever."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

from lumir.collections import Corpus, Rankings
from lumir.errors import DataFormatError, ModalityError
from lumir.rewrite.construct import ConstructionConfig, PairBuilder, export_datasets, read_records
from lumir.types import ImageRef, Item, Modality, Query, Role

CAPTIONS = {
    "img-gt": ["a dog runs", "a brown dog runs on the grass", "a puppy playing outside"],
    "img-a": ["a cat sleeps on a sofa"],
    "img-b": ["a horse in a field"],
}
CORPUS = Corpus([Item(i, image=ImageRef(f"{i}.png")) for i in CAPTIONS])


class KnownRetriever:
    """The ground truth ``img-gt`` ranks first when the text says "brown", else third (below img-a, img-b)."""

    def retrieve(self, queries: Sequence[Query], k: int) -> Rankings:
        rows = []
        for q in queries:
            good = "brown" in (q.text or "")
            order = ["img-gt", "img-a", "img-b"] if good else ["img-a", "img-b", "img-gt"]
            rows.append([(cid, 0.9 - 0.1 * n + (0.05 if good else 0.0)) for n, cid in enumerate(order)][:k])
        return Rankings.from_hits([q.id for q in queries], rows, k=k)


class FunctionChat:
    """A text-only chat model whose reply is ``reply(prompt_text, call_number)``."""

    backend = "function"
    supports_images = False
    context_length = None
    stats = None

    def __init__(self, reply: Callable[[str, int], str]) -> None:
        self.reply, self.prompts = reply, []  # type: list[str]
        self.gens: list[dict[str, Any]] = []

    def spec(self) -> dict[str, Any]:
        return {"type": "function"}

    def generate(self, conversations: Sequence[Any], **gen: Any) -> list[str]:
        out = []
        self.gens.append(gen)
        for conv in conversations:
            text = "\n".join(p["text"] for m in conv for p in m["content"] if p["type"] == "text")
            self.prompts.append(text)
            out.append(self.reply(text, len(self.prompts)))
        return out


class BagEmbedder:
    """Bag-of-words vectors: texts sharing words are similar, texts sharing none are orthogonal."""

    modalities = frozenset({Modality.TEXT})
    dim = 64

    def embed(self, items: Sequence[Item], *, role: Role, batch_size: int = 32) -> torch.Tensor:
        out = torch.zeros(len(items), self.dim)
        for i, it in enumerate(items):
            for w in (it.text or "").lower().split():
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        return out

    def spec(self) -> dict[str, Any]:
        return {"type": "bag"}


def agent(prompt: str, call: int) -> str:
    if "vaguer" in prompt:
        return "Query: a dog"
    script = {
        1: "Analysis: the engine missed the colour.\nQuery: a dog runs",  # echo -> refused
        2: "Analysis: colour and action matter.\nQuery: a dog that is brown and running",  # high
        3: "Analysis: try the speed.\nQuery: a dog runs fast",  # still low
    }
    return script.get(call, "no label here")


def builder(reply: Callable[[str, int], str] = agent, **cfg: Any) -> PairBuilder:
    config = ConstructionConfig(**{"image_mode": "caption", "target_rewrites": 2, "min_similarity": 0.3, **cfg})
    return PairBuilder(
        KnownRetriever(), FunctionChat(reply), CORPUS, config, captions=CAPTIONS, similarity=BagEmbedder()
    )


def test_low_quality_query_gets_iterated_rewrites_with_feedback_and_provenance() -> None:
    b = builder()
    rec = b.build_one(Query("q1", text="a dog runs"), "img-gt")
    assert (rec["quality"], rec["rank"], rec["calls"]) == ("low", 3, 3)
    statuses = [a["status"] for a in rec["attempts"]]
    assert statuses == ["refused:echo", "high", "not_high"]
    high = rec["attempts"][1]
    assert (high["rank_before"], high["rank"], high["turn"]) == (3, 1, 2)
    assert high["analysis"] == "colour and action matter."
    assert rec["prompt_version"] == "mgqre-challenge/1" and rec["image_mode"] == "caption"
    first, second = b.chat.prompts[0], b.chat.prompts[1]  # type: ignore[attr-defined]
    # caption-proxy: the ground truth is described by its OTHER captions, never the query itself
    assert "Image description: a brown dog runs on the grass; a puppy playing outside" in first
    assert "1. Image description: a cat sleeps on a sofa" in first and "2. Image description: a horse" in first
    assert "position 3" in first and "Your earlier" not in first
    assert 'Your earlier rewrite "a dog runs" was refused (echo)' in second


def test_stops_once_enough_rewrites_are_high_quality() -> None:
    b = builder(lambda p, n: f"Analysis: ok\nQuery: a brown dog number {n}")
    rec = b.build_one(Query("q1", text="a dog runs"), "img-gt")
    assert [a["status"] for a in rec["attempts"]] == ["high", "high"] and rec["calls"] == 2


def test_repeated_rewrite_is_a_duplicate_not_a_second_high_quality_rewrite() -> None:
    b = builder(lambda p, n: "Analysis: ok\nQuery: a brown dog with big ears")
    rec = b.build_one(Query("q1", text="a dog runs"), "img-gt")
    assert [a["status"] for a in rec["attempts"]] == ["high", "duplicate", "duplicate"]


def test_high_quality_query_is_blurred_and_kept_only_when_ranked_worse() -> None:
    b = builder()
    rec = b.build_one(Query("q2", text="a brown dog"), "img-gt")
    assert rec["quality"] == "high" and rec["attempts"][0]["status"] == "low"
    b2 = builder(lambda p, n: "Query: a brown animal")  # still ranked first: not a low-quality variant
    assert b2.build_one(Query("q2", text="a brown dog"), "img-gt")["attempts"][0]["status"] == "not_worse"


def test_similarity_copy_and_format_filters() -> None:
    sim = builder(lambda p, n: "Analysis: x\nQuery: quantum physics lecture brown", max_turns=1)
    assert sim.build_one(Query("q", text="a dog runs"), "img-gt")["attempts"][0]["status"] == "refused:similarity"
    copy = builder(lambda p, n: "Analysis: x\nQuery: a brown dog runs on the grass", max_turns=1)
    att = copy.build_one(Query("q", text="a dog runs"), "img-gt")["attempts"][0]
    assert att["status"] == "refused:copy" and att["copied_share"] >= 0.5
    unlabeled = builder(lambda p, n: "I think the brown dog", max_turns=1)
    assert unlabeled.build_one(Query("q", text="a dog runs"), "img-gt")["attempts"][0]["status"] == "refused:empty"


@pytest.mark.parametrize(("strategy", "shows_negatives"), [("feedback", False), ("direct", False)])
def test_table2_strategies(strategy: str, shows_negatives: bool) -> None:
    b = builder(lambda p, n: "Query: a dog runs quickly", strategy=strategy)
    rec = b.build_one(Query("q1", text="a dog runs"), "img-gt")
    if strategy == "direct":  # one turn, accepted whatever its rank
        assert [a["status"] for a in rec["attempts"]] == ["high"]
    else:  # iterated on rank feedback; never high here
        assert [a["status"] for a in rec["attempts"]] == ["not_high", "duplicate", "duplicate"]
        assert "ranked the correct photo at position 3" in b.chat.prompts[1]  # type: ignore[attr-defined]
    assert ("a cat sleeps" in b.chat.prompts[0]) is shows_negatives  # type: ignore[attr-defined]


def test_native_mode_refuses_a_text_only_model() -> None:
    with pytest.raises(ModalityError, match="caption-proxy"):
        PairBuilder(KnownRetriever(), FunctionChat(agent), CORPUS, ConstructionConfig(image_mode="native"))
    with pytest.raises(ValueError, match="strategy"):
        ConstructionConfig(strategy="magic")


def test_run_resumes_and_export_writes_sft_and_pro(tmp_path: Any) -> None:
    out = tmp_path / "records.jsonl"
    queries = [Query("q1", text="a dog runs"), Query("q2", text="a brown dog"), Query("q3", text="the dog")]
    targets = {q.id: "img-gt" for q in queries}
    assert builder().run(queries[:2], targets, out, progress=False) == {"done": 2, "skipped": 0}
    assert builder().run(queries, targets, out, progress=False) == {"done": 1, "skipped": 2}
    assert [r["id"] for r in read_records(out)] == ["q1", "q2", "q3"]
    stats = export_datasets(out, tmp_path / "data")
    sft = [json.loads(x) for x in (tmp_path / "data" / "sft.jsonl").read_text().splitlines()]
    pro = [json.loads(x) for x in (tmp_path / "data" / "pro.jsonl").read_text().splitlines()]
    assert {(s["prompt"], s["completion"], s["source"]) for s in sft} >= {
        ("a dog runs", "a dog that is brown and running", "rewrite"),
        ("a dog", "a brown dog", "blur"),
    }
    q1 = next(p for p in pro if p["id"] == "q1")
    assert q1["rewrites"][0] == "a dog that is brown and running" and q1["scores"] == sorted(
        q1["scores"], reverse=True
    )
    assert "a dog runs" in q1["rewrites"]  # the original query takes part in the ranking
    assert stats["queries"] == 3 and stats["sft_pairs"] == len(sft) and stats["llm_calls"] > 0
    assert stats["attempt_status"]["refused:echo"] >= 1


def test_bad_record_line_is_named(tmp_path: Any) -> None:
    out = tmp_path / "records.jsonl"
    out.write_text('{"id": "q1", "attempts": []}\nnot json\n')
    with pytest.raises(DataFormatError, match="line 2"):
        builder().run([Query("q9", text="x")], {"q9": "img-gt"}, out, progress=False)
    assert out.read_text().count("\n") == 2  # nothing appended, nothing lost


def test_retries_are_sampled_and_a_failed_blur_is_retried() -> None:
    b = builder()
    b.build_one(Query("q1", text="a dog runs"), "img-gt")
    gens = b.chat.gens  # type: ignore[attr-defined]
    assert "temperature" not in gens[0] and gens[1]["temperature"] == 0.8 and gens[1]["seed"] != gens[2]["seed"]
    b2 = builder(lambda p, n: "Query: a brown animal")  # never ranked worse: both blur attempts are made
    rec = b2.build_one(Query("q2", text="a brown dog"), "img-gt")
    assert [a["status"] for a in rec["attempts"]] == ["not_worse", "not_worse"] and rec["calls"] == 2
