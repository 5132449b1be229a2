"""ActionAwareReranker (LAMP §3.5) on the toy world with a tiny CLIP: hand-computed oracles from
``ActionAwareModel.cross_scores``, planted winners, knowledge lookup / extraction / errors, specs, pipelines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lumir.augment.knowledge import KnowledgeExtractor, q1_prompt, q2_prompt
from lumir.collections import Corpus, Rankings
from lumir.errors import DataFormatError, ModalityError
from lumir.eval import evaluate
from lumir.models.action_model import ActionAwareModel
from lumir.models.action_prompt import KnowledgeBatch, state_text
from lumir.pipeline import Pipeline, PipelineSpec
from lumir.rerank import load_reranker
from lumir.rerank.action_aware import ActionAwareReranker, MissingKnowledgeError
from lumir.retrieve import DenseRetriever
from lumir.testing.fakes import COLORS, ColorEmbedder, ScriptedChatModel
from lumir.testing.tiny import build_tiny_clip, save_tiny_clip
from lumir.testing.toy import color_image, toy_corpus, toy_t2i_task
from lumir.types import ImageRef, Item, Modality, Query

PROMPT = {"num_triplets": 2, "heads": 2, "adapter_dim": 4}
WORDS = list(COLORS)


def knowledge_of(caption: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The toy knowledge of a caption: its colour word as an attribute triplet."""
    word = next(w for w in WORDS if w in caption.split())
    return [("thing", "is", word)], [f"The thing is {word} all over."]


