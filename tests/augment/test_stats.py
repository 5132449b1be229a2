"""Caption statistics (MLLM-augmented captions Figures 3-4): noun heuristic, lengths, report files, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from lumir.augment.stats import caption_statistics, extract_nouns, groups_from_records, write_caption_report
from lumir.cli.main import app
from lumir.errors import DataFormatError

pytest.importorskip("lemminflect")


@pytest.mark.parametrize(
    ("caption", "nouns"),
    [
        ("Two dogs are running through the snow .", ["dog", "snow"]),
        ("A man in a red shirt climbs a rock wall", ["man", "shirt", "rock", "wall"]),
        ("The children play on the swings in the park", ["child", "swing", "park"]),
        ("A girl is going to swim in the pool", ["girl", "pool"]),
        ("a woman walking her dog on the beach", ["woman", "dog", "beach"]),
        ("A black and white dog jumps over a fence", ["dog", "fence"]),
        ("", []),
    ],
)
def test_extract_nouns(caption: str, nouns: list[str]) -> None:
    assert extract_nouns(caption) == nouns


def test_caption_statistics_hand_counted() -> None:
    stats = caption_statistics(
        {"raw": ["a dog runs", "two dogs play in the snow", "a cat"], "llm": ["a dog", "a dog"]}, top=2
    )
    raw = stats["raw"]
    assert (raw.captions, raw.mean_length, raw.median_length) == (3, round(11 / 3, 2), 3.0)
    assert raw.length_histogram == {2: 1, 3: 1, 6: 1}
    assert raw.top_nouns == [("dog", 2), ("snow", 1)] and raw.distinct_nouns == 3
    assert stats["llm"].top_nouns == [("dog", 2)] and stats["llm"].p90_length == 2.0
    tokens = caption_statistics({"x": ["a b c"]}, length=lambda s: 2 * len(s.split()), length_unit="tokens")
    assert tokens["x"].mean_length == 6.0 and tokens["x"].length_unit == "tokens"
    with pytest.raises(ValueError, match="'empty' is empty"):
        caption_statistics({"empty": []})


def test_groups_from_records() -> None:
    recs = [
        {"model": "m1", "kind": "llm-paraphrase", "text": "a dog", "raw": "a dog. It runs"},
        {"model": "m1", "kind": "llm-paraphrase", "text": "", "raw": "..."},
        {"model": "m2", "kind": "mllm-caption", "text": "a cat", "raw": "a cat"},
    ]
    assert groups_from_records(recs) == {"m1 (llm-paraphrase)": ["a dog"], "m2 (mllm-caption)": ["a cat"]}
    assert groups_from_records(recs, field_name="raw")["m1 (llm-paraphrase)"] == ["a dog. It runs", "..."]
    with pytest.raises(DataFormatError, match="f.jsonl, line 2"):
        groups_from_records([recs[0], {"text": "x"}], path="f.jsonl")


def test_write_caption_report(tmp_path: Path) -> None:
    groups = {"raw": ["a dog runs on the grass"] * 3, "m (llm-paraphrase)": ["a puppy on a lawn", "a dog"]}
    stats = write_caption_report(groups, tmp_path / "report", top=3)
    out = tmp_path / "report"
    for name in ("nouns.png", "lengths.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 300
    payload = json.loads((out / "stats.json").read_text())
    assert payload["format"] == "lumir-caption-stats/1" and set(payload["groups"]) == set(groups)
    assert payload["groups"]["raw"]["top_nouns"] == [["dog", 3], ["grass", 3]]
    report = (out / "report.md").read_text()
    assert "| m (llm-paraphrase) | 2 | 3.5 |" in report and "top-3 nouns shared with raw" in report
    assert "| 1/3 |" in report  # only "dog" is shared
    assert stats["raw"].mean_length == 6.0


def test_cli_augment_stats(tmp_path: Path) -> None:
    records = tmp_path / "aug.jsonl"
    rows = [{"model": "llm", "kind": "llm-paraphrase", "text": "a dog on grass", "raw": "a dog on grass."}] * 2
    records.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"id": "c1", "text": "a brown dog runs"}) + "\n")
    result = CliRunner().invoke(app, ["augment", "stats", str(records), "--raw", str(raw), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "llm (llm-paraphrase): 2 captions" in result.output and (tmp_path / "r" / "nouns.png").is_file()
    records.write_text("{broken\n")
    bad = CliRunner().invoke(app, ["augment", "stats", str(records), "-o", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and "aug.jsonl, line 1" in bad.output


def test_shearing_summary_counts_hand_made_records(tmp_path: Path) -> None:
    from lumir.augment.stats import shearing_summary

    recs = [
        {
            "model": "m",
            "kind": "llm-paraphrase",
            "raw": "a dog runs. It is fast",
            "text": "a dog runs",
            "cut": True,
            "complete": True,
        },
        {
            "model": "m",
            "kind": "llm-paraphrase",
            "raw": "a cat on the",
            "text": "a cat on the",
            "cut": False,
            "complete": False,
        },
        {"model": "m", "kind": "llm-paraphrase", "raw": "", "text": "", "cut": False, "complete": False},
        {
            "model": "m",
            "kind": "llm-paraphrase",
            "raw": "two birds",
            "text": "two birds",
            "cut": False,
            "complete": True,
        },
    ]
    sh = shearing_summary(recs)["m (llm-paraphrase)"]
    assert sh == {
        "records": 4,
        "cut_share": 0.25,
        "incomplete_share": 0.5,
        "empty_share": 0.25,
        "usable_share": 0.5,
        "mean_words_generated": 3.0,  # (6 + 4 + 0 + 2) / 4
        "mean_words_sheared": 2.25,  # (3 + 4 + 0 + 2) / 4
    }
    write_caption_report({"x": ["a dog"]}, tmp_path, records=recs)
    assert (
        "| m (llm-paraphrase) | 4 | 25.0% | 50.0% | 25.0% | 50.0% | 3.0 | 2.25 |"
        in (tmp_path / "report.md").read_text()
    )
