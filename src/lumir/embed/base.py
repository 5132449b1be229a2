"""BaseEmbedder: the machinery every model-backed embedder shares.

``embed(items, role=..., batch_size=...)`` does, in order:

1. **Modality check, up front.** Items whose modality the embedder cannot handle raise :class:`ModalityError`
   naming the first few offending ids and the supported modalities, before any model work.
2. **Instructions** (queries only; :mod:`lumir.embed.instructions`). An image-only query with an instruction
   becomes an image+text input, as in UniIR.
3. **Batching by modality and length.** Inputs are grouped by modality; text and image+text groups are sorted by
   text length (longest first, as sentence-transformers does, so an out-of-memory shows up in the first batch and
   padding is minimal); images are batched together. Results are scattered back to input order.
4. **Encoding** under ``torch.inference_mode()`` on the chosen device/dtype, images decoded lazily per batch via
   ``ImageRef.load()`` (a missing/corrupt file raises :class:`ImageLoadError` naming the item id).
5. **Output**: a float32 CPU tensor ``(len(items), dim)``, L2-normalised row by row.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from lumir.embed.instructions import UNIIR_TEMPLATE, InstructionSet, apply_instruction, resolve_instruction
from lumir.errors import ImageLoadError, ModalityError
from lumir.models.hub import dtype_name, resolve_device, resolve_dtype
from lumir.models.pooling import l2_normalize
from lumir.progress import progress
from lumir.types import ImageRef, Item, Modality, Role

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["AUTO_PROGRESS_MIN_ITEMS", "BaseEmbedder", "EmbedInput", "as_instruction_set"]

logger = logging.getLogger(__name__)

AUTO_PROGRESS_MIN_ITEMS = 1000
"""With ``show_progress=None`` a progress bar appears only from this many items on."""

_MODALITY_ORDER = (Modality.TEXT, Modality.IMAGE, Modality.IMAGE_TEXT)
_MAX_IDS_IN_ERRORS = 5


@dataclass(frozen=True, slots=True)
class EmbedInput:
    """What the model sees for one item, after instructions: its position in the input, id, text and image."""

    position: int
    item_id: str
    text: str | None
    image: ImageRef | None

    @property
    def modality(self) -> Modality:
        """Modality of the prepared input (may differ from the item's after an instruction is applied)."""
        if self.text is not None and self.image is not None:
            return Modality.IMAGE_TEXT
        return Modality.IMAGE if self.image is not None else Modality.TEXT


def as_instruction_set(value: InstructionSet | Mapping[str, Any] | str | Path | None) -> InstructionSet | None:
    """Accept an InstructionSet, a dict (``{task: prompt(s)}``, :meth:`InstructionSet.to_dict` output, or
    ``{"path": TSV, "choice": "random", "seed": 0}``), or the path of an M-BEIR ``query_instructions.tsv``.

    UniIR draws a random instruction per query at evaluation as well as in training (see
    :mod:`lumir.embed.instructions`); a bare path gives ``choice="first"``, the dict form reaches ``"random"``."""
    if value is None or isinstance(value, InstructionSet):
        return value
    if isinstance(value, Mapping):
        return InstructionSet.from_dict(value)
    return InstructionSet.from_mbeir_tsv(value)


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_MAX_IDS_IN_ERRORS])
    more = f", ... ({len(ids) - _MAX_IDS_IN_ERRORS} more)" if len(ids) > _MAX_IDS_IN_ERRORS else ""
    return f"[{shown}{more}]"


