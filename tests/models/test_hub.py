"""Local-only model resolution, device and dtype choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lumir.errors import ModelNotFoundError
from lumir.models.hub import dtype_name, resolve_device, resolve_dtype, resolve_local_model


def test_local_directory_is_returned(tmp_path: Path) -> None:
    assert resolve_local_model(tmp_path) == tmp_path.resolve()
    assert resolve_local_model(str(tmp_path)) == tmp_path.resolve()


def test_hub_id_is_refused_with_instructions() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_local_model("openai/clip-vit-base-patch32", what="CLIP model")
    msg = str(info.value)
    assert "hub id" in msg
    assert "never downloads" in msg
    assert "huggingface-cli download openai/clip-vit-base-patch32 --local-dir" in msg


def test_missing_path_and_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_local_model(tmp_path / "nope")
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_local_model(f)


def test_resolve_device_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu-please")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_gpu_is_a_clear_error(device: str) -> None:
    with pytest.raises(RuntimeError, match=r"CUDA is not available.*device='cpu'"):
        resolve_device(device)


@pytest.mark.gpu
def test_cuda_device_index_checked() -> None:
    assert resolve_device("cuda").type == "cuda"
    with pytest.raises(RuntimeError, match="only"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_resolve_dtype_names_round_trip() -> None:
    for name in ("float32", "bfloat16", "float16"):
        assert dtype_name(resolve_dtype(name)) == name
    assert resolve_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(ValueError, match="unsupported dtype"):
        resolve_dtype("int8")