def write_knowledge(path: Path, captions: list[str]) -> Path:
    lines = []
    for i, cap in enumerate(captions):
        triplets, states = knowledge_of(cap)
        lines.append(
            json.dumps({"id": f"k{i}", "caption": cap, "triplets": triplets, "states": states, "valid": True})
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model() -> ActionAwareModel:
    return ActionAwareModel.from_towers(*build_tiny_clip(), prompt=PROMPT).eval()


@pytest.fixture(scope="module")
def kfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("knowledge")
    return write_knowledge(folder / "k.jsonl", [*WORDS, *(f"a {w} thing" for w in WORDS)])


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lamp")
    clip = save_tiny_clip(folder / "clip")
    return ActionAwareModel.build({"backbone": {"kind": "clip", "path": str(clip)}, "prompt": PROMPT}).save(
        folder / "model"
    )


def images() -> Corpus:
    return Corpus([it for it in toy_corpus() if it.modality is Modality.IMAGE])


def texts() -> Corpus:
    return Corpus([it for it in toy_corpus() if it.modality is Modality.TEXT])


def t2i_queries() -> list[Query]:
    return [Query(f"q-{w}", text=w) for w in WORDS]


def i2t_queries() -> list[Query]:
    return [Query(f"qi-{w}", image=ImageRef(color_image(w))) for w in WORDS]


def rotated(queries: list[Query], corpus: Corpus) -> Rankings:
    """A first stage ranking every candidate, in an order that differs per query."""
    ids = corpus.ids
    rows = [[(ids[(i + r) % len(ids)], 1.0 - 0.1 * r) for r in range(len(ids))] for i in range(len(queries))]
    return Rankings.from_hits([q.id for q in queries], rows, len(ids))


def ids_of(rankings: Rankings, qid: str) -> list[str]:
    return [h.id for h in rankings.for_query(qid)]


def hand_scores(model: ActionAwareModel, query: Query, head: list[Item]) -> np.ndarray:
    """S of the top-k by ``cross_scores`` (§3.5): t2i prompts each image with the query's knowledge, i2t prompts the
    query image with each candidate's knowledge."""
    with torch.no_grad():
        if query.text is not None:
            pix = model.images([c.image.load() for c in head])
            s = model.cross_scores(
                pix, model.knowledge([knowledge_of(query.text)]), model.caption_embeddings([query.text])
            )
            return s[0].numpy()
        pix = model.images([query.image.load()])
        kb = model.knowledge([knowledge_of(c.text) for c in head])
        return model.cross_scores(pix, kb, model.caption_embeddings([c.text for c in head]))[:, 0].numpy()


# ---- (1) re-scoring equals the hand-computed ranking --------------------------------------------------------------


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
@pytest.mark.parametrize("batch_size", [3, 64])
def test_rescoring_matches_cross_scores(model, kfile, direction: str, batch_size: int) -> None:
    queries, corpus = (t2i_queries(), images()) if direction == "t2i" else (i2t_queries(), texts())
    first = rotated(queries, corpus)
    k = 5
    rr = ActionAwareReranker(model, k=k, knowledge=kfile, batch_size=batch_size)
    out = rr.rerank(queries, first, corpus)
    moved = 0
    for q in queries:
        before = ids_of(first, q.id)
        head = [corpus[i] for i in before[:k]]
        s = hand_scores(model, q, head)
        order = sorted(range(k), key=lambda j: (-s[j], j))
        hits = out.for_query(q.id)
        assert [h.id for h in hits] == [head[j].id for j in order] + before[k:]
        np.testing.assert_allclose([h.score for h in hits[:k]], s[order], atol=1e-5)
        assert max(h.score for h in hits[k:]) < min(h.score for h in hits[:k])
        moved += [h.id for h in hits[:k]] != before[:k]
    assert moved > 0  # the oracle is not the first-stage order
    stats = out.meta["rerank"]
    assert stats["images_encoded"] == stats["prompts"] == stats["candidates"] == len(queries) * k
    assert stats["knowledge_cache_hits"] == stats["knowledge_texts"] == (len(queries) if direction == "t2i" else 8)
    assert stats["knowledge_extracted"] == stats["knowledge_empty"] == stats["knowledge_invalid"] == 0
    assert stats["ms_per_query"] > 0 and stats["seconds"] > 0 and out.meta["rerank_k"] == k
    assert out.meta["reranker"]["type"] == "action-aware"
    assert rr.last_stats.to_dict() == stats


# ---- (2) a planted winner ----------------------------------------------------------------------------------------


def plant(monkeypatch, model: ActionAwareModel, image_word: str, knowledge_word: str, text: str) -> None:
    """Make z_img(image of ``image_word`` | knowledge about ``knowledge_word``) equal z_txt(``text``): that pair scores
    exactly 1, every other pair keeps the model's own (< 1) score."""
    original = model.encode
    target_px = model.images([color_image(image_word)])["pixel_values"][0]
    triplets, states = knowledge_of(knowledge_word)
    target_state = model.text_side.texts([state_text(triplets[0], states[0])])[0]
    z_target = model.caption_embeddings([text])[0]

    def encode(images: dict[str, torch.Tensor], kb: KnowledgeBatch | None) -> torch.Tensor:
        z = original(images, kb).clone()
        assert kb is not None
        for b in range(z.shape[0]):
            same_image = torch.allclose(images["pixel_values"][b], target_px)
            if same_image and torch.allclose(kb.states[b, 0], target_state, atol=1e-6):
                z[b] = F.normalize(z_target, dim=-1)
        return z

    monkeypatch.setattr(model, "encode", encode)


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_planted_candidate_moves_to_rank_one_and_tail_is_untouched(monkeypatch, model, kfile, direction) -> None:
    if direction == "t2i":
        queries, corpus, target = [Query("q", text="purple")], images(), "img-purple"
        plant(monkeypatch, model, "purple", "purple", "purple")
    else:
        queries, corpus, target = [Query("q", image=ImageRef(color_image("purple")))], texts(), "txt-purple"
        plant(monkeypatch, model, "purple", "purple", "a purple thing")
    order = [f"{corpus.ids[0][:4]}{w}" for w in ("red", "green", "purple", "blue", "yellow", "orange", "white")]
    first = Rankings.from_hits(["q"], [[(cid, 0.9 - 0.1 * r) for r, cid in enumerate(order)]], len(order))
    out = ActionAwareReranker(model, k=4, knowledge=kfile).rerank(queries, first, corpus)
    hits = out.for_query("q")
    assert hits[0].id == target and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert sorted(h.id for h in hits[:4]) == sorted(order[:4])
    assert [h.id for h in hits[4:]] == order[4:]  # below k: first-stage order
    assert all(h.score < 1.0 - 1e-4 for h in hits[1:])


def test_planted_winner_needs_the_querys_own_knowledge(monkeypatch, model, tmp_path) -> None:
    """The prompt is the *query's* knowledge: with "purple" described as red, the planted pair never fires."""
    plant(monkeypatch, model, "purple", "purple", "purple")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"id": "w0", "caption": "purple", "triplets": [["thing", "is", "red"]],
                                 "states": ["The thing is red all over."], "valid": True}) + "\n")  # fmt: skip
    first = Rankings.from_hits(["q"], [[("img-red", 0.9), ("img-purple", 0.8), ("img-blue", 0.7)]], 3)
    out = ActionAwareReranker(model, k=3, knowledge=wrong).rerank([Query("q", text="purple")], first, images())
    assert all(h.score < 1.0 - 1e-4 for h in out.for_query("q"))


