"""Where models come from and where they run: local-only model resolution, device and dtype choice.

lumir never downloads weights at run time. Every model is a local directory; a hub id such as
``openai/clip-vit-base-patch32`` is refused with a message saying how to fetch it elsewhere. Every
``from_pretrained`` call in lumir passes ``local_files_only=True`` and runs inside :func:`quiet_loading`, so
transformers' "Loading weights" bars and info chatter never reach lumir's output.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from lumir.errors import ModelNotFoundError

__all__ = ["DTYPES", "dtype_name", "quiet_loading", "resolve_device", "resolve_dtype", "resolve_local_model"]

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
"""The dtypes an embedder may run its model in (outputs are always float32)."""


_quiet: dict[str, Any] = {"depth": 0, "bars": True, "hub_bars": True, "verbosity": None}
_quiet_lock = threading.Lock()


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence transformers' progress bars ("Loading weights") and info logging while models load.

    The previous state (bars on or off, verbosity) is restored afterwards; nested and concurrent uses restore it
    once, when the last one ends. Warnings and errors still show.

    Example:
        >>> from transformers.utils import logging as hf_logging
        >>> before = hf_logging.is_progress_bar_enabled()
        >>> with quiet_loading():
        ...     hf_logging.is_progress_bar_enabled()
        False
        >>> hf_logging.is_progress_bar_enabled() == before
        True
    """
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    with _quiet_lock:
        if _quiet["depth"] == 0:
            _quiet["bars"] = hf_logging.is_progress_bar_enabled()
            _quiet["hub_bars"] = not hub_utils.are_progress_bars_disabled()
            _quiet["verbosity"] = hf_logging.get_verbosity()
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity(max(int(_quiet["verbosity"]), hf_logging.WARNING))
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                hf_logging.set_verbosity(int(_quiet["verbosity"]))
                if _quiet["bars"]:
                    hf_logging.enable_progress_bar()  # turns huggingface_hub's bars on as well
                if _quiet["hub_bars"] != (not hub_utils.are_progress_bars_disabled()):
                    (hub_utils.enable_progress_bars if _quiet["hub_bars"] else hub_utils.disable_progress_bars)()


def resolve_local_model(name_or_path: str | Path, *, what: str = "model") -> Path:
    """Return the local directory holding a model, or explain why there is none.

    Args:
        name_or_path: a local directory (``~`` is expanded).
        what: what the directory should hold, for the message (e.g. ``"CLIP model"``).

    Returns:
        The resolved directory.

    Raises:
        ModelNotFoundError: ``name_or_path`` is not an existing directory (a hub id, a missing path or a file).

    Example:
        >>> resolve_local_model("openai/clip-vit-base-patch32")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lumir.errors.ModelNotFoundError: ...never downloads...
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    name = str(name_or_path)
    if path.exists():
        reason = f"{what} path {name!r} is a file, not a directory"
    elif "/" in name and not name.startswith((".", "/", "~")) and len(path.parts) == 2:
        reason = f"{what} {name!r} looks like a Hugging Face hub id and is not a local directory"
    else:
        reason = f"{what} directory {name!r} does not exist"
    local = Path("models") / path.name
    raise ModelNotFoundError(
        f"{reason}. lumir never downloads models at run time: pass the path of a local directory that holds the "
        f"model files (config.json, weights, tokenizer). To get one, run on a machine with network access "
        f"`huggingface-cli download {name} --local-dir {local}` and copy that directory here."
    )


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """Turn ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` into a usable torch device.

    ``"auto"`` picks the first CUDA device when one exists, else the CPU.

    Raises:
        RuntimeError: CUDA was asked for but is not available, or the device index does not exist.
        ValueError: the string is not a device name.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device={str(device)!r} was requested but CUDA is not available "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False). "
                "Pass device='cpu', or device='auto' to use a GPU only when there is one."
            )
        count = torch.cuda.device_count()
        index = 0 if dev.index is None else dev.index
        if index >= count:
            raise RuntimeError(
                f"device={str(device)!r} was requested but only {count} CUDA device(s) exist "
                f"(cuda:0..cuda:{count - 1}); pass one of those or device='auto'."
            )
        return torch.device("cuda", index)
    if dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    return dev


def resolve_dtype(dtype: str | torch.dtype = "float32", *, device: torch.device | None = None) -> torch.dtype:
    """Turn ``"float32"``, ``"bfloat16"`` or ``"float16"`` (or a torch dtype) into a torch dtype.

    Raises:
        ValueError: an unsupported dtype name.
    """
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}; use one of {sorted(DTYPES)}")
        out = dtype
    else:
        try:
            out = DTYPES[str(dtype)]
        except KeyError:
            raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(DTYPES)}") from None
    if out == torch.float16 and device is not None and device.type == "cpu":
        logger.warning("float16 on CPU is slow and imprecise; prefer dtype='bfloat16' or 'float32' there")
    return out


def dtype_name(dtype: torch.dtype) -> str:
    """The lumir name of a torch dtype (inverse of :func:`resolve_dtype`)."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"unsupported dtype {dtype}; use one of {sorted(DTYPES)}")
