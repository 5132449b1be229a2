"""Local-only model resolution, device and dtype choice."""

from __future__ import annotations

from collections.abc import Iterator
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


@pytest.fixture
def hf_bars_on() -> Iterator[None]:
    """transformers' progress bars and verbosity as a fresh process has them (the CLI turns them off globally)."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.enable_progress_bar()
    hf_logging.set_verbosity(hf_logging.INFO)
    yield
    hf_logging.set_verbosity(verbosity)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()


def test_lumir_loaders_print_no_loading_weights_bar(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], hf_bars_on: None
) -> None:
    from transformers import CLIPModel
    from transformers.utils import logging as hf_logging

    from lumir.models.chat.hf import TransformersChatModel
    from lumir.models.clip import ClipTowers
    from lumir.testing.tiny import save_tiny_clip, save_tiny_lm

    clip, lm = save_tiny_clip(tmp_path / "clip"), save_tiny_lm(tmp_path / "lm")
    capfd.readouterr()
    CLIPModel.from_pretrained(str(clip), local_files_only=True)  # the control: transformers alone shows its bar
    assert "Loading weights" in capfd.readouterr().err
    ClipTowers.from_pretrained(clip)
    TransformersChatModel.from_pretrained(lm)
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "\r" not in err
    assert hf_logging.is_progress_bar_enabled() and hf_logging.get_verbosity() == hf_logging.INFO  # restored


def test_quiet_loading_nests_and_restores_on_error(hf_bars_on: None) -> None:
    from transformers.utils import logging as hf_logging

    from lumir.models.hub import quiet_loading

    with pytest.raises(RuntimeError), quiet_loading():
        with quiet_loading():
            assert not hf_logging.is_progress_bar_enabled()
        assert not hf_logging.is_progress_bar_enabled()  # still inside the outer one
        assert hf_logging.get_verbosity() == hf_logging.WARNING
        raise RuntimeError("load failed")
    assert hf_logging.is_progress_bar_enabled() and hf_logging.get_verbosity() == hf_logging.INFO
    hf_logging.disable_progress_bar()
    with quiet_loading():
        pass
    assert not hf_logging.is_progress_bar_enabled()  # a caller's "off" stays off