# ---- (3) knowledge: files, item meta, extraction, failures, errors -----------------------------------------------


def test_knowledge_lookup_normalises_whitespace_and_reads_item_meta(model, kfile) -> None:
    first = rotated([Query("q", text="red")], images())
    plain = ActionAwareReranker(model, k=3, knowledge=kfile).rerank([Query("q", text="red")], first, images())
    spaced = ActionAwareReranker(model, k=3, knowledge=[kfile]).rerank([Query("q", text=" red\n")], first, images())
    triplets, states = knowledge_of("red")
    meta = {"knowledge": {"triplets": [list(t) for t in triplets], "states": states, "valid": True}}
    from_meta = ActionAwareReranker(model, k=3).rerank([Query("q", text="red", meta=meta)], first, images())
    for out in (spaced, from_meta):
        assert ids_of(out, "q") == ids_of(plain, "q")
        assert out.meta["rerank"]["knowledge_cache_hits"] == 1
    np.testing.assert_allclose(from_meta.scores, plain.scores, atol=1e-6)


def scripted_llm(captions: list[str], *, states: bool = True) -> ScriptedChatModel:
    replies = {}
    for cap in captions:
        (t,), (s,) = knowledge_of(cap)
        replies[q1_prompt(cap)] = f"({t[0]}, {t[1]}, {t[2]})"
        replies[q2_prompt(cap, t)] = s if states else "Nothing."
    return ScriptedChatModel(replies)


def test_on_the_fly_extraction_equals_the_jsonl(model, kfile) -> None:
    queries = t2i_queries()[:3]
    first = rotated(queries, images())
    chat = scripted_llm([q.text for q in queries])
    rr = ActionAwareReranker(model, k=4, extractor=KnowledgeExtractor(chat, max_retries=0))
    out = rr.rerank(queries, first, images())
    ref = ActionAwareReranker(model, k=4, knowledge=kfile).rerank(queries, first, images())
    assert [ids_of(out, q.id) for q in queries] == [ids_of(ref, q.id) for q in queries]
    np.testing.assert_allclose(out.scores, ref.scores, atol=1e-6)
    stats = out.meta["rerank"]
    assert (stats["knowledge_extracted"], stats["knowledge_cache_hits"], stats["model_calls"]) == (3, 0, 2)
    again = rr.rerank(queries, first, images()).meta["rerank"]  # extracted texts are kept: no more LLM calls
    assert (again["knowledge_extracted"], again["knowledge_cache_hits"], again["model_calls"]) == (0, 3, 0)


def test_failed_extraction_uses_parsed_triplets_or_empty_knowledge(model) -> None:
    first = rotated([Query("a", text="red"), Query("b", text="blue")], images())
    chat = scripted_llm(["red"], states=False)  # "red": triplet parses, its state fails; "blue": nothing parses
    out = ActionAwareReranker(model, k=3, llm=chat, extractor=None).rerank(
        [Query("a", text="red"), Query("b", text="blue")], first, images()
    )
    stats = out.meta["rerank"]
    assert (stats["knowledge_extracted"], stats["knowledge_invalid"], stats["knowledge_empty"]) == (2, 1, 1)
    for qid, word, knowledge in (("a", "red", (knowledge_of("red")[0], [""])), ("b", "blue", ([], []))):
        head = [images()[i] for i in ids_of(first, qid)[:3]]
        with torch.no_grad():
            pix = model.images([c.image.load() for c in head])
            s = model.cross_scores(pix, model.knowledge([knowledge]), model.caption_embeddings([word]))[0].numpy()
        np.testing.assert_allclose(sorted(out.scores[out.row(qid)][:3]), sorted(s), atol=1e-5)


def test_missing_knowledge_is_a_clear_error_before_any_encoding(monkeypatch, model, kfile, tmp_path) -> None:
    monkeypatch.setattr(model, "encode", lambda *a: pytest.fail("encoded before the knowledge check"))
    other = write_knowledge(tmp_path / "other.jsonl", ["red"])
    queries = [Query("q-red", text="red"), Query("q-new", text="a green thing on a table")]
    with pytest.raises(MissingKnowledgeError, match=r"query 'q-new'.*knowledge=.*extractor="):
        ActionAwareReranker(model, k=2, knowledge=other).rerank(queries, rotated(queries, images()), images())
    qi = [Query("qi", image=ImageRef(color_image("red")))]
    with pytest.raises(MissingKnowledgeError, match=r"candidate 'txt-\w+' of query 'qi'"):
        ActionAwareReranker(model, k=2).rerank(qi, rotated(qi, texts()), texts())


