"""MemoEmbedder: each distinct input embedded once; paired tasks (Flickr8k t2i + i2t) share their items."""

from __future__ import annotations

from pathlib import Path

import torch

from lumir.embed.memo import MemoEmbedder
from lumir.eval import evaluate
from lumir.eval.tasks import load_tasks
from lumir.testing.fakes import HashEmbedder
from lumir.types import Item, Query, Role


class Counting(HashEmbedder):
    def __init__(self) -> None:
        super().__init__(16)
        self.embedded = 0

    def embed(self, items, *, role, batch_size=32):  # type: ignore[no-untyped-def]
        self.embedded += len(items)
        return super().embed(items, role=role, batch_size=batch_size)


def test_identical_inputs_are_embedded_once_and_vectors_are_unchanged() -> None:
    inner = Counting()
    memo = MemoEmbedder(inner)
    items = [Item("a", text="red"), Item("b", text="blue"), Item("a2", text="red")]
    first = memo.embed(items, role=Role.CANDIDATE)
    assert torch.equal(first, HashEmbedder(16).embed(items, role=Role.CANDIDATE))
    memo.embed(items, role=Role.CANDIDATE)
    assert inner.embedded == 3 and memo.hits == 3 and memo.misses == 3  # a non-BaseEmbedder: memoised per id
    assert memo.spec() == inner.spec() and memo.dim == 16


def test_a_query_shares_a_candidate_vector_only_without_an_instruction(minilm_dir: Path) -> None:
    from lumir.embed import load_embedder

    memo = MemoEmbedder(load_embedder(f"st:{minilm_dir}", instructions={"t": "Represent the claim"}))
    memo.embed([Item("c", text="aspirin prevents stroke")], role=Role.CANDIDATE)
    plain = memo.embed([Query("c", text="aspirin prevents stroke")], role=Role.QUERY)
    assert memo.hits == 1  # same model input: reused
    instructed = memo.embed([Query("c", text="aspirin prevents stroke", task="t")], role=Role.QUERY)
    assert memo.misses == 2 and not torch.allclose(plain, instructed)


def test_paired_flickr8k_tasks_embed_each_photo_and_caption_once(tmp_path: Path) -> None:
    from flickr8k_files import write_tiny_flickr8k
    from lumir.testing.tiny import save_tiny_clip

    root = write_tiny_flickr8k(tmp_path, crops_per_photo=2)
    tasks = load_tasks({"type": "flickr8k", "path": str(root), "split": "train_tiny"})
    result = evaluate(f"clip:{save_tiny_clip(tmp_path / 'clip')}", tasks, k=10)
    t2i, i2t = result.task("flickr8k/t2i"), result.task("flickr8k/i2t")
    assert t2i["embedding"] == {"embedded": 8 + 40, "reused": 0}  # photos as candidates, captions as queries
    assert i2t["embedding"] == {"embedded": 0, "reused": 40 + 8}  # the same captions and photos, reused
