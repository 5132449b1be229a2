"""Rerankers over scripted chat models with known answers: ordering, fusion, windows, failures, caching."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumir.collections import Corpus, Rankings
from lumir.errors import ModalityError
from lumir.models.chat.cache import CachedChatModel
from lumir.pipeline import Pipeline
from lumir.rerank import FusionConfig, ListwiseReranker, TrueFalseReranker, YesNoReranker, load_reranker
from lumir.rerank.listwise import window_starts
from lumir.retrieve import DenseRetriever
from lumir.testing.fakes import COLORS, HashEmbedder, ScriptedChatModel
from lumir.testing.toy import toy_corpus, toy_t2i_task
from lumir.types import Item, Query

WORDS = list(COLORS)


def text_corpus() -> Corpus:
    return Corpus([Item(f"d-{w}", text=f"a note about {w} things") for w in WORDS])


def queries() -> list[Query]:
    return [Query(f"q-{w}", text=w) for w in WORDS]


def reversed_rankings(qs: list[Query], corpus: Corpus) -> Rankings:
    """A first stage that ranks the right document last."""
    rows = []
    for q in qs:
        others = [c.id for c in corpus if c.id != f"d-{q.text}"]
        ids = [*others, f"d-{q.text}"]
        rows.append([(cid, 1.0 - 0.05 * r) for r, cid in enumerate(ids)])
    return Rankings.from_hits([q.id for q in qs], rows, len(corpus))


def pointwise_judge(positive: str, negative: str):
    """P(positive) high when the candidate line mentions the query word (Query: <w> ... Candidate/Document: ...)."""

    def score(text: str, tokens) -> list[float]:
        query = re.search(r"(?:Query|Claim|Caption): ?(\w+)", text)
        cand = text.split("\n", 1)[1] if "\n" in text else ""
        hit = query is not None and query.group(1) in cand
        return [0.0 if (tok == positive) == hit else -6.0 for tok in tokens]

    return score


def listwise_judge(text: str, tokens) -> list[float]:
    word = re.search(r"Query: (\w+)", text).group(1)
    lines = re.findall(r"\((\d)\) ([^\n]*)", text)
    right = next((n for n, line in lines if word in line), None)
    return [0.0 if tok == right else -8.0 for tok in tokens]


def test_true_false_recovers_the_right_document_from_a_reversed_first_stage() -> None:
    qs, corpus = queries(), text_corpus()
    chat = ScriptedChatModel(score_fn=pointwise_judge("True", "False"))
    out = TrueFalseReranker(chat, k=8).rerank(qs, reversed_rankings(qs, corpus), corpus)
    assert all(out.for_query(q.id)[0].id == f"d-{q.text}" for q in qs)
    assert out.meta["rerank"]["candidates"] == len(qs) * len(corpus)
    assert "Query: red\nDocument: a note about red things\nDoes the document match the query? True or False" in (
        chat.prompts
    )


def test_rerank_k_leaves_the_tail_in_first_stage_order_below_the_head() -> None:
    qs, corpus = queries(), text_corpus()
    first = reversed_rankings(qs, corpus)
    out = YesNoReranker(ScriptedChatModel(score_fn=pointwise_judge("YES", "NO")), k=3).rerank(qs, first, corpus)
    for q in qs:
        before = [h.id for h in first.for_query(q.id)]
        after = out.for_query(q.id)
        assert sorted(h.id for h in after[:3]) == sorted(before[:3])
        assert [h.id for h in after[3:]] == before[3:]
        assert after[2].score > after[3].score


def test_alpha_one_keeps_the_first_stage_and_per_task_overrides_apply() -> None:
    corpus = text_corpus()
    qs = [Query("q-red", text="red", task="keep"), Query("q-blue", text="blue", task="trust")]
    first = reversed_rankings(qs, corpus)
    fusion = FusionConfig(alpha=1.0, per_task={"trust": 0.0})
    chat = ScriptedChatModel(score_fn=pointwise_judge("True", "False"))
    out = TrueFalseReranker(chat, k=8, fusion=fusion).rerank(qs, first, corpus)
    assert [h.id for h in out.for_query("q-red")] == [h.id for h in first.for_query("q-red")]
    assert out.for_query("q-blue")[0].id == "d-blue"


def test_fused_scores_are_the_paper_formula() -> None:
    corpus = Corpus([Item("a", text="red"), Item("b", text="blue")])
    first = Rankings.from_hits(["q"], [[("a", 0.9), ("b", 0.7)]], 2)
    chat = ScriptedChatModel(score_fn=lambda text, toks: [np.log(0.2), np.log(0.8)] if "blue" in text else [0.0, -50])
    out = YesNoReranker(chat, k=2, prompt="<qtxt> <ctxt>").rerank([Query("q", text="x")], first, corpus)
    # P(YES | b) = 0.8, P(YES | a) ~ 0  ->  S_b = 0.5*0.7 + 0.5*0.8 = 0.75, S_a = 0.5*0.9 + ~0 = 0.45
    assert [h.id for h in out.for_query("q")] == ["b", "a"]
    assert out.for_query("q")[0].score == pytest.approx(0.75, abs=1e-5)
    assert out.for_query("q")[1].score == pytest.approx(0.45, abs=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    n_cands=st.integers(1, 12),
    k=st.integers(1, 14),
    window=st.integers(2, 6),
    seed=st.integers(0, 10_000),
    listwise=st.booleans(),
)
def test_rerankers_only_reorder_their_input(n_cands: int, k: int, window: int, seed: int, listwise: bool) -> None:
    rng = np.random.default_rng(seed)
    corpus = Corpus([Item(f"c{i}", text=f"doc {i}") for i in range(15)])
    qids = ["q0", "q1"]
    rows = []
    for _ in qids:
        ids = rng.choice(15, size=n_cands, replace=False)
        rows.append([(f"c{i}", float(s)) for i, s in zip(ids, sorted(rng.random(n_cands), reverse=True), strict=True)])
    first = Rankings.from_hits(qids, rows, 14)
    chat = ScriptedChatModel(score_fn=lambda text, toks: rng.normal(size=len(toks)).tolist())
    qs = [Query(q, text="query") for q in qids]
    if listwise:
        reranker = ListwiseReranker(chat, window=window, k=k)
    else:
        reranker = YesNoReranker(chat, k=k)
    out = reranker.rerank(qs, first, corpus)
    for q in qids:
        before, after = first.for_query(q), out.for_query(q)
        assert sorted(h.id for h in after) == sorted(h.id for h in before)
        scores = [h.score for h in after]
        assert scores == sorted(scores, reverse=True)


def test_window_starts_cover_every_candidate() -> None:
    for k in range(1, 30):
        for window in range(2, 10):
            for stride in range(1, window + 1):
                covered = set()
                for s in window_starts(k, window, stride):
                    covered.update(range(s, min(k, s + window)))
                assert covered == set(range(k))


def test_listwise_sliding_windows_find_the_right_candidate() -> None:
    qs, corpus = queries(), text_corpus()
    chat = ScriptedChatModel(score_fn=listwise_judge)
    out = ListwiseReranker(chat, window=4, k=8, fusion=FusionConfig(alpha=0.0)).rerank(
        qs, reversed_rankings(qs, corpus), corpus
    )
    assert all(out.for_query(q.id)[0].id == f"d-{q.text}" for q in qs)
    assert out.meta["rerank"]["windows"] == len(qs) * len(window_starts(8, 4, 2))
    assert out.meta["rerank"]["parse_failures"] == 0


def test_listwise_generate_mode_parses_answers_and_counts_failures() -> None:
    corpus = text_corpus()
    qs = [Query("good", text="red"), Query("bad", text="blue")]
    first = reversed_rankings(qs, corpus)
    convs_seen: list[str] = []

    class Answering(ScriptedChatModel):
        def generate(self, conversations, **gen):  # "Ans: (N)" for the red query, nonsense for the other
            texts = self._texts(conversations)
            convs_seen.extend(texts)
            out = []
            for t in texts:
                lines = re.findall(r"\((\d)\) ([^\n]*)", t)
                pos = next((n for n, line in lines if "red" in line), "1")
                out.append(f"Ans: ({pos})" if "Query: red" in t else "I cannot tell.")
            return out

    reranker = ListwiseReranker(Answering(), window=5, k=5, mode="generate", fusion=FusionConfig(alpha=0.0))
    top5 = first.top(5)
    out = reranker.rerank(qs, top5, corpus)
    assert [h.id for h in out.for_query("bad")] == [h.id for h in top5.for_query("bad")]
    assert out.meta["rerank"]["parse_failures"] == 1 and out.meta["rerank"]["fallback_queries"] == 1
    # the right doc for "red" is outside its top-5 here, so the parsed pick is some top-5 doc moved to rank 1
    assert sorted(h.id for h in out.for_query("good")) == sorted(h.id for h in top5.for_query("good"))


def test_over_long_prompts_are_cut_and_reported_never_a_crash() -> None:
    long = " ".join(["words"] * 300)
    corpus = Corpus([Item("a", text="red " + long), Item("b", text="blue " + long)])
    first = Rankings.from_hits(["q"], [[("a", 0.9), ("b", 0.8)]], 2)
    chat = ScriptedChatModel(score_fn=lambda text, toks: [0.0, -1.0], context_length=120)
    out = YesNoReranker(chat, k=2, max_words=400).rerank([Query("q", text="blue")], first, corpus)
    assert sorted(h.id for h in out.for_query("q")) == ["a", "b"]
    assert out.meta["rerank"]["shortened_on_overflow"] >= 2
    lw = ListwiseReranker(chat, window=2, k=2, max_words=400).rerank([Query("q", text="blue")], first, corpus)
    assert lw.meta["rerank"]["shortened_on_overflow"] >= 1 and lw.meta["rerank"]["fallback_queries"] == 0


def test_text_only_models_refuse_images_unless_caption_proxy_mode() -> None:
    task = toy_t2i_task()
    first = DenseRetriever.from_corpus(task.corpus, HashEmbedder()).retrieve(task.queries, 8)
    text_only = ScriptedChatModel(score_fn=pointwise_judge("True", "False"), supports_images=False)
    with pytest.raises(ModalityError, match="caption"):
        TrueFalseReranker(text_only).rerank(task.queries, first, task.corpus)
    assert text_only.calls == 0
    out = TrueFalseReranker(text_only, image_mode="caption", prompt="Query: <qtxt>\n<cimg>").rerank(
        task.queries, first, task.corpus
    )
    assert all(out.for_query(q.id)[0].id == f"img-{q.text}" for q in task.queries)
    assert any("Image description: red" in p for p in text_only.prompts)
    with pytest.raises(ModalityError, match="caption"):
        bare = Corpus([Item("img", image=toy_corpus()["img-red"].image)])
        TrueFalseReranker(text_only, image_mode="caption").rerank(
            [Query("q", text="red")], Rankings.from_hits(["q"], [[("img", 1.0)]], 1), bare
        )


def test_table13_prompt_reaches_a_vision_model_with_the_image_first() -> None:
    task = toy_t2i_task()
    qs = [Query(q.id, text=q.text, task="mscoco_task0") for q in task.queries]
    first = DenseRetriever.from_corpus(task.corpus, HashEmbedder()).retrieve(qs, 2)
    seen = []

    class Recorder(ScriptedChatModel):
        def token_logprobs(self, conversations, tokens):
            seen.extend(conversations)
            return super().token_logprobs(conversations, tokens)

    TrueFalseReranker(Recorder()).rerank(qs, first, task.corpus)
    content = seen[0][0]["content"]
    assert content[0]["type"] == "image"
    assert content[1]["text"].startswith("\nCaption:")
    assert content[1]["text"].endswith("Does the above daily-life image match the caption? True or False")


def test_pipeline_and_cache_second_run_makes_no_model_calls(tmp_path: Path) -> None:
    qs, corpus = queries(), text_corpus()
    scripted = ScriptedChatModel(score_fn=pointwise_judge("True", "False"))
    cached = CachedChatModel(scripted, tmp_path / "llm.sqlite")
    retriever = DenseRetriever.from_corpus(corpus, HashEmbedder())
    pipe = Pipeline(retriever, reranker=TrueFalseReranker(cached, k=8), k=8)
    first = pipe.run(qs)
    calls = scripted.calls
    assert calls > 0 and set(first.stages) == {"first_stage", "reranked"}
    assert first.final.meta["rerank"]["model_calls"] == calls
    again = CachedChatModel(scripted, tmp_path / "llm.sqlite")  # a new process would open the same file
    second = Pipeline(retriever, reranker=TrueFalseReranker(again, k=8), k=8).run(qs)
    assert scripted.calls == calls and again.misses == 0 and again.hits == len(qs) * 8
    assert second.final.meta["rerank"]["model_calls"] == 0  # honest: a fully cached rerun calls no model
    np.testing.assert_array_equal(first.final.ids, second.final.ids)


def test_load_reranker_names() -> None:
    chat = ScriptedChatModel()
    assert isinstance(load_reranker("lamra", chat), YesNoReranker)
    assert isinstance(load_reranker("lamra-listwise", chat), ListwiseReranker)
    with pytest.raises(KeyError, match="known"):
        load_reranker("nope", chat)


def test_rerankers_own_their_budget_and_fusion_defaults() -> None:
    chat = ScriptedChatModel()
    # a config that sets only the normalisation keeps each reranker's paper default for alpha
    tf = TrueFalseReranker(chat, fusion=FusionConfig(normalize="minmax"))
    assert tf.fusion.alpha == 0.0 and tf.fusion.normalize == "minmax" and tf.k == 10
    assert YesNoReranker(chat, normalize="minmax").fusion.alpha == 0.5
    assert ListwiseReranker(chat).k == 5 and ListwiseReranker(chat, k=7, alpha=0.2).fusion.alpha == 0.2
    with pytest.raises(ValueError, match="not both"):
        YesNoReranker(chat, alpha=0.3, fusion=FusionConfig(alpha=0.1))
    with pytest.raises(ValueError, match="budget k must be >= 1"):
        YesNoReranker(chat, k=0)


def test_reranker_specs_rebuild_the_same_reranker() -> None:
    from lumir.registry import build

    reranker = load_reranker("listwise:window=3,k=6,alpha=0.25,normalize=minmax", {"type": "scripted"})
    spec = reranker.spec()
    assert spec["llm"]["type"] == "scripted" and spec["k"] == 6 and spec["window"] == 3 and spec["alpha"] == 0.25
    assert build("reranker", spec).spec() == spec


def test_rank_scores_a_plain_candidate_list_like_a_cross_encoder() -> None:
    judge = pointwise_judge("YES", "NO")
    ranked = YesNoReranker(ScriptedChatModel(score_fn=judge)).rank(
        "blue", ["a red thing", "a blue thing", "a green thing"], return_documents=True, top_k=2
    )
    assert ranked[0]["corpus_id"] == 1 and len(ranked) == 2
    assert ranked[0]["text"] == "a blue thing" and ranked[0]["score"] > ranked[1]["score"]
    assert YesNoReranker(ScriptedChatModel()).rank("x", []) == []


def test_a_fully_cached_listwise_rerun_reports_no_model_calls(tmp_path: Path) -> None:
    qs, corpus = queries(), text_corpus()
    first = DenseRetriever.from_corpus(corpus, HashEmbedder()).retrieve(qs, k=8)
    scripted = ScriptedChatModel(score_fn=listwise_judge)
    cold = ListwiseReranker(CachedChatModel(scripted, tmp_path / "llm.sqlite"), window=4, k=8).rerank(
        qs, first, corpus
    )
    calls = scripted.calls
    assert calls > 0 and cold.meta["rerank"]["model_calls"] == calls
    warm_chat = CachedChatModel(scripted, tmp_path / "llm.sqlite")
    warm = ListwiseReranker(warm_chat, window=4, k=8).rerank(qs, first, corpus)
    assert scripted.calls == calls and warm_chat.stats.calls == 0 and warm_chat.hits > 0
    assert warm.meta["rerank"]["model_calls"] == 0 and warm.meta["rerank"]["prompts"] == cold.meta["rerank"]["prompts"]
    np.testing.assert_array_equal(cold.ids, warm.ids)
