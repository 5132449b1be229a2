"""Answer tokens (True/False, YES/NO) resolve to the right ids for SentencePiece (Llama-style) tokenizers too."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lumir.collections import Corpus, Rankings
from lumir.models.chat.base import first_token_ids, user_message
from lumir.models.chat.hf import TransformersChatModel
from lumir.models.chat.openai import OpenAIChatModel
from lumir.rerank import TrueFalseReranker, YesNoReranker
from lumir.testing.tiny import build_tiny_lm, build_tiny_sp_lm, tiny_sp_tokenizer
from lumir.types import Item, Query

# ---------------------------------------------------------------------------------------------- pure resolution

VOCAB = ["▁", "▁True", "True", "▁False", "False", "YES", "NO", "▁Yes", "Yes", "No", "▁Rel", "evant", "Ġok", "ok"]
IDS = {t: i for i, t in enumerate(VOCAB)}
ENCODINGS = {  # what a SentencePiece tokenizer with a dummy prefix makes of each candidate
    "True": ["▁True"],
    "False": ["▁False"],
    "YES": ["▁", "YES"],
    "NO": ["▁", "NO"],
    "Yes": ["▁Yes"],
    "No": ["▁", "No"],
    "Relevant": ["▁Rel", "evant"],
}


def encode(text: str) -> list[int]:
    return [IDS[t] for t in ENCODINGS[text]]


def piece(i: int) -> str:
    return VOCAB[i]


def lookup(text: str) -> int | None:
    return IDS.get(text)


def test_marked_single_tokens_are_used_as_they_are() -> None:
    assert first_token_ids(encode, ["False", "True"], model="m", piece=piece, lookup=lookup) == [
        IDS["▁False"],
        IDS["▁True"],
    ]


def test_a_lone_leading_marker_is_skipped() -> None:
    with pytest.raises(ValueError, match="same token"):  # without piece(): "▁" for both, as before
        first_token_ids(encode, ["NO", "YES"], model="m")
    assert first_token_ids(encode, ["NO", "YES"], model="m", piece=piece) == [IDS["NO"], IDS["YES"]]


def test_mixed_forms_become_one_form() -> None:
    # "Yes" -> "▁Yes" but "No" -> "▁", "No": without help, No would be scored by the lone marker
    assert first_token_ids(encode, ["No", "Yes"], model="m") == [IDS["▁"], IDS["▁Yes"]]
    # skipping the marker alone gives a mix (bare "No", marked "▁Yes") ...
    assert first_token_ids(encode, ["No", "Yes"], model="m", piece=piece) == [IDS["No"], IDS["▁Yes"]]
    # ... which the vocabulary resolves: "▁No" does not exist, bare "No" and "Yes" both do
    assert first_token_ids(encode, ["No", "Yes"], model="m", piece=piece, lookup=lookup) == [IDS["No"], IDS["Yes"]]
    # a marked form for every candidate wins over the bare one
    with_marked_no = {**IDS, "▁No": 99}
    assert first_token_ids(encode, ["No", "Yes"], model="m", piece=piece, lookup=with_marked_no.get) == [
        99,
        IDS["▁Yes"],
    ]
    # no common form: left as resolved
    assert first_token_ids(encode, ["No", "Relevant"], model="m", piece=piece, lookup=lookup) == [
        IDS["No"],
        IDS["▁Rel"],
    ]


def test_bpe_style_first_tokens_are_unchanged() -> None:
    bpe = {"True": [2], "False": [4], "Yes": [8], "No": [9], "ok": [13], " ok": [12]}
    ids = first_token_ids(lambda s: bpe[s], ["True", "False", "Yes", "No"], model="m", piece=piece, lookup=lookup)
    assert ids == [2, 4, 8, 9]
    assert first_token_ids(lambda s: bpe[s], [" ok"], model="m", piece=piece, lookup=lookup) == [12]
    with pytest.raises(ValueError, match="encodes to no token"):
        first_token_ids(lambda s: [], ["True"], model="m", piece=piece)


def test_openai_matching_ignores_a_lone_marker() -> None:
    pytest.importorskip("httpx")
    model = OpenAIChatModel("http://127.0.0.1:9", "m")
    top = [("▁", -0.05), ("▁True", -3.0), ("False", -4.0), (" True", -3.5)]
    assert model._score(top, ["False", "True"]) == [-4.0, -3.0]


# ------------------------------------------------------------------------- a tiny Llama with a SentencePiece vocab


@pytest.fixture(scope="module")
def sp_chat() -> TransformersChatModel:
    return TransformersChatModel(*build_tiny_sp_lm(seed=0), name="tiny-sp", batch_size=2)


def test_tiny_sentencepiece_tokenizer_is_llama_style() -> None:
    tok = tiny_sp_tokenizer()
    pieces = {w: tok.convert_ids_to_tokens(tok.encode(w, add_special_tokens=False)) for w in ENCODINGS}
    assert pieces == {**ENCODINGS, "Relevant": ["▁", "R", "e", "l", "e", "v", "an", "t"]}  # spelled out
    assert tok.convert_ids_to_tokens(tok.encode("a red dog", add_special_tokens=False)) == ["▁a", "▁red", "▁dog"]
    assert tok.decode(tok.encode("Is this red? True", add_special_tokens=False)) == "Is this red? True"


def _direct(chat: TransformersChatModel, conv: list, tokens: list[str]) -> torch.Tensor:
    """Log-softmax at the answer position, read straight from the model, at the given vocabulary entries."""
    enc = chat.tokenizer(chat.render(conv), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        logprobs = chat.model(**enc).logits[0, -1].log_softmax(-1)
    return logprobs[chat.tokenizer.convert_tokens_to_ids(tokens)]


@pytest.mark.parametrize(
    ("candidates", "vocab_entries"),
    [
        (["False", "True"], ["▁False", "▁True"]),  # single marked tokens, as the tokenizer encodes them
        (["NO", "YES"], ["NO", "YES"]),  # "▁", "YES": the lone marker is skipped (was: ValueError)
        (["No", "Yes"], ["No", "Yes"]),  # "▁", "No" vs "▁Yes": one form for both (was: No scored by "▁")
    ],
)
def test_scores_are_read_at_the_right_ids(
    sp_chat: TransformersChatModel, candidates: list[str], vocab_entries: list[str]
) -> None:
    convs = [user_message("Is this red?"), user_message("Does the caption match the image?")]
    got = sp_chat.token_logprobs(convs, candidates)
    for row, conv in zip(got, convs, strict=True):
        torch.testing.assert_close(row, _direct(sp_chat, conv, vocab_entries), atol=1e-5, rtol=0)
    lone = _direct(sp_chat, convs[0], ["▁", "▁"])
    assert not torch.allclose(got[0], lone)  # not the shared marker's score


def test_sentencepiece_model_reranks_with_true_false_and_yes_no(sp_chat: TransformersChatModel) -> None:
    corpus = Corpus([Item("d1", text="a red dog"), Item("d2", text="a blue cat")])
    query = Query("q", text="red dog")
    first = Rankings.from_hits(["q"], [[("d1", 0.9), ("d2", 0.8)]], 2)
    for reranker, (neg, pos) in (
        (TrueFalseReranker(sp_chat, k=2), ("▁False", "▁True")),
        (YesNoReranker(sp_chat, k=2, fusion=None), ("NO", "YES")),
    ):
        out = reranker.rerank([query], first, corpus)
        expected = {}
        for cid in ("d1", "d2"):
            conv = reranker.conversation(query, corpus[cid])
            lp = _direct(sp_chat, conv, [neg, pos]).double()
            expected[cid] = float(torch.softmax(lp, -1)[1])
        hits = out.for_query("q")
        assert [h.id for h in hits] == sorted(expected, key=lambda c: -expected[c]), type(reranker).__name__
        if isinstance(reranker, TrueFalseReranker):  # alpha = 0: the score is P(True) itself
            assert np.allclose([h.score for h in hits], [expected[h.id] for h in hits], atol=1e-5)


def test_bpe_style_tiny_lm_is_unchanged() -> None:
    lm = TransformersChatModel(*build_tiny_lm(seed=0), name="tiny-lm")
    conv = user_message("Is this red?")
    got = lm.token_logprobs([conv], ["True", "False", "YES", "NO"])[0]
    torch.testing.assert_close(got, _direct(lm, conv, ["True", "False", "YES", "NO"]), atol=1e-5, rtol=0)