class BaseEmbedder(ABC):
    """Shared machinery of model-backed embedders (see the module docstring).

    Subclasses set :attr:`modalities`, :attr:`type_name` and :attr:`dim` and implement :meth:`_encode_batch`
    and :meth:`_source_spec`.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (GPU when there is one).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``: the model runs in it; outputs are float32.
        instructions: task instructions for queries (an :class:`InstructionSet`, a dict, or an M-BEIR tsv path).
        instruction_template: ``"uniir"`` (default, UniIR's ``format_string(f"{instruction} {text}")``) or a
            ``str.format`` template with ``{instruction}`` and ``{text}``.
        show_progress: show progress (:mod:`lumir.progress`); None shows it only for
            :data:`AUTO_PROGRESS_MIN_ITEMS` items or more.
        sort_by_length: sort text by length before batching (results are identical either way; sorting is
            faster because batches pad less). Skipped when everything fits in one batch.
    """

    modalities: frozenset[Modality] = frozenset()
    type_name: ClassVar[str] = ""
    dim: int

    def __init__(
        self,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        instructions: InstructionSet | Mapping[str, Any] | str | Path | None = None,
        instruction_template: str = UNIIR_TEMPLATE,
        show_progress: bool | None = None,
        sort_by_length: bool = True,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, device=self.device)
        self.instructions = as_instruction_set(instructions)
        if instruction_template != UNIIR_TEMPLATE and "{instruction}" not in instruction_template:
            raise ValueError(
                f"instruction_template {instruction_template!r} has no {{instruction}} field; "
                f"use {UNIIR_TEMPLATE!r} or e.g. 'Instruct: {{instruction}}\\nQuery: {{text}}'"
            )
        self.instruction_template = instruction_template
        self.show_progress = show_progress
        self.sort_by_length = sort_by_length

    # ---------------------------------------------------------------- subclass hooks
    @abstractmethod
    def _encode_batch(self, batch: Sequence[EmbedInput]) -> torch.Tensor:
        """Encode one batch of inputs that share a modality: ``(len(batch), dim)``, normalised or not."""

    @abstractmethod
    def _source_spec(self) -> dict[str, Any]:
        """The spec entries that locate the model (``{"type": ..., "path": ...}``)."""

    def _options_spec(self) -> dict[str, Any]:
        """Subclass options that change embeddings (added to :meth:`spec`)."""
        return {}

    # ---------------------------------------------------------------- public API
    def embed(self, items: Sequence[Item], *, role: Role | str, batch_size: int = 32) -> torch.Tensor:
        """Embed items for a role: a float32 CPU tensor ``(len(items), dim)`` with unit-norm rows.

        Raises:
            ModalityError: some item (or instructed query) has a modality this embedder cannot embed.
            ImageLoadError: an image could not be decoded; the message names the item id.
            ValueError: ``batch_size`` < 1.
        """
        role = Role(role)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.check_modalities(items)
        inputs = self.prepare(items, role)
        self.warn_truncated(inputs)
        out = torch.zeros(len(inputs), self.dim, dtype=torch.float32)  # (n, dim), a normal (non-inference) tensor
        if not inputs:
            return out
        batches = self.plan_batches(inputs, batch_size)
        show = len(inputs) >= AUTO_PROGRESS_MIN_ITEMS if self.show_progress is None else self.show_progress
        with torch.inference_mode(), progress(total=len(inputs), desc=f"embed {role.value}s", unit="item",
                                             enabled=show) as bar:  # fmt: skip
            for batch in batches:
                vectors = self._encode_batch(batch).to(device="cpu", dtype=torch.float32)  # (b, dim)
                if vectors.shape != (len(batch), self.dim):
                    raise RuntimeError(
                        f"{type(self).__name__} returned shape {tuple(vectors.shape)} for a batch of {len(batch)}; "
                        f"expected ({len(batch)}, {self.dim})"
                    )
                out[[inp.position for inp in batch]] = l2_normalize(vectors)
                bar.update(len(batch))
        return out

    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description from which :func:`lumir.embed.load_embedder` rebuilds this embedder.

        The device is not part of the spec (pass ``device=`` to ``load_embedder``); the dtype is, since it
        changes the vectors.
        """
        out: dict[str, Any] = {"type": self.type_name, **self._source_spec(), **self._options_spec()}
        out["dtype"] = dtype_name(self.dtype)
        if self.instructions is not None:
            out["instructions"] = self.instructions.to_dict()
        if self.instruction_template != UNIIR_TEMPLATE:
            out["instruction_template"] = self.instruction_template
        return out

    # ---------------------------------------------------------------- steps (public for reuse and tests)
    def check_modalities(self, items: Sequence[Item]) -> None:
        """Raise :class:`ModalityError` naming the items whose modality is unsupported."""
        bad: dict[Modality, list[str]] = {}
        for item in items:
            if item.modality not in self.modalities:
                bad.setdefault(item.modality, []).append(item.id)
        if bad:
            detail = "; ".join(f"{len(ids)} {m.value} item(s) {_ids(ids)}" for m, ids in bad.items())
            raise ModalityError(
                f"{type(self).__name__} cannot embed {detail}. Supported modalities: "
                f"{sorted(m.value for m in self.modalities)}. Filter the items or use an embedder that supports them."
            )

    def prepare(self, items: Sequence[Item], role: Role) -> list[EmbedInput]:
        """Apply instructions (queries only) and return one :class:`EmbedInput` per item, in input order."""
        inputs: list[EmbedInput] = []
        for position, item in enumerate(items):
            text = item.text
            if role is Role.QUERY:
                instruction = resolve_instruction(item, self.instructions)
                if instruction:
                    text = apply_instruction(item.text, instruction, self.instruction_template)
            inputs.append(EmbedInput(position, item.id, text, item.image))
        bad = [inp.item_id for inp in inputs if inp.modality not in self.modalities]
        if bad:
            raise ModalityError(
                f"{type(self).__name__} cannot embed instructed queries {_ids(bad)}: the instruction turns an "
                f"image query into image+text, and supported modalities are {sorted(m.value for m in self.modalities)}"
            )
        return inputs

    def text_token_limit(self) -> int | None:
        """How many tokens (special tokens included) a text may have before the model truncates it; None when the
        embedder does not truncate or cannot tell. Embedders that say implement :meth:`text_token_counts` too."""
        return None

    def text_token_counts(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token counts (special tokens included) of texts as the model would tokenise them."""
        raise NotImplementedError

    def warn_truncated(self, inputs: Sequence[EmbedInput]) -> int:
        """Log one warning when texts are longer than :meth:`text_token_limit` (they are cut); return how many.

        Only texts that could be too long are tokenised: a token covers at least one UTF-8 byte.
        """
        limit = self.text_token_limit()
        if limit is None:
            return 0
        texts = [(inp.item_id, inp.text) for inp in inputs if inp.text]
        maybe = [(i, t) for i, t in texts if len(t.encode("utf-8")) + 8 > limit]
        if not maybe:
            return 0
        counts = self.text_token_counts([t for _, t in maybe])
        long = [(i, n) for (i, _), n in zip(maybe, counts, strict=True) if n > limit]
        if long:
            logger.warning(
                "%d of %d texts are longer than %d tokens and were truncated (first: item %r, %d tokens); "
                "%s sees only their first %d tokens",
                len(long),
                len(texts),
                limit,
                long[0][0],
                long[0][1],
                type(self).__name__,
                limit,
            )
        return len(long)

    def input_key(self, item: Item, role: Role) -> tuple[Any, ...]:
        """What the model is fed for ``item`` in ``role`` (text after the instruction, image identity).

        Equal keys give equal vectors, so a query without an instruction shares its key with the same item as a
        candidate (:class:`~lumir.embed.memo.MemoEmbedder` embeds it once).
        """
        from lumir.embed.memo import image_key

        [inp] = self.prepare([item], Role(role))
        return (inp.text, image_key(inp.image))

    def length_keys(self, group: Sequence[EmbedInput]) -> list[int]:
        """Sort keys of a text or image+text group: character length (:class:`TextEmbedder` counts tokens)."""
        return [len(inp.text or "") for inp in group]

    def plan_batches(self, inputs: Sequence[EmbedInput], batch_size: int) -> list[list[EmbedInput]]:
        """Group by modality, sort text longest-first (when :attr:`sort_by_length`), cut into batches."""
        batches: list[list[EmbedInput]] = []
        for modality in _MODALITY_ORDER:
            group = [inp for inp in inputs if inp.modality is modality]
            if self.sort_by_length and modality is not Modality.IMAGE and len(group) > batch_size:
                keys = self.length_keys(group)
                order = sorted(range(len(group)), key=lambda i: -keys[i])  # stable: ties keep input order
                group = [group[i] for i in order]
            batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
        return batches

    @staticmethod
    def load_images(batch: Sequence[EmbedInput]) -> list[PILImage.Image]:
        """Decode the images of a batch (RGB), naming the item in any :class:`ImageLoadError`."""
        images = []
        for inp in batch:
            if inp.image is None:
                raise ValueError(f"item {inp.item_id!r} has no image")
            try:
                images.append(inp.image.load())
            except ImageLoadError as err:
                raise ImageLoadError(f"item {inp.item_id!r}: {err}") from err
        return images

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, device={self.device}, dtype={dtype_name(self.dtype)})"
