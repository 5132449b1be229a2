"""What a new user's bad input does to the `lumir` CLI: a clear error naming the file, line or item, never a
traceback or a silently wrong result; and output that reads well in a log file."""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lumir.cli.main import app
from lumir.testing.fakes import ColorEmbedder

runner = CliRunner()


def write_bomb(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels: Pillow refuses it as a decompression bomb."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def with_extra_image(src: Path, name: str, image: Path) -> Path:
    """``src`` plus one image item ``name`` pointing at ``image``."""
    out = src.with_name(f"with-{name}.jsonl")
    out.write_text(src.read_text() + json.dumps({"id": name, "image": str(image)}) + "\n")
    return out


def invoke(*args: str) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def build(src: Path, out: Path, *extra: str) -> None:
    res = invoke("index", src, out, "--embedder", "color", *extra)
    assert res.exit_code == 0, res.output


def _refuse_model(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("an embedder was loaded")


# ---------------------------------------------------------------------------------------------- images


def test_a_decompression_bomb_in_index_is_an_error_naming_the_file(color_jsonl: Path, tmp_path: Path) -> None:
    src = with_extra_image(color_jsonl, "huge", write_bomb(tmp_path / "huge.png"))
    res = invoke("index", src, tmp_path / "idx", "--embedder", "color")
    assert res.exit_code == 2, res.output
    assert "huge.png is too large to decode safely" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "idx").exists()


def test_skip_bad_images_lists_and_leaves_them_out(color_jsonl: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    src = with_extra_image(with_extra_image(color_jsonl, "huge", write_bomb(tmp_path / "huge.png")), "broken",
                           tmp_path / "broken.png")  # fmt: skip
    res = invoke("index", src, tmp_path / "idx", "--embedder", "color", "--skip-bad-images")
    assert res.exit_code == 0, res.output
    assert "skipped huge:" in res.stderr and "too large" in res.stderr and "skipped broken:" in res.stderr
    assert "indexed 16 items" in res.stdout and "(2 skipped)" in res.stdout
    info = json.loads(invoke("info", tmp_path / "idx").stdout)
    assert info["count"] == 16 and info["modalities"] == {"image": 8, "text": 8}


def test_check_lists_bad_images_and_passes_a_clean_source(color_jsonl: Path, tmp_path: Path) -> None:
    res = invoke("check", color_jsonl)
    assert res.exit_code == 0, res.output
    assert "16 items (8 image, 8 text)" in res.stdout and "every item parses and every image decodes" in res.stdout
    src = with_extra_image(color_jsonl, "huge", write_bomb(tmp_path / "huge.png"))
    res = invoke("check", src)
    assert res.exit_code == 1
    assert "unreadable: item 'huge'" in res.stdout and "huge.png is too large" in res.stdout
    assert "1 image(s) cannot be decoded" in res.stdout and "--skip-bad-images" in res.stdout


def test_search_with_a_bomb_image_fails_before_any_model_loads(
    color_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(color_jsonl, tmp_path / "idx")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the pipeline was built")

    monkeypatch.setattr("lumir.pipeline.build_pipeline", refuse)
    res = invoke("search", tmp_path / "idx", "--image", write_bomb(tmp_path / "huge.png"))
    assert res.exit_code == 2, res.output
    assert "huge.png is too large to decode safely" in res.stderr and "--image" in res.stderr


# ------------------------------------------------------------------------------------- damaged index files


@pytest.mark.parametrize(
    ("name", "backend", "expected"),
    [
        ("vectors.npy", "flat", r"vectors\.npy is truncated or not a \.npy array"),
        ("faiss.index", "faiss", r"faiss\.index is not a readable faiss index \(truncated or corrupt"),
        ("ids.json", "flat", r"ids\.json is truncated or not JSON"),
        ("items.jsonl", "flat", r"items\.jsonl, line 16: "),
    ],
)
def test_info_and_search_name_a_truncated_file(
    color_jsonl: Path, tmp_path: Path, name: str, backend: str, expected: str
) -> None:
    if backend == "faiss":
        pytest.importorskip("faiss")
    out = tmp_path / "idx"
    build(color_jsonl, out, "--backend", backend, *(["--factory", "Flat"] if backend == "faiss" else []))
    assert invoke("info", out).exit_code == 0
    file = out / name
    file.write_bytes(file.read_bytes()[: file.stat().st_size - 7])
    res = invoke("info", out)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.stderr.startswith("error: ") and re.search(expected, res.stderr), res.stderr
    res = invoke("search", out, "--text", "red", "-k", "1")
    assert res.exit_code == 2 and name in res.stderr


def test_info_reports_the_documented_keys(color_jsonl: Path, tmp_path: Path) -> None:
    build(color_jsonl, tmp_path / "idx")
    info = json.loads(invoke("info", tmp_path / "idx").stdout)
    documented = ["format", "format_version", "backend", "backend_config", "embedder", "dim", "count", "modalities"]
    documented += ["created", "updated", "versions", "path", "files", "size_bytes"]
    assert sorted(info) == sorted(documented)
    config = json.loads((tmp_path / "idx" / "lumir.json").read_text())
    assert {k: info[k] for k in config} == config


# ------------------------------------------------------------------------------------------ search options


def test_a_damaged_llm_cache_is_an_error_before_any_model_loads(
    color_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(color_jsonl, tmp_path / "idx")
    monkeypatch.setattr("lumir.models.chat.registry.load_chat_model", _refuse_model)
    junk = tmp_path / "llm.sqlite"
    junk.write_bytes(b"not sqlite at all" * 200)
    res = invoke(
        "search", tmp_path / "idx", "--text", "red", "--rerank", "true-false:llm=smollm2", "--llm-cache", junk
    )
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"error: {junk}: the LLM cache is not a lumir LLM cache" in res.stderr
    assert "--no-llm-cache" in res.stderr and "--llm-cache PATH" in res.stderr


def test_a_modality_no_candidate_has_is_an_error(color_jsonl: Path, tmp_path: Path) -> None:
    build(color_jsonl, tmp_path / "idx")
    res = invoke("search", tmp_path / "idx", "--text", "red", "--modality", "image,text")
    assert res.exit_code == 2
    assert "no candidate has modality 'image,text'" in res.stderr and "8 image, 8 text" in res.stderr


def test_k_must_be_positive(color_jsonl: Path, tmp_path: Path) -> None:
    build(color_jsonl, tmp_path / "idx")
    for k in ("-1", "0"):
        res = invoke("search", tmp_path / "idx", "--text", "red", "-k", k)
        assert (
            res.exit_code == 2
            and "Invalid value for '-k'" in res.output
            and "greater than or equal to 1" in res.output
        )


# ------------------------------------------------------------------------------------------ index options


def test_add_refuses_build_options(color_jsonl: Path, tmp_path: Path) -> None:
    build(color_jsonl, tmp_path / "idx")
    res = invoke("index", color_jsonl, tmp_path / "idx", "--add", "--embedder", "hash", "--factory", "Flat")
    assert res.exit_code == 2
    assert "--embedder, --factory cannot be used with --add" in res.stderr


def test_an_existing_out_is_refused_before_any_model_loads(
    color_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(color_jsonl, tmp_path / "idx")
    monkeypatch.setattr("lumir.cli.main._load_embedder", _refuse_model)
    res = invoke("index", color_jsonl, tmp_path / "idx", "--embedder", "minilm")
    assert res.exit_code == 2 and "already exists" in res.stderr and "--overwrite" in res.stderr
    assert "--add" in res.stderr and "overwrite=True" not in res.stderr


def test_an_ivf_larger_than_the_corpus_is_refused_before_embedding(
    color_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("faiss")
    monkeypatch.setattr("lumir.cli.main._load_embedder", _refuse_model)
    res = invoke("index", color_jsonl, tmp_path / "idx", "--backend", "faiss", "--factory", "IVF64,Flat")
    assert res.exit_code == 2
    assert "'IVF64,Flat' has 64 inverted lists but the corpus has only 16 items" in res.stderr
    assert not (tmp_path / "idx").exists() and not (tmp_path / "idx.partial").exists()


# ------------------------------------------------------------------------------------------------ output


def test_progress_in_a_log_has_no_cursor_codes_and_quiet_has_none(color_jsonl: Path, tmp_path: Path) -> None:
    res = invoke("index", color_jsonl, tmp_path / "a", "--embedder", "color")
    assert res.exit_code == 0, res.output
    assert "\r" not in res.stderr and "\x1b[" not in res.stderr and "it/s" not in res.stderr and "|" not in res.stderr
    assert "embedding a.partial: 16/16 item (100%), done" in res.stderr  # one plain line at the end
    res = invoke("--quiet", "index", color_jsonl, tmp_path / "b", "--embedder", "color")
    assert res.exit_code == 0 and res.stderr == "" and "indexed 16 items" in res.stdout


class _CrashingColor(ColorEmbedder):
    """ColorEmbedder (same spec) that crashes on its second embed call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def embed(self, items: Any, *, role: Any, batch_size: int = 32) -> Any:
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return super().embed(items, role=role, batch_size=batch_size)


def test_an_interrupted_build_resumes_and_says_so_without_verbose(color_jsonl: Path, tmp_path: Path) -> None:
    from lumir.data.sources import load_corpus
    from lumir.index import build_index

    out = tmp_path / "idx"
    with pytest.raises(KeyboardInterrupt):
        build_index(load_corpus(color_jsonl), _CrashingColor(), out, shard_size=4, show_progress=False)
    assert (tmp_path / "idx.partial" / "shard-00000.npy").is_file()
    res = invoke("index", color_jsonl, out, "--embedder", "color", "--shard-size", "4")
    assert res.exit_code == 0, res.output
    assert f"resuming the build in {tmp_path / 'idx.partial'}: 4 of 16 items already embedded" in res.stderr
    assert not (tmp_path / "idx.partial").exists()
    clean = tmp_path / "clean"
    build(color_jsonl, clean)
    np.testing.assert_array_equal(np.load(out / "vectors.npy"), np.load(clean / "vectors.npy"))

    with pytest.raises(KeyboardInterrupt):
        build_index(load_corpus(color_jsonl), _CrashingColor(), tmp_path / "q", shard_size=4, show_progress=False)
    res = invoke("-q", "index", color_jsonl, tmp_path / "q", "--embedder", "color", "--shard-size", "4")
    assert res.exit_code == 0 and "resuming" not in res.stderr


def test_a_partial_build_for_another_shard_size_is_replaced_with_a_warning(color_jsonl: Path, tmp_path: Path) -> None:
    from lumir.data.sources import load_corpus
    from lumir.index import build_index

    with pytest.raises(KeyboardInterrupt):
        build_index(load_corpus(color_jsonl), _CrashingColor(), tmp_path / "idx", shard_size=4, show_progress=False)
    res = invoke("-q", "index", color_jsonl, tmp_path / "idx", "--embedder", "color", "--shard-size", "8")
    assert res.exit_code == 0, res.output
    assert "warning: discarding the interrupted build in" in res.stderr and "shard_size=4, not 8" in res.stderr