def test_wrong_modalities_and_bad_files_fail_clearly(model, kfile, tmp_path) -> None:
    q = [Query("q", text="red")]
    with pytest.raises(ModalityError, match=r"query 'q' is text and its candidate 'txt-\w+' is text"):
        ActionAwareReranker(model, k=2, knowledge=kfile).rerank(q, rotated(q, texts()), texts())
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "caption": "red", "triplets": [["a", "b", "c"]]}\n'
        '{"id": "b", "caption": "x", "triplets": [["a"]]}\n'
    )
    with pytest.raises(DataFormatError, match="bad.jsonl, line 2"):
        ActionAwareReranker(model, knowledge=bad)
    with pytest.raises(FileNotFoundError, match="lumir augment knowledge"):
        ActionAwareReranker(model, knowledge=tmp_path / "absent.jsonl")
    with pytest.raises(ValueError, match="not both"):
        ActionAwareReranker(model, llm=ScriptedChatModel(), extractor="knowledge:scripted")


# ---- (4) specs ---------------------------------------------------------------------------------------------------


def test_spec_string_builds_and_round_trips(saved, kfile, tmp_path) -> None:
    rr = load_reranker(f"action-aware:model={saved},knowledge={kfile},k=3")
    assert isinstance(rr, ActionAwareReranker) and rr.k == 3 and rr.knowledge_files == [str(kfile)]
    again = load_reranker(rr.spec())
    assert again.spec() == rr.spec() == json.loads(json.dumps(rr.spec()))
    assert isinstance(load_reranker(f"lamp:{saved}"), ActionAwareReranker)
    assert load_reranker(f"action:model={saved}").k == 20  # the paper's top-20
    queries = t2i_queries()[:3]
    first = rotated(queries, images())
    from_object = ActionAwareReranker(ActionAwareModel.load(saved), k=3, knowledge=kfile).rerank(
        queries, first, images()
    )
    np.testing.assert_allclose(again.rerank(queries, first, images()).scores, from_object.scores, atol=1e-6)
    assert from_object.meta["reranker"]["model"].startswith("<in-memory")
    with_llm = load_reranker({"type": "action-aware", "model": str(saved), "llm": {"type": "scripted"},
                              "llm_cache": str(tmp_path / "c.sqlite")})  # fmt: skip
    assert with_llm.spec()["extractor"]["type"] == "knowledge"
    assert with_llm.spec()["extractor"]["llm"]["type"] == "cached"
    assert load_reranker(with_llm.spec()).spec() == with_llm.spec()


# ---- (5) inside a pipeline and an evaluation ----------------------------------------------------------------------


def test_runs_in_a_pipeline_like_a_reranker_called_by_hand(model, kfile) -> None:
    task = toy_t2i_task()
    retriever = DenseRetriever.from_corpus(task.corpus, ColorEmbedder())
    rr = ActionAwareReranker(model, k=4, knowledge=kfile)
    out = Pipeline(retriever, reranker=rr, k=8).run(task.queries)
    by_hand = rr.rerank(task.queries, out.stages["first_stage"], task.corpus)
    for q in task.queries:
        got = ids_of(out.stages["reranked"], q.id)
        assert got == ids_of(by_hand, q.id)
        assert got[4:] == ids_of(out.stages["first_stage"], q.id)[4:]
    assert "reranked" in out.seconds


def test_evaluate_reports_costs_per_stage(saved, kfile) -> None:
    def spec(alpha: float) -> PipelineSpec:
        reranker: dict[str, Any] = {"type": "action-aware", "model": str(saved), "knowledge": str(kfile), "k": 4}
        return PipelineSpec(embedder="color", reranker={**reranker, "alpha": alpha})

    result = evaluate(spec(0.0), "toy", k=8)
    body = result.task("toy/t2i")["stages"]["reranked"]
    assert body["reranker"]["type"] == "action-aware"
    assert body["rerank"]["images_encoded"] == 8 * 4 and body["rerank"]["knowledge_cache_hits"] == 8
    assert body["ms_per_query"] > 0
    kept = evaluate(spec(1.0), "toy", k=8)  # α = 1: the first stage's (perfect) order survives re-scoring
    assert kept.score("toy/t2i", "R@1", "reranked") == kept.score("toy/t2i", "R@1", "first_stage") == 1.0
