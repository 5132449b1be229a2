"""Multi-view captioning (tiny LLaVAs), LaCLIP-style paraphrasing (scripted), augmented sets with provenance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lumir.augment.caption import (
    CaptionParaphraser,
    MultiViewCaptioner,
    augmented_captions,
    caption_budgets,
    scaled_epochs,
    token_counter,
)
from lumir.augment.decoding import PAPER_MAX_NEW_TOKENS
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
        recs[0]["text"] == "A dog is running along the shore, near the waves."  # §7.1: up to the first period
        and recs[0]["cut"]
        and recs[0]["kind"] == "llm-paraphrase"
        and recs[0]["shear_rule"] == "appendix"
        and recs[0]["decoding"] == {"preset": "greedy"}
    )
    assert recs[1]["text"] == "" and not recs[1]["complete"]
    clause = CaptionParaphraser({"para": model}, max_new_tokens=8, shear_rule="clause").records(raw, "para")
    assert clause[0]["text"] == "A dog is running along the shore" and clause[0]["shear_rule"] == "clause"
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


class RecordingChat(ScriptedChatModel):
    """A scripted chat model that keeps the decoding keywords of every ``generate`` call."""

    def __init__(self, *args: Any, words_per_token: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls_gen: list[dict[str, Any]] = []
        self.words_per_token = words_per_token

    def count_tokens(self, text: str) -> int:
        return -(-len(text.split()) // self.words_per_token)

    def generate(self, conversations: Any, **gen: Any) -> list[str]:
        self.calls_gen.append(gen)
        return super().generate(conversations, **gen)


def test_caps_and_decoding_per_model_are_used_and_recorded() -> None:
    raw = [Item("c1", text="a dog runs on the beach near the sea"), Item("c2", text="two kids play")]
    a = RecordingChat(default_reply="Two children are playing football. They laugh")
    b = RecordingChat(default_reply="Kids play", words_per_token=2)
    caps = caption_budgets({"a": a, "b": b}, [it.text or "" for it in raw])
    assert caps == {"a": 6, "b": 4}  # 9 and 3 words: a's tokens mean 6; b's (5 and 2) mean 3.5, rounded up
    para = CaptionParaphraser({"a": a, "b": b}, max_new_tokens=caps, decoding={"a": "minigpt4"})
    recs = {r["model"]: r for r in para.records(raw[:1], "a") + para.records(raw[:1], "b")}
    assert a.calls_gen == [{"max_new_tokens": 6, "temperature": 1.0, "top_p": 0.3}]  # Table 10, Mini-GPT4
    assert b.calls_gen == [{"max_new_tokens": 4}]  # greedy
    assert (recs["a"]["T"], recs["b"]["T"]) == (6, 4)
    assert recs["a"]["decoding"] == {"preset": "minigpt4", "temperature": 1.0, "top_p": 0.3}
    assert recs["b"]["decoding"] == {"preset": "greedy"}
    assert recs["a"]["text"] == "Two children are playing football." and recs["a"]["complete"]
    # "Kids play" is 1 token of b (2 words per token) < T = 4: the model stopped by itself, so it is complete
    assert recs["b"]["text"] == "Kids play" and recs["b"]["complete"] and recs["b"]["shear_rule"] == "appendix"
    paper = CaptionParaphraser({"a": a}, max_new_tokens=PAPER_MAX_NEW_TOKENS, decoding="qwen-vl")
    assert paper.records(raw[:1], "a")[0]["decoding"] == {
        "preset": "qwen-vl",
        "temperature": 0.0,
        "dropped": {"min_new_tokens": 8},
    }
    assert a.calls_gen[-1] == {"max_new_tokens": 30, "temperature": 0.0}
    custom = CaptionParaphraser({"a": a}, max_new_tokens=5, decoding={"a": {"temperature": 0.7, "seed": 3}})
    assert custom.records(raw[:1], "a")[0]["decoding"] == {"preset": "custom", "temperature": 0.7, "seed": 3}
    assert a.calls_gen[-1] == {"max_new_tokens": 5, "temperature": 0.7, "seed": 3}


def test_cap_decoding_and_rule_errors() -> None:
    m = ScriptedChatModel()
    with pytest.raises(ValueError, match="no token cap T for model"):
        CaptionParaphraser({"a": m, "b": m}, max_new_tokens={"a": 4})
    with pytest.raises(ValueError, match=">= 1"):
        CaptionParaphraser({"a": m}, max_new_tokens={"a": 0})
    with pytest.raises(ValueError, match="not in the pool"):
        CaptionParaphraser({"a": m}, max_new_tokens=4, decoding={"z": "otter"})
    with pytest.raises(KeyError, match="unknown decoding preset"):
        CaptionParaphraser({"a": m}, max_new_tokens=4, decoding="beam")
    with pytest.raises(ValueError, match="max_new_tokens"):
        CaptionParaphraser({"a": m}, max_new_tokens=4, decoding={"a": {"max_new_tokens": 9}})
    with pytest.raises(ValueError, match="shear_rule"):
        MultiViewCaptioner({"a": m}, max_new_tokens=4, shear_rule="sentence")


def test_cli_caps_per_model_tokenizer_paper_cap_decoding_and_rule(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lumir.cli.main import app
    from lumir.testing.tiny import save_tiny_llava, save_tiny_sp_lm, tiny_chat_tokenizer, tiny_sp_tokenizer

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, item in enumerate(photos(2)):
        item.image.load().save(folder / f"p{i}.png")
        (folder / f"p{i}.txt").write_text("a red dog on the grass")
    vlm, sp = f"hf:{save_tiny_llava(tmp_path / 'vlm')}", f"hf:{save_tiny_sp_lm(tmp_path / 'sp')}"
    out = tmp_path / "p.jsonl"
    res = CliRunner().invoke(
        app,
        [
            *("augment", "captions", str(folder), "-o", str(out), "--llm", vlm, "--llm", sp),
            *("--mode", "paraphrase", "--no-llm-cache", "--decoding", f"{sp}=otter"),
        ],
    )
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    t_vlm = len(tiny_chat_tokenizer().encode("a red dog on the grass", add_special_tokens=False))
    t_sp = len(tiny_sp_tokenizer().encode("a red dog on the grass", add_special_tokens=False))
    assert t_vlm != t_sp  # the two tokenizers disagree, so each model gets its own T
    assert {r["model"]: r["T"] for r in recs} == {vlm: t_vlm, sp: t_sp}
    assert f"T = {t_sp} tokens for {sp}" in res.output
    assert {r["model"]: r["decoding"]["preset"] for r in recs} == {vlm: "greedy", sp: "otter"}
    caps = tmp_path / "c.jsonl"
    res = CliRunner().invoke(
        app,
        [
            *("augment", "captions", str(folder), "-o", str(caps), "--llm", vlm, "--no-llm-cache"),
            *("--budget", "paper", "--decoding", "llava-1.5", "--shear-rule", "clause"),
        ],
    )
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in caps.read_text().splitlines()]
    assert len(recs) == 2 and all(r["T"] == 30 and r["shear_rule"] == "clause" for r in recs)
    assert all(r["decoding"] == {"preset": "llava-1.5", "temperature": 0.2, "top_p": 1.0} for r in recs)
    for bad in (["--budget", "mean"], ["--decoding", "nope=otter"], ["--decoding", "beam"]):
        res = CliRunner().invoke(app, ["augment", "captions", str(folder), "-o", str(caps), "--llm", vlm, *bad])
        assert res.exit_code == 2, (bad, res.output)


def test_a_second_job_on_the_same_output_is_refused(tmp_path: Path) -> None:
    from lumir.errors import OutputLockedError
    from lumir.io.lock import output_lock

    raw = [Item("a.jpg#0", text="A dog runs on the grass .")]
    model = ScriptedChatModel(default_reply="A dog is running on grass.")
    paraphraser = CaptionParaphraser({"para": model}, max_new_tokens=8)
    out = tmp_path / "caps.jsonl"
    with output_lock(out), pytest.raises(OutputLockedError, match=r"caps\.jsonl is being written by another job"):
        paraphraser.run(raw, out, progress=False)
    assert model.calls == 0 and not out.exists()
    assert paraphraser.run(raw, out, progress=False)["done"] == 1
