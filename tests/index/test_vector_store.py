"""VectorStore index directories: round trip, resume, atomic overwrite, incremental add, validation."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lumir.collections import Corpus, Rankings
from lumir.errors import DimensionMismatchError, IncompatibleIndexError, ModalityError
from lumir.index import FlatIndex, VectorStore, build_index, open_index
from lumir.retrieve import DenseRetriever
from lumir.testing.fakes import COLORS, ColorEmbedder, HashEmbedder
from lumir.testing.toy import color_image, toy_corpus, toy_corpus_files
from lumir.types import ImageRef, Item, Modality, Query, Role


@pytest.fixture
def color_corpus(tmp_path: Path) -> Corpus:
    """The toy corpus with its images saved as PNG files (index directories store images by path)."""
    return toy_corpus_files(tmp_path / "images")


def search(store: VectorStore, queries: Sequence[Query], k: int, modality: str | Modality | None = None) -> Rankings:
    """The one search path: a DenseRetriever over the index directory."""
    return DenseRetriever.from_store(store, candidate_modality=modality).retrieve(queries, k)


def text_corpus(n: int, prefix: str = "c") -> Corpus:
    return Corpus([Item(f"{prefix}{i}", text=f"candidate number {i} of {prefix}") for i in range(n)])


class CountingEmbedder:
    """Wraps HashEmbedder (same spec), counts embed calls and raises on call number ``fail_on`` (1-based)."""

    modalities = frozenset(Modality)

    def __init__(self, dim: int = 16, fail_on: int | None = None) -> None:
        self.inner = HashEmbedder(dim)
        self.dim = dim
        self.fail_on = fail_on
        self.calls: list[int] = []

    def embed(self, items: Sequence[Item], *, role: Role, batch_size: int = 32) -> torch.Tensor:
        if self.fail_on is not None and len(self.calls) + 1 == self.fail_on:
            raise RuntimeError("simulated crash")
        self.calls.append(len(items))
        return self.inner.embed(items, role=role, batch_size=batch_size)

    def spec(self) -> dict[str, Any]:
        return self.inner.spec()


def test_round_trip_reloads_without_code_and_searches_identically(color_corpus: Corpus, tmp_path: Path) -> None:
    path = tmp_path / "idx"
    store = build_index(color_corpus, ColorEmbedder(), path, show_progress=False)
    assert sorted(p.name for p in path.iterdir()) == ["ids.json", "items.jsonl", "lumir.json", "vectors.npy"]
    config = json.loads((path / "lumir.json").read_text())
    assert config["format"] == "lumir-index" and config["format_version"] == 1
    assert config["backend"] == "flat" and config["embedder"] == {"type": "color"}
    assert config["dim"] == 3 and config["count"] == 16 and config["modalities"] == {"image": 8, "text": 8}
    assert {"lumir", "torch", "numpy"} <= set(config["versions"])
    assert json.loads((path / "ids.json").read_text()) == color_corpus.ids
    assert not (tmp_path / "idx.partial").exists()

    queries = [Query(f"q-{c}", text=c) for c in COLORS]
    before = search(store, queries, 5)
    reopened = open_index(path)  # the embedder is rebuilt from lumir.json
    assert isinstance(reopened.embedder, ColorEmbedder)
    after = search(reopened, queries, 5)
    assert after.query_ids == before.query_ids
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.scores, before.scores)
    assert reopened.corpus.ids == color_corpus.ids
    assert reopened.corpus["img-red"].image is not None and reopened.corpus["img-red"].image.load().size == (32, 32)


def test_modality_mask_restricts_candidates(color_corpus: Corpus, tmp_path: Path) -> None:
    store = build_index(color_corpus, ColorEmbedder(), tmp_path / "idx", show_progress=False)
    queries = [Query(f"q-{c}", text=c) for c in COLORS]
    images = search(store, queries, 10, "image")
    for c in COLORS:
        hits = images.for_query(f"q-{c}")
        assert hits[0].id == f"img-{c}"
        assert len(hits) == 8 and all(h.id.startswith("img-") for h in hits)  # 8 images, then empty slots
    texts = search(store, queries, 3, Modality.TEXT)
    assert all(h.id.startswith("txt-") for _, hits in texts for h in hits)
    with pytest.raises(ModalityError, match=r"no candidate has modality 'image,text'.*8 image, 8 text"):
        search(store, queries, 3, "image,text")


def test_faiss_backend_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    corpus = text_corpus(300)
    store = build_index(corpus, HashEmbedder(16), tmp_path / "idx", backend="faiss", factory="HNSW16")
    assert (tmp_path / "idx" / "faiss.index").is_file()
    assert store.config["backend_config"]["factory"] == "HNSW16"
    queries = [Query(f"q{i}", text=f"candidate number {i} of c") for i in range(0, 300, 30)]
    reopened = open_index(tmp_path / "idx")
    before, after = search(store, queries, 5), search(reopened, queries, 5)
    np.testing.assert_array_equal(before.ids, after.ids)
    assert [hits[0].id for _, hits in after] == [f"c{i}" for i in range(0, 300, 30)]
    auto = build_index(corpus, HashEmbedder(16), tmp_path / "auto", backend="faiss", show_progress=False)
    assert auto.config["backend_config"]["factory"] == "IVF4,Flat"  # 4 sqrt(300) capped by 300 // 39 = 7


def test_resume_after_crash_embeds_only_the_missing_shards(tmp_path: Path) -> None:
    corpus = text_corpus(50)
    path = tmp_path / "idx"
    crashing = CountingEmbedder(fail_on=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_index(corpus, crashing, path, shard_size=10, show_progress=False)
    assert crashing.calls == [10, 10]
    assert not path.exists()  # nothing half-written at the target
    assert sorted(p.name for p in (tmp_path / "idx.partial").glob("shard-*.npy")) == [
        "shard-00000.npy",
        "shard-00001.npy",
    ]
    with pytest.raises(FileNotFoundError, match="interrupted build"):
        open_index(path)

    resumed = CountingEmbedder()
    store = build_index(corpus, resumed, path, shard_size=10, show_progress=False)
    assert resumed.calls == [10, 10, 10]  # shards 2, 3, 4 only
    assert not (tmp_path / "idx.partial").exists()
    clean = build_index(corpus, HashEmbedder(16), tmp_path / "clean", shard_size=10, show_progress=False)
    np.testing.assert_array_equal(np.load(path / "vectors.npy"), np.load(tmp_path / "clean" / "vectors.npy"))
    assert store.ids == clean.ids


def test_resume_discards_a_partial_build_for_another_embedder_or_shard_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "idx"
    with pytest.raises(RuntimeError):
        build_index(text_corpus(30), CountingEmbedder(fail_on=2), path, shard_size=10, show_progress=False)
    with caplog.at_level(logging.WARNING, logger="lumir.index.build"):
        other = CountingEmbedder(dim=8)
        build_index(text_corpus(30), other, path, shard_size=10, show_progress=False)
    assert other.calls == [10, 10, 10]  # started over
    assert re.search(r"discarding the interrupted build in .*idx\.partial.*embedder \{'type': 'hash'", caplog.text)
    assert not (tmp_path / "idx.partial").exists()

    caplog.clear()
    with pytest.raises(RuntimeError):
        build_index(text_corpus(30), CountingEmbedder(fail_on=2), tmp_path / "b", shard_size=10, show_progress=False)
    with caplog.at_level(logging.WARNING, logger="lumir.index.build"):
        bigger = CountingEmbedder()
        build_index(text_corpus(30), bigger, tmp_path / "b", shard_size=20, show_progress=False)
    assert bigger.calls == [20, 10] and "shard_size=10, not 20" in caplog.text


def test_resume_of_another_corpus_reuses_only_unchanged_shards(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "idx"
    with pytest.raises(RuntimeError):
        build_index(text_corpus(30), CountingEmbedder(fail_on=3), path, shard_size=10, show_progress=False)
    with caplog.at_level(logging.WARNING, logger="lumir.index.build"):
        other = CountingEmbedder()
        store = build_index(text_corpus(30, prefix="d"), other, path, shard_size=10, show_progress=False)
    assert other.calls == [10, 10, 10] and store.ids == text_corpus(30, prefix="d").ids
    assert "corpus changed" in caplog.text
    # one item left out (e.g. rerun with --skip-bad-images): shards before it are reused, the rest re-embedded
    with pytest.raises(RuntimeError):
        build_index(text_corpus(30), CountingEmbedder(fail_on=3), tmp_path / "b", shard_size=10, show_progress=False)
    fewer = Corpus([it for it in text_corpus(30) if it.id != "c15"])
    again = CountingEmbedder()
    store = build_index(fewer, again, tmp_path / "b", shard_size=10, show_progress=False)
    assert again.calls == [10, 9]
    clean = build_index(fewer, HashEmbedder(16), tmp_path / "clean", shard_size=10, show_progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "vectors.npy"), np.asarray(clean.index.vectors))
    assert store.ids == clean.ids


def test_resume_re_embeds_the_shard_whose_item_changed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    corpus = text_corpus(50)
    path = tmp_path / "idx"
    with pytest.raises(RuntimeError):
        build_index(corpus, CountingEmbedder(fail_on=4), path, shard_size=10, show_progress=False)
    manifest = json.loads((tmp_path / "idx.partial" / "manifest.json").read_text())
    assert sorted(manifest["shards"]) == ["0", "1", "2"] and manifest["shard_size"] == 10
    edited = Corpus([Item(it.id, text="an edited text") if it.id == "c14" else it for it in corpus])
    resumed = CountingEmbedder()
    with caplog.at_level(logging.INFO):
        store = build_index(edited, resumed, path, shard_size=10, show_progress=False)
    assert resumed.calls == [10, 10, 10]  # shard 1 (changed), shards 3 and 4 (missing); shards 0 and 2 reused
    assert "resuming the build in" in caplog.text and "20 of 50 items already embedded" in caplog.text
    assert re.search(r"1 shard\(s\) .* changed since they were embedded \(first: shard 1, items 'c10' to", caplog.text)
    vectors = np.load(path / "vectors.npy")
    fresh = HashEmbedder(16).embed([Item("c14", text="an edited text")], role=Role.CANDIDATE).numpy()
    np.testing.assert_array_equal(vectors[store.ids.index("c14")], fresh[0])
    clean = build_index(edited, HashEmbedder(16), tmp_path / "clean", shard_size=10, show_progress=False)
    np.testing.assert_array_equal(vectors, np.asarray(clean.index.vectors))


def test_resume_checks_image_files_and_survives_a_damaged_shard(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for i in range(6):
        color_image("red").save(tmp_path / "img" / f"{i}.png")
    corpus = Corpus([Item(f"i{i}", image=ImageRef(tmp_path / "img" / f"{i}.png")) for i in range(6)])
    with pytest.raises(RuntimeError):  # shards [i0, i1] and [i2, i3] finished
        build_index(corpus, CountingEmbedder(fail_on=3), tmp_path / "a", shard_size=2, show_progress=False)
    color_image("green", size=40).save(tmp_path / "img" / "3.png")  # the photo of i3 replaced in place
    resumed = CountingEmbedder()
    build_index(corpus, resumed, tmp_path / "a", shard_size=2, show_progress=False)
    assert resumed.calls == [2, 2]  # shard 1 (its image changed) and shard 2 (missing); shard 0 reused
    clean = build_index(corpus, HashEmbedder(16), tmp_path / "clean", shard_size=2, show_progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "vectors.npy"), np.asarray(clean.index.vectors))

    with pytest.raises(RuntimeError):
        build_index(corpus, CountingEmbedder(fail_on=3), tmp_path / "b", shard_size=2, show_progress=False)
    (tmp_path / "b.partial" / "shard-00000.npy").write_bytes(b"\x93NUMPY")  # a damaged shard file
    resumed = CountingEmbedder()
    build_index(corpus, resumed, tmp_path / "b", shard_size=2, show_progress=False)
    assert resumed.calls == [2, 2]  # shard 0 (damaged) and shard 2 (missing)


def test_a_folder_lumir_did_not_write_is_never_deleted(tmp_path: Path) -> None:
    partial = tmp_path / "idx.partial"
    partial.mkdir()
    (partial / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"idx\.partial exists and holds files"):
        build_index(text_corpus(5), HashEmbedder(16), tmp_path / "idx", show_progress=False)
    assert (partial / "notes.txt").read_text() == "mine"


def test_overwrite_is_refused_by_default_and_atomic(color_corpus: Corpus, tmp_path: Path) -> None:
    path = tmp_path / "idx"
    build_index(color_corpus, ColorEmbedder(), path, show_progress=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_index(text_corpus(5), HashEmbedder(16), path, show_progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_index(text_corpus(30), CountingEmbedder(fail_on=2), path, shard_size=10, overwrite=True)
    intact = open_index(path)  # the old index survived the failed rebuild
    assert intact.ids == color_corpus.ids and intact.config["embedder"] == {"type": "color"}
    assert search(intact, [Query("q", text="blue")], 1, "image").for_query("q")[0].id == "img-blue"

    (tmp_path / "idx.partial").rename(tmp_path / "stale")  # start the replacement from scratch
    store = build_index(text_corpus(30), HashEmbedder(16), path, overwrite=True, show_progress=False)
    assert open_index(path).ids == store.ids == text_corpus(30).ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "images", "stale"]  # no temp/backup dirs left

    (tmp_path / "not-an-index").mkdir()
    (tmp_path / "not-an-index" / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a lumir index"):
        build_index(text_corpus(3), HashEmbedder(16), tmp_path / "not-an-index", overwrite=True)
    assert (tmp_path / "not-an-index" / "precious.txt").read_text() == "keep me"


def test_in_memory_images_are_refused_before_embedding(tmp_path: Path) -> None:
    embedder = CountingEmbedder()
    with pytest.raises(ValueError, match=r"img-red.*save the image to a file"):
        build_index(toy_corpus(), embedder, tmp_path / "idx", show_progress=False)
    assert embedder.calls == []


def test_incremental_add_equals_building_on_the_union(tmp_path: Path) -> None:
    first, second = text_corpus(30), text_corpus(20, prefix="n")
    store = build_index(first, HashEmbedder(16), tmp_path / "inc", show_progress=False)
    created = store.config["created"]
    store.add(list(second))
    union = build_index(first.extend(second), HashEmbedder(16), tmp_path / "union", show_progress=False)
    assert store.ids == union.ids and len(store) == 50
    inc_vectors, union_vectors = np.load(tmp_path / "inc" / "vectors.npy"), np.load(tmp_path / "union" / "vectors.npy")
    np.testing.assert_array_equal(inc_vectors, union_vectors)
    reopened = open_index(tmp_path / "inc")
    assert reopened.config["count"] == 50 and reopened.config["created"] == created
    assert reopened.corpus.ids == union.corpus.ids
    queries = [Query("q1", text="candidate number 3 of n"), Query("q2", text="candidate number 7 of c")]
    a, b = search(reopened, queries, 10), search(union, queries, 10)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.for_query("q1")[0].id == "n3"


def test_add_rejects_duplicate_ids_and_leaves_the_directory_unchanged(tmp_path: Path) -> None:
    store = build_index(text_corpus(10), HashEmbedder(16), tmp_path / "idx", show_progress=False)
    before = (tmp_path / "idx" / "ids.json").read_text()
    with pytest.raises(ValueError, match=r"\['c3'\]"):
        store.add([Item("new", text="fresh"), Item("c3", text="again")])
    with pytest.raises(ValueError, match=r"\['twice'\]"):
        store.add([Item("twice", text="a"), Item("twice", text="b")])
    assert (tmp_path / "idx" / "ids.json").read_text() == before and len(store) == 10


def test_open_index_validation(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no index directory"):
        open_index(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no lumir\.json"):
        open_index(tmp_path / "empty")
    path = tmp_path / "idx"
    build_index(text_corpus(10), HashEmbedder(16), path, show_progress=False)
    config = json.loads((path / "lumir.json").read_text())

    def write_config(**changes: Any) -> None:
        (path / "lumir.json").write_text(json.dumps({**config, **changes}))

    write_config(format="something-else")
    with pytest.raises(IncompatibleIndexError, match="not a lumir index"):
        open_index(path)
    write_config(format_version=2, versions={"lumir": "9.9.0"})
    newer = r"format_version 2, written by lumir 9\.9\.0.*reads format_version 1"
    with pytest.raises(IncompatibleIndexError, match=newer):
        open_index(path)
    write_config(count=11)
    with pytest.raises(IncompatibleIndexError, match=r"10 vectors .* 10 ids .* count 11"):
        open_index(path)
    write_config()
    (path / "ids.json").write_text(json.dumps([f"c{i}" for i in range(9)]))
    with pytest.raises(IncompatibleIndexError, match=r"10 vectors in vectors\.npy, 9 ids"):
        open_index(path)
    (path / "ids.json").unlink()
    with pytest.raises(IncompatibleIndexError, match=r"incomplete: missing \['ids.json'\]"):
        open_index(path)


def test_dimension_mismatch_names_both_dims(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    build_index(text_corpus(10), HashEmbedder(16), path, show_progress=False)
    with pytest.raises(DimensionMismatchError, match=r"dim 8 but index .*\{'type': 'hash', 'dim': 16\}.* dim 16"):
        open_index(path, embedder=HashEmbedder(8))
    store = open_index(path, embedder=HashEmbedder(16))
    with pytest.raises(DimensionMismatchError, match=r"gives 8-d vectors but the index holds 16-d"):
        DenseRetriever(HashEmbedder(8), store.index, store.corpus)
    rankings = search(store, [Query("x", text="candidate number 4 of c")], 2)
    assert rankings.query_ids == ["x"] and rankings.for_query("x")[0].id == "c4"


def test_describe_summarises_the_directory(color_corpus: Corpus, tmp_path: Path) -> None:
    store = build_index(color_corpus, ColorEmbedder(), tmp_path / "idx", show_progress=False)
    info = open_index(tmp_path / "idx").describe()
    assert info["backend"] == "flat" and info["count"] == 16 and info["dim"] == 3
    assert info["modalities"] == {"image": 8, "text": 8} and info["embedder"] == {"type": "color"}
    assert set(info["files"]) == {"ids.json", "items.jsonl", "lumir.json", "vectors.npy"}
    assert info["size_bytes"] == sum(p.stat().st_size for p in (tmp_path / "idx").iterdir())
    assert isinstance(store, VectorStore) and isinstance(store.index, FlatIndex)


def test_damaged_files_are_errors_naming_them(tmp_path: Path) -> None:
    from lumir.errors import DataFormatError

    path = tmp_path / "idx"
    build_index(text_corpus(10), HashEmbedder(16), path, show_progress=False)
    ids = (path / "ids.json").read_text()
    (path / "ids.json").write_text(ids[: len(ids) // 2])
    with pytest.raises(IncompatibleIndexError, match=r"ids\.json is truncated or not JSON"):
        open_index(path)
    (path / "ids.json").write_text(ids)
    items = (path / "items.jsonl").read_text()
    (path / "items.jsonl").write_text(items[:-9])  # the last line cut mid-way
    store = open_index(path)  # items.jsonl is read lazily ...
    with pytest.raises(DataFormatError, match=r"items\.jsonl, line 10: "):
        store.describe()  # ... but `lumir info` reads it: a damaged directory is not reported healthy
    (path / "items.jsonl").write_text("".join(items.splitlines(keepends=True)[:9]))  # one whole line missing
    with pytest.raises(IncompatibleIndexError, match=r"items\.jsonl holds 9 items whose ids differ from ids\.json"):
        open_index(path).describe()


def test_an_ivf_with_more_lists_than_items_is_refused_before_embedding(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    embedder = CountingEmbedder()
    with pytest.raises(ValueError, match=r"'IVF64,Flat' has 64 inverted lists but the corpus has only 30 items"):
        build_index(text_corpus(30), embedder, tmp_path / "idx", backend="faiss", factory="IVF64,Flat")
    assert embedder.calls == [] and not (tmp_path / "idx.partial").exists()


def test_a_second_build_of_the_same_path_refuses_while_one_runs(tmp_path: Path) -> None:
    from lumir.errors import OutputLockedError
    from lumir.io.lock import output_lock

    path = tmp_path / "idx"
    embedder = CountingEmbedder()
    with output_lock(tmp_path / "idx.partial"), pytest.raises(OutputLockedError, match=r"idx\.partial is being"):
        build_index(text_corpus(5), embedder, path, show_progress=False)
    assert embedder.calls == [] and not path.exists()
    build_index(text_corpus(5), embedder, path, show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no partial folder or lock file left
