"""Hard-negative mining on a hand-built pool whose type 1 / type 2 sets are known exactly."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from lumir.collections import Corpus, Rankings
from lumir.retrieve import DenseRetriever
from lumir.testing.fakes import HashEmbedder
from lumir.train.mining import (
    MINING_FORMAT,
    MiningConfig,
    candidate_sets,
    compute_rankings,
    hard_negative_ids,
    mine_hard_negatives,
    read_mined,
)
from lumir.types import Item, Modality, Query, Role

# One text->image query "q": rank 4 holds its positive photo P. Ranks 1..10, scores falling by 0.05.
#   rank:      1     2     3     4    5     6     7     8     9     10
ORDER = ["t1", "i1", "t2", "P", "t3", "i2", "i3", "i4", "t4", "i5"]
MODALITY = {c: "image" if c[0] in "iP" else "text" for c in ORDER}
CONFIG = MiningConfig(depth=10, k_prime=7)  # type 2 = ranks 8..10
TYPE1 = {"t1", "t2"}  # above P (rank 4) and text
TYPE2 = {"i4", "i5"}  # below rank 7 and image (t4 at rank 9 is text)


def _rankings(query_ids: Sequence[str] = ("q",), order: Sequence[str] = ORDER) -> Rankings:
    row = [(c, 1.0 - 0.05 * i) for i, c in enumerate(order)]
    return Rankings.from_hits(list(query_ids), [row] * len(query_ids), len(order))


def _ids(hits: Sequence[Any]) -> set[str]:
    return {h.id for h in hits}


def test_type1_and_type2_sets_are_exact() -> None:
    hits = _rankings().for_query("q")
    sets = candidate_sets(hits, {"P"}, MODALITY, "image", CONFIG)
    assert _ids(sets["type1"]) == TYPE1 and _ids(sets["type2"]) == TYPE2


def test_positive_not_ranked_makes_every_wrong_modality_candidate_type1() -> None:
    hits = _rankings().for_query("q")
    sets = candidate_sets(hits, {"absent"}, MODALITY, Modality.IMAGE, CONFIG)
    assert _ids(sets["type1"]) == {"t1", "t2", "t3", "t4"}
    assert _ids(sets["type2"]) == {"i4", "i5"}  # P (rank 4) is just a candidate here, above k'=7


def test_desired_text_swaps_the_roles() -> None:
    hits = _rankings().for_query("q")
    sets = candidate_sets(hits, {"t3"}, MODALITY, "text", CONFIG)  # positive at rank 5, text wanted
    assert _ids(sets["type1"]) == {"i1", "P"} and _ids(sets["type2"]) == {"t4"}


def test_false_negative_guard_positives_excluded_and_margin() -> None:
    hits = _rankings().for_query("q")
    several = candidate_sets(hits, {"P", "t2", "i5"}, MODALITY, "image", CONFIG)  # best positive: t2 at rank 3
    assert _ids(several["type1"]) == {"t1"} and _ids(several["type2"]) == {"i4"}  # positives never negatives
    excluded = candidate_sets(hits, {"P"}, MODALITY, "image", CONFIG, excluded={"t2"})
    assert _ids(excluded["type1"]) == {"t1"}
    # NV-Retriever TopK-PercPos: P scores 0.85, margin 1.1 -> cap 0.935 drops t1 (1.0) and i1 (0.95)
    guarded = candidate_sets(hits, {"P"}, MODALITY, "image", MiningConfig(depth=10, k_prime=7, margin=1.1),
                             positive_score=0.85)  # fmt: skip
    assert _ids(guarded["type1"]) == {"t2"}
    with pytest.raises(ValueError, match="margin needs the positive's score"):
        candidate_sets(hits, {"P"}, MODALITY, "image", MiningConfig(depth=10, k_prime=7, margin=1.1))


def test_margin_uses_the_ranked_positive_score() -> None:
    [record] = mine_hard_negatives(_rankings(), {"q": {"P": 1}}, MODALITY, "image",
                                   MiningConfig(depth=10, k_prime=7, n=10, margin=1.1))  # fmt: skip
    assert record["positive_score"] == pytest.approx(0.85)
    assert record["candidates"] == {"type1": 1, "type2": 2}
    assert {n["id"] for n in record["negatives"]} == {"t2", "i4", "i5"}


def test_sampling_draws_half_and_half_and_falls_back() -> None:
    qids = [f"q{i}" for i in range(400)]
    qrels = {q: {"P": 1} for q in qids}
    records = mine_hard_negatives(_rankings(qids), qrels, MODALITY, "image", CONFIG)
    types = Counter(r["negatives"][0]["type"] for r in records)
    assert 160 < types["type1"] < 240 and types["type1"] + types["type2"] == 400
    for r in records:
        [neg] = r["negatives"]
        assert neg["id"] in (TYPE1 if neg["type"] == "type1" else TYPE2)
        assert neg["rank"] == ORDER.index(neg["id"]) + 1 and neg["modality"] == MODALITY[neg["id"]]
    [all4] = mine_hard_negatives(
        _rankings(), {"q": {"P": 1}}, MODALITY, "image", MiningConfig(depth=10, k_prime=7, n=9)
    )
    assert {n["id"] for n in all4["negatives"]} == TYPE1 | TYPE2  # both sets used up, no more, no repeats
    always1 = MiningConfig(depth=10, k_prime=7, p_type1=1.0)
    only2 = mine_hard_negatives(
        _rankings(qids[:50]), qrels, MODALITY, "image", always1, exclude=dict.fromkeys(qids, TYPE1)
    )
    assert all(r["negatives"][0]["type"] == "type2" for r in only2)  # type 1 empty -> type 2
    again = mine_hard_negatives(_rankings(qids), qrels, MODALITY, "image", CONFIG)
    assert again == records  # seeded per query id
    other = mine_hard_negatives(_rankings(qids), qrels, MODALITY, "image", MiningConfig(depth=10, k_prime=7, seed=1))
    assert other != records


def test_window_mode() -> None:
    config = MiningConfig(mode="window", window=(3, 6), n=5)
    [record] = mine_hard_negatives(_rankings(), {"q": {"P": 1}}, MODALITY, None, config)
    assert {n["id"] for n in record["negatives"]} == {"t2", "t3"} and {n["type"] for n in record["negatives"]} == {
        "window"
    }
    with pytest.raises(ValueError, match="needs 9"):
        mine_hard_negatives(_rankings().top(5), {}, MODALITY, None, MiningConfig(mode="window", window=(3, 10)))


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="k_prime"):
        MiningConfig(depth=10, k_prime=10)
    with pytest.raises(ValueError, match="mode"):
        MiningConfig(mode="random")
    with pytest.raises(ValueError, match="desired candidate modality"):
        mine_hard_negatives(_rankings(), {"q": {"P": 1}}, MODALITY, None, CONFIG)


def test_resume_skips_done_queries_and_repairs_a_truncated_line(tmp_path: Path) -> None:
    qids = [f"q{i}" for i in range(6)]
    qrels = {q: {"P": 1} for q in qids}
    out = tmp_path / "neg.jsonl"
    fresh = mine_hard_negatives(_rankings(qids), qrels, MODALITY, "image", CONFIG)
    first = mine_hard_negatives(_rankings(qids[:3]), qrels, MODALITY, "image", CONFIG, output=out)
    assert first == fresh[:3]
    with out.open("a") as fh:  # a crash in the middle of the 4th record
        fh.write(json.dumps(fresh[3])[:25])
    header, body = read_mined(out)
    assert header is not None and header["format"] == MINING_FORMAT and len(body) == 3
    done = mine_hard_negatives(_rankings(qids), qrels, MODALITY, "image", CONFIG, output=out)
    assert done == fresh
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + 6 and [json.loads(ln)["query_id"] for ln in lines[1:]] == qids
    # nothing left to do: the file is unchanged
    before = out.read_bytes()
    assert mine_hard_negatives(_rankings(qids), qrels, MODALITY, "image", CONFIG, output=out) == fresh
    assert out.read_bytes() == before
    assert hard_negative_ids(fresh)["q0"] == [fresh[0]["negatives"][0]["id"]]
    with pytest.raises(ValueError, match="mined with config"):
        mine_hard_negatives(_rankings(qids), qrels, MODALITY, "image", MiningConfig(depth=10, k_prime=6), output=out)


def test_a_malformed_middle_line_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "neg.jsonl"
    mine_hard_negatives(_rankings(["a", "b"]), {}, MODALITY, "image", CONFIG, output=out)
    lines = out.read_text().splitlines()
    out.write_text("\n".join([lines[0], "{oops", lines[2]]) + "\n")
    from lumir.errors import DataFormatError

    with pytest.raises(DataFormatError, match="line 2"):
        read_mined(out)


class _TableEmbedder:
    modalities = frozenset(Modality)
    dim = 8

    def __init__(self) -> None:
        self.inner = HashEmbedder(8)
        self.calls = Counter[str]()

    def embed(self, items: Sequence[Item], *, role: Role, batch_size: int = 32) -> torch.Tensor:
        self.calls[Role(role).value] += len(items)
        return self.inner.embed(items, role=role)

    def spec(self) -> dict[str, Any]:
        return {"type": "table"}


def test_compute_rankings_in_chunks_with_exclusion_and_positive_scores() -> None:
    corpus = Corpus([Item(f"c{i}", text=f"text {i % 7}") for i in range(40)])
    queries = [Query(f"c{i}", text=f"text {i % 7}") for i in range(0, 40, 3)]
    exclude = {q.id: frozenset({q.id}) for q in queries}
    qrels = {q.id: {"c39": 1} for q in queries}
    embedder = _TableEmbedder()
    whole, _ = compute_rankings(embedder, queries, corpus, k=10, exclude=exclude)
    retriever = DenseRetriever.from_corpus(corpus, embedder)
    embedder.calls.clear()
    chunked, scores = compute_rankings(retriever, queries, k=10, exclude=exclude, qrels=qrels, chunk_size=4)
    assert embedder.calls["query"] == len(queries)  # each query embedded once, positives read from the index
    assert chunked.query_ids == whole.query_ids and (chunked.ids == whole.ids).all()
    assert all(q.id not in set(chunked.ids[i]) for i, q in enumerate(queries))
    qv = HashEmbedder(8).embed(queries, role=Role.QUERY)
    cv = HashEmbedder(8).embed([corpus["c39"]], role=Role.CANDIDATE)
    assert scores == pytest.approx({q.id: float(qv[i] @ cv[0]) for i, q in enumerate(queries)}, abs=1e-5)


def test_cli_mine_on_a_union_task(tmp_path: Path) -> None:
    from PIL import Image

    from lumir.cli.main import app

    root = tmp_path / "flickr8k"
    (root / "images").mkdir(parents=True)
    lines = []
    for i in range(4):
        Image.new("RGB", (4, 4), (60 * i, 0, 0)).save(root / "images" / f"p{i}.jpg")
        lines += [f"p{i}.jpg#{n}\tcaption {n} of photo {i}" for n in range(5)]
    (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    for split in ("train_tiny", "test_1k"):
        (root / f"{split}.txt").write_text("\n".join(f"p{i}.jpg" for i in range(4)) + "\n")
    args = ["mine", f"flickr8k-union:{root}:train_tiny", "-o", str(tmp_path / "neg"), "-e", "hash:16",
            "--depth", "20", "--k-prime", "10", "-n", "2"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "flickr8k-union/t2i: 20 queries" in result.output and "flickr8k-union/i2t: 4 queries" in result.output
    header, body = read_mined(tmp_path / "neg" / "flickr8k-union_t2i.jsonl")
    assert header is not None and header["config"]["depth"] == 20 and len(body) == 20
    for r in body:
        assert all(n["id"] != r["query_id"] and n["id"] not in r["positive_ids"] for n in r["negatives"])
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and len(read_mined(tmp_path / "neg" / "flickr8k-union_t2i.jsonl")[1]) == 20
    refused = CliRunner().invoke(app, ["mine", f"flickr8k-union:{root}:train_tiny".replace("train_tiny", "test_1k"),
                                       "-o", str(tmp_path / "x"), "-e", "hash:16"])  # fmt: skip
    assert refused.exit_code == 2 and "refusing to mine negatives from a test split" in refused.output
