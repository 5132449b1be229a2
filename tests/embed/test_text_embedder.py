"""TextEmbedder over all-MiniLM-L6-v2: agreement with the model adapter, instructions, modality errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from lumir.embed import TextEmbedder
from lumir.embed.instructions import InstructionSet, format_string
from lumir.errors import ModalityError
from lumir.types import Item, Query, Role


@pytest.fixture(scope="module")
def embedder(minilm_dir: Path) -> TextEmbedder:
    return TextEmbedder(minilm_dir, instructions={"scifact_task1": "Retrieve the abstract that supports the claim"})


def test_matches_model_adapter_and_is_unit_norm(embedder: TextEmbedder) -> None:
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]
    out = embedder.embed([Item(f"c{i}", text=t) for i, t in enumerate(texts)], role=Role.CANDIDATE)
    assert out.shape == (3, 384) and embedder.dim == 384
    torch.testing.assert_close(out, embedder.model.encode(texts), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_images_are_refused(embedder: TextEmbedder) -> None:
    with pytest.raises(ModalityError, match=r"\['pic'\].*Supported modalities: \['text'\]"):
        embedder.embed([Item("pic", image=Image.new("RGB", (8, 8)))], role=Role.CANDIDATE)


def test_queries_get_instructions_candidates_do_not(embedder: TextEmbedder) -> None:
    claim = "aspirin reduces the risk of stroke"
    query = Query("q", text=claim, task="scifact_task1")
    as_query = embedder.embed([query], role=Role.QUERY)
    as_candidate = embedder.embed([query], role=Role.CANDIDATE)
    plain = embedder.model.encode([claim])
    instructed = embedder.model.encode([format_string(f"Retrieve the abstract that supports the claim. {claim}")])
    torch.testing.assert_close(as_candidate, plain, atol=1e-6, rtol=0)  # candidates never get instructions
    torch.testing.assert_close(as_query, instructed, atol=1e-6, rtol=0)
    override = embedder.embed([Query("q", text=claim, task="scifact_task1", instruction="")], role=Role.QUERY)
    torch.testing.assert_close(override, plain, atol=1e-6, rtol=0)


def test_e5_style_template(minilm_dir: Path) -> None:
    e = TextEmbedder(minilm_dir, instruction_template="Instruct: {instruction}\nQuery: {text}")
    out = e.embed(
        [Query("q", text="what is aspirin?", instruction="Given a question, retrieve passages")], role="query"
    )
    expected = e.model.encode(["Instruct: Given a question, retrieve passages\nQuery: what is aspirin?"])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert e.spec()["instruction_template"] == "Instruct: {instruction}\nQuery: {text}"
    with pytest.raises(ValueError, match=r"no \{instruction\} field"):
        TextEmbedder(minilm_dir, instruction_template="Query: {text}")


def test_spec_names_the_folder(embedder: TextEmbedder, minilm_dir: Path) -> None:
    spec = embedder.spec()
    assert spec["type"] == "sentence-transformers"
    assert spec["path"] == str(minilm_dir.resolve())
    assert spec["dtype"] == "float32"
    assert InstructionSet.from_dict(spec["instructions"]) == embedder.instructions


def test_batches_sorted_by_token_count_not_characters(embedder: TextEmbedder) -> None:
    texts = ["international " * 4, "a b c d e f g h i j k l m n o p", "x"]  # 56 chars/6 tokens, 31/18, 1/3
    assert embedder.model.token_lengths(texts) == [6, 18, 3]
    inputs = embedder.prepare([Item(f"t{i}", text=t) for i, t in enumerate(texts)], Role.CANDIDATE)
    batches = embedder.plan_batches(inputs, batch_size=2)
    assert [[inp.item_id for inp in b] for b in batches] == [["t1", "t0"], ["t2"]]
