"""Trained-rewriter folders: a full causal LM or a LoRA adapter over a base, described by ``lumir_rewriter.json``.

Layout of a folder the trainers write (and :class:`lumir.rewrite.trained.TrainedRewriter` loads)::

    lumir_rewriter.json        {"format": "lumir-rewriter/1", "stage": "sft|pro|ppo|grpo", "adapter": true,
                                "base": "<base model folder>", "prompt": "mgqre-rewriter/1", "parent": ...,
                                "config": {...training config...}, "metrics": {...}, "versions": {...}}
    adapter_config.json, adapter_model.safetensors     (peft, when adapter)
    config.json, model.safetensors                     (transformers, when full)
    tokenizer files

A plain ``transformers`` causal-LM folder without the manifest loads too (an untrained base as a rewriter).
Offline names (``smollm2``) resolve to a transformers folder converted once from the packaged GGUF into
``$LUMIR_HOME/hf/<name>`` (dequantised float32), so trainers and rewriters need no download.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lumir.errors import DataFormatError, ModelNotFoundError

__all__ = ["MANIFEST", "REWRITER_FORMAT", "base_model_folder", "load_rewriter_model", "read_manifest", "save_rewriter"]

REWRITER_FORMAT = "lumir-rewriter/1"
MANIFEST = "lumir_rewriter.json"


def base_model_folder(spec: str | Path) -> Path:
    """A local transformers folder for ``spec``: a folder as it is, or an offline LLM name converted once.

    Raises:
        ModelNotFoundError: neither a folder nor a known offline LLM name.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    from lumir.models.chat.registry import OFFLINE_LLMS, gguf_path, lumir_home, offline_llm

    name = str(spec)
    try:
        entry = offline_llm(name)
    except (KeyError, ValueError) as err:
        raise ModelNotFoundError(
            f"rewriter base {name!r} is neither a local transformers folder nor an offline LLM "
            f"({sorted(OFFLINE_LLMS)})"
        ) from err
    out = lumir_home() / "hf" / entry.name
    if (out / "config.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lumir.models.hub import quiet_loading

    gguf = gguf_path(entry.name)
    kwargs: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, **kwargs, **_dense_gguf())
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # a GGUF quantizer left on the model refuses save_pretrained
        quantizer.remove_quantization_config(model)
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")  # concurrent conversions do not share a folder
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(out)
    except OSError:
        if not (out / "config.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    return out


def _dense_gguf() -> dict[str, Any]:
    """``from_pretrained`` options that unpack a GGUF file into a plain dense (saveable, trainable) model: recent
    transformers otherwise keep the weights in GGUF blocks behind a quantizer that cannot be saved or trained."""
    try:
        from transformers.utils.quantization_config import GgufConfig
    except ImportError:  # older transformers always dequantise
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The folder's ``lumir_rewriter.json``, or None for a plain transformers folder."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"not JSON ({err})", path=file) from err
    if manifest.get("format") != REWRITER_FORMAT:
        raise DataFormatError(f"format is {manifest.get('format')!r}, expected {REWRITER_FORMAT!r}", path=file)
    return dict(manifest)


def load_rewriter_model(
    path: str | Path, *, trainable: bool = False, dtype: str = "float32"
) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, tokenizer, manifest)`` of a rewriter folder, an offline name or a plain causal-LM folder.

    Args:
        trainable: load a LoRA adapter with its weights trainable (to continue training it).

    Raises:
        ModelNotFoundError: the folder (or an adapter's base folder) does not exist.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lumir.models.hub import resolve_dtype

    folder = base_model_folder(path)
    manifest = read_manifest(folder) or {
        "format": REWRITER_FORMAT,
        "stage": "base",
        "adapter": False,
        "base": str(folder),
    }
    torch_dtype = resolve_dtype(dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if manifest.get("adapter"):
        from lumir._deps import require

        require("peft", extra="train")
        from peft import PeftModel

        base = base_model_folder(manifest["base"])
        model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype, local_files_only=True)
        model = PeftModel.from_pretrained(model, folder, is_trainable=trainable)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, manifest


def save_rewriter(
    model: Any,
    tokenizer: Any,
    path: str | Path,
    *,
    stage: str,
    base: str | Path,
    config: Mapping[str, Any] | None = None,
    parent: str | Path | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Save ``model`` (a peft model saves its adapter only) with its tokenizer and a self-describing manifest."""
    from lumir.config import versions
    from lumir.rewrite.prompts import TRAINED

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    adapter = hasattr(model, "peft_config")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    manifest = {
        "format": REWRITER_FORMAT,
        "stage": stage,
        "adapter": adapter,
        "base": str(Path(base).resolve()) if Path(base).is_dir() else str(base),
        "prompt": TRAINED.version,
        "parent": str(parent) if parent is not None else None,
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
        "versions": versions("transformers", "peft", "trl"),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    return out
