"""Multi-view captioning (tiny LLaVAs), LaCLIP-style paraphrasing (scripted), augmented sets with provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lumir.augment.caption import (
    CaptionParaphraser,
    MultiViewCaptioner,
    augmented_captions,
    scaled_epochs,
    token_counter,
)
from lumir.errors import ModalityError
from lumir.models.chat.hf import TransformersChatModel
from lumir.testing.fakes import ScriptedChatModel
from lumir.testing.tiny import build_tiny_llava, build_tiny_lm
from lumir.types import ImageRef, Item


def photos(n: int) -> list[Item]:
    rng = np.random.default_rng(0)
    return [
        Item(f"img{i}", image=ImageRef(Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8))))
        for i in range(n)
    ]


def test_pool_of_tiny_vlms_captions_every_image_and_resumes(tmp_path: Path) -> None:
    pool = {f"llava-{s}": TransformersChatModel(*build_tiny_llava(seed=s)) for s in (0, 1)}
    captioner = MultiViewCaptioner(pool, max_new_tokens=5, batch_size=2)
    conv = captioner._conversation(photos(1)[0])
    assert [p["type"] for p in conv[0]["content"]] == ["text", "image", "text"]
    assert conv[0]["content"][0]["text"] == "Describe the " and conv[0]["content"][2]["text"] == " in English:"
    out = tmp_path / "caps.jsonl"
    counts = captioner.run(photos(3), out, progress=False)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert counts["done"] == 6 and len(recs) == 6
    assert {(r["source_id"], r["model"]) for r in recs} == {(f"img{i}", m) for i in range(3) for m in pool}
    assert all(
        r["kind"] == "mllm-caption" and r["T"] == 5 and r["prompt"] == "Describe the <image> in English:" for r in recs
    )
    count = token_counter(pool["llava-0"])
    assert all(count(r["raw"]) <= 5 for r in recs)
    assert (
        len({r["raw"] for r in recs if r["model"] == "llava-0"} | {r["raw"] for r in recs if r["model"] == "llava-1"})
        >= 1
    )
    again = captioner.run(photos(4), out, progress=False)
    assert again["done"] == 2 and again["skipped"] == 6


def test_text_models_cannot_caption_images() -> None:
    text_lm = TransformersChatModel(*build_tiny_lm())
    with pytest.raises(ModalityError, match="CaptionParaphraser"):
        MultiViewCaptioner({"lm": text_lm}, max_new_tokens=4).records(photos(1), "lm")
    with pytest.raises(ValueError, match="<image>"):
        MultiViewCaptioner({"lm": text_lm}, max_new_tokens=4, question="Describe it")


def test_paraphraser_shears_and_labels_its_output(tmp_path: Path) -> None:
    raw = [Item("c1", text="a dog runs on the beach", meta={"image": "1.jpg"}), Item("c2", text="two kids play")]
    prompt_1 = CaptionParaphraser({"x": ScriptedChatModel()}, max_new_tokens=8)._prompt_text(raw[0])
    prompt_2 = CaptionParaphraser({"x": ScriptedChatModel()}, max_new_tokens=8)._prompt_text(raw[1])
    model = ScriptedChatModel({prompt_1: " A dog is running along the shore, near the waves. It", prompt_2: ""})
    recs = CaptionParaphraser({"para": model}, max_new_tokens=8).records(raw, "para")
    assert (
        recs[0]["text"] == "A dog is running along the shore"
        and recs[0]["cut"]
        and recs[0]["kind"] == "llm-paraphrase"
    )
    assert recs[1]["text"] == "" and not recs[1]["complete"]
    items = augmented_captions(raw, recs)
    assert [it.id for it in items] == ["c1", "c2", "c1#para"]
    assert items[2].meta == {
        "image": "1.jpg",
        "source": "para",
        "kind": "llm-paraphrase",
        "model": "para",
        "prompt": prompt_1,
        "T": 8,
    }
    assert items[0].meta["source"] == "raw"


def test_scaled_epochs_keep_the_cost() -> None:
    assert scaled_epochs(20, 20_000, 40_000) == 10
    assert scaled_epochs(20, 20_000, 60_000) == 7
    assert scaled_epochs(1, 10, 100) == 1
    with pytest.raises(ValueError):
        scaled_epochs(20, 100, 50)


def test_cli_augment_captions_both_modes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lumir.cli.main import app
    from lumir.testing.tiny import save_tiny_llava

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, item in enumerate(photos(2)):
        item.image.load().save(folder / f"p{i}.png")
        (folder / f"p{i}.txt").write_text("a red dog on the grass")
    vlm = save_tiny_llava(tmp_path / "vlm")
    out = tmp_path / "caps.jsonl"
    cache = ["--llm-cache", str(tmp_path / "c.sqlite")]
    res = CliRunner().invoke(app, ["augment", "captions", str(folder), "-o", str(out), "--llm", f"hf:{vlm}", *cache])
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 2 and all(r["kind"] == "mllm-caption" for r in recs) and "T = " in res.output
    para = CliRunner().invoke(
        app,
        [
            *("augment", "captions", str(folder), "-o", str(tmp_path / "p.jsonl"), "--llm", f"hf:{vlm}"),
            *("--mode", "paraphrase", "-T", "6", "--no-llm-cache"),
        ],
    )
    assert para.exit_code == 0, para.output
    assert all(json.loads(x)["kind"] == "llm-paraphrase" for x in (tmp_path / "p.jsonl").read_text().splitlines())
    bad = CliRunner().invoke(app, ["augment", "captions", str(folder), "-o", str(out), "--llm", "nope"])
    assert bad.exit_code == 2 and "unknown chat model" in bad.output


def test_first_per_image_keeps_the_first_n_captions_of_each_photo() -> None:
    from lumir.cli.augment import first_per_image
    from lumir.types import Item

    caps = [Item(f"{p}#{n}", text="t", meta={"image": p}) for p in ("a", "b") for n in range(3)]
    assert [c.id for c in first_per_image(caps, 1)] == ["a#0", "b#0"]
    assert [c.id for c in first_per_image(caps, 2)] == ["a#0", "a#1", "b#0", "b#1"]
    with pytest.raises(ValueError, match="--per-image"):
        first_per_image(caps, 0)
