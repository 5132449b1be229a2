"""`lumir rewrite` and the `--rewrite` switch of `lumir search` / `lumir eval` with LLM and trained rewriters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lumir.cli.main import app

runner = CliRunner()

SCRIPTED = "{type: llm, llm: {type: scripted, default_reply: 'Rewrite: a bright red thing'}}"
"""Every query gets the same reply: 'red' is rewritten, 'blue' is off topic, the reply itself is an echo."""


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lumir.testing.tiny import save_tiny_lm

    return save_tiny_lm(tmp_path_factory.mktemp("lm") / "lm")


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rewrite_a_text_file_counts_fallbacks_and_refuses_to_overwrite(tmp_path: Path) -> None:
    queries = tmp_path / "q.txt"
    queries.write_text("red\n\nblue\na bright red thing\n")
    out = tmp_path / "out.jsonl"
    args = ["rewrite", str(queries), "-o", str(out), "--rewriter", SCRIPTED, "--no-llm-cache"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert _rows(out) == [
        {"id": "q1", "text": "a bright red thing", "original": "red", "fallback": None},
        {"id": "q2", "text": "blue", "original": "blue", "fallback": "off_topic"},
        {"id": "q3", "text": "a bright red thing", "original": "a bright red thing", "fallback": "echo"},
    ]
    assert "3 queries" in res.output and "1 rewritten, 2 kept the original" in res.output
    assert "fallbacks: echo 1, off_topic 1" in res.output and "ms per query; 1 model calls" in res.output
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "already exists; pass --overwrite" in res.output
    assert runner.invoke(app, [*args, "--overwrite", "--batch-size", "1"]).exit_code == 0
    res = runner.invoke(app, ["rewrite", str(queries), "-o", str(tmp_path / "x.jsonl"), "--rewriter", "best"])
    assert res.exit_code == 2 and "unknown rewriter 'best'; known:" in res.output and "llm" in res.output
    res = runner.invoke(app, ["rewrite", str(tmp_path / "none.txt"), "-o", str(tmp_path / "y.jsonl"), "-r", "llm"])
    assert res.exit_code == 2 and "queries file not found" in res.output


def test_rewrite_jsonl_with_a_trained_rewriter_and_the_cache(tmp_path: Path, tiny_lm: Path) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"id": "a", "text": "a red dog"}) + "\n" + json.dumps({"id": "b", "text": "cat"}))
    out = tmp_path / "out.jsonl"
    cache = tmp_path / "llm.sqlite"
    args = [
        "rewrite",
        str(queries),
        "-o",
        str(out),
        "-r",
        f"trained:{tiny_lm},max_new_tokens=4",
        "--llm-cache",
        str(cache),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in _rows(out)] == ["a", "b"] and "1 model calls" in res.output
    res = runner.invoke(app, [*args, "--overwrite"])
    assert res.exit_code == 0 and "0 model calls" in res.output  # every reply came from the cache


def test_search_and_eval_take_llm_and_trained_rewriters(color_jsonl: Path, tmp_path: Path, tiny_lm: Path) -> None:
    index = tmp_path / "idx"
    assert runner.invoke(app, ["index", str(color_jsonl), str(index), "--embedder", "color"]).exit_code == 0
    cache = ["--llm-cache", str(tmp_path / "llm.sqlite")]
    res = runner.invoke(
        app, ["search", str(index), "--text", "red", "-k", "2", "--json", "--rewrite", SCRIPTED, *cache]
    )
    assert res.exit_code == 0, res.output
    row = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("{")))
    assert row["rewritten"] == "a bright red thing" and row["hits"][0]["id"] in {"txt-red", "img-red"}
    rewrite = f"trained:{tiny_lm},max_new_tokens=3"
    res = runner.invoke(
        app, ["search", str(index), "--text", "red", "-k", "2", "--json", "--rewrite", rewrite, *cache]
    )
    assert res.exit_code == 0, res.output
    assert "stages: rewrite" in res.output
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["eval", "toy", "--embedder", "color", "--rewrite", SCRIPTED, "-o", str(out), *cache])
    assert res.exit_code == 0, res.output
    task = json.loads(out.read_text())["tasks"]["toy/t2i"]
    assert task["rewrites"] == {"q-red": "a bright red thing"}
    assert task["rewrite_ms_per_query"] >= 0 and task["rewrite_stats"]["fallbacks"] == {"off_topic": 7}
    assert task["rewrite_stats"]["rewritten"] == 1 and task["rewrite_stats"]["queries"] == 8
    assert "toy/t2i / rewrite:" in res.output and "fallbacks off_topic 7" in res.output
