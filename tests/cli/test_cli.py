"""The `lumir` CLI end to end on small real files: index, info, search (text, image, composed, --html), eval."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from lumir.cli.main import app

runner = CliRunner()


def _index(src: Path, out: Path, *extra: str) -> None:
    res = runner.invoke(app, ["index", str(src), str(out), "--embedder", "color", *extra])
    assert res.exit_code == 0, res.output


def test_index_info_and_text_search(color_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    _index(color_jsonl, out)
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and '"count": 16' in info.output
    res = runner.invoke(app, ["search", str(out), "--text", "blue", "-k", "2", "--modality", "image", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output.strip().splitlines()[0])["hits"]
    assert hits[0]["id"] == "img-blue" and hits[0]["rank"] == 1


def test_image_and_composed_queries_and_html_gallery(color_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    _index(color_jsonl, out)
    res = runner.invoke(
        app, ["search", str(out), "--image", str(tmp_path / "img" / "red.png"), "-k", "1", "--modality", "image"]
    )
    assert res.exit_code == 0 and "img-red" in res.output
    # red image + "blue" text: colour-space sum lands on purple
    html = tmp_path / "g.html"
    res = runner.invoke(
        app,
        [
            "search",
            str(out),
            "--image",
            str(tmp_path / "img" / "red.png"),
            "--text",
            "blue",
            "-k",
            "3",
            "--modality",
            "image",
            "--html",
            str(html),
        ],
    )
    assert res.exit_code == 0, res.output
    page = html.read_text()
    assert "data:image/jpeg;base64," in page and "#1 ·" in page and "img-purple" in page


def test_add_to_an_existing_index(color_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    _index(color_jsonl, out)
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"id": "new", "text": "green green"}) + "\n")
    res = runner.invoke(app, ["index", str(extra), str(out), "--add"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["search", str(out), "--text", "green", "-k", "1", "--modality", "text", "--json"])
    assert json.loads(res.output.splitlines()[0])["hits"][0]["id"] in {"new", "txt-green"}
    assert '"count": 17' in runner.invoke(app, ["info", str(out)]).output


def test_errors_are_clear_and_exit_nonzero(tmp_path: Path, color_jsonl: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "ok"}\n{"id": "b", "text": \n')
    res = runner.invoke(app, ["index", str(bad), str(tmp_path / "x"), "--embedder", "color"])
    assert res.exit_code == 2 and "bad.jsonl, line 2" in res.output
    assert not (tmp_path / "x").exists()
    res = runner.invoke(app, ["search", str(tmp_path / "nope"), "--text", "a"])
    assert res.exit_code == 2 and "nope" in res.output
    res = runner.invoke(
        app, ["index", str(color_jsonl), str(tmp_path / "y"), "--embedder", "openai/clip-vit-base-patch32"]
    )
    assert res.exit_code == 2 and "local" in res.output
    out = tmp_path / "idx"
    _index(color_jsonl, out)
    res = runner.invoke(app, ["index", str(color_jsonl), str(out), "--embedder", "color"])
    assert res.exit_code == 2 and "exists" in res.output


def test_eval_toy_with_benchmark_check(tmp_path: Path) -> None:
    bench = tmp_path / "b.yaml"
    bench.write_text(
        "name: toy\nexpected:\n  - {task: toy/t2i, stage: first_stage, metric: R@1, value: 100, tolerance: 0}\n"
    )
    res = runner.invoke(
        app,
        [
            "eval",
            "toy",
            "--embedder",
            "color",
            "-k",
            "10",
            "-o",
            str(tmp_path / "r.json"),
            "--report",
            str(tmp_path / "r.md"),
            "--check",
            str(bench),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "toy/t2i" in (tmp_path / "r.md").read_text()
    assert (
        json.loads((tmp_path / "r.json").read_text())["tasks"]["toy/t2i"]["stages"]["first_stage"]["metrics"]["R@1"]
        == 1
    )
    bench.write_text(
        "name: toy\nexpected:\n  - {task: toy/t2i, stage: first_stage, metric: R@1, value: 50, tolerance: 1}\n"
    )
    res = runner.invoke(app, ["eval", "toy", "--embedder", "color", "-k", "10", "--check", str(bench)])
    assert res.exit_code == 1


def test_eval_mbeir_uses_the_tasks_instruction_table(mbeir_root: Path, tmp_path: Path) -> None:
    from lumir.testing.tiny import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip")
    out = tmp_path / "r.json"
    res = runner.invoke(
        app,
        [
            "eval",
            f"mbeir:{mbeir_root}:mscoco_task0,cirr_task7",
            "--embedder",
            f"clip:{clip}",
            "-k",
            "10",
            "--candidate-modality",
            "auto",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert set(result["tasks"]) == {"mscoco_task0", "cirr_task7"}
    instructions = result["config"]["embedder"]["instructions"]
    assert "Retrieve a day-to-day image that aligns with the modification instructions." in json.dumps(instructions)
    res = runner.invoke(
        app,
        [
            "eval",
            f"mbeir:{mbeir_root}:mscoco_task0",
            "--embedder",
            f"clip:{clip}",
            "--instructions",
            "none",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0 and "instructions" not in json.loads(out.read_text())["config"]["embedder"]


def test_stage_specs_and_pipeline_files(color_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    _index(color_jsonl, out)
    res = runner.invoke(app, ["search", str(out), "--text", "red", "--rerank", "best"])
    assert res.exit_code == 2 and "unknown reranker 'best'; known: action-aware, listwise" in res.output
    res = runner.invoke(
        app, ["search", str(out), "--text", "red", "-k", "2", "--json", "--rewrite", "template:{text} thing"]
    )
    assert res.exit_code == 0, res.output
    row = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("{")))
    assert row["rewritten"] == "red thing" and row["hits"][0]["id"] in {"txt-red", "img-red"}
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("embedder: color\nk: 10\nrewriter: 'template:{text} thing'\n")
    res = runner.invoke(app, ["eval", "toy", "--pipeline", str(pipeline), "-o", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["tasks"]["toy/t2i"]["rewrites"]["q-red"] == "red thing"
    assert result["config"]["pipeline"]["rewriter"] == "template:{text} thing"
    pipeline.write_text("embeder: color\n")
    res = runner.invoke(app, ["eval", "toy", "--pipeline", str(pipeline)])
    assert res.exit_code == 2 and "p.yaml: unknown pipeline key(s) ['embeder']" in res.output


def test_list_shows_registered_names() -> None:
    res = runner.invoke(app, ["list", "reranker"])
    assert res.exit_code == 0 and "true-false" in res.output and "mmembed" in res.output
    assert "minilm" in runner.invoke(app, ["list"]).output
    assert runner.invoke(app, ["list", "widget"]).exit_code == 2
    assert "mini (lumir-mini" in runner.invoke(app, ["index", "--help"]).output.replace("\n", " ")
