"""MLLMEmbedder: a local causal LM or vision–language model as an embedder (prompt + last-token pooling).

Any local ``transformers`` folder works: a text causal LM (``AutoModelForCausalLM`` + tokenizer; text items only)
or a vision–language model whose ``config.json`` has a ``vision_config`` (``AutoModelForImageTextToText`` +
processor, e.g. LLaVA, LLaVA-Next, Qwen2-VL; text, image and image+text items). Each item is written into a
one-word prompt, the model runs once, and the item's vector is the **last hidden state** (after the final norm) at
the **last real token** of the prompt: the last position whose attention mask is 1, so left- and right-padded
batches give the same vectors as items embedded alone (:func:`lumir.models.pooling.last_token_pool`; positions are
counted from the mask, except for M-RoPE models such as Qwen2-VL, which compute their own). Outputs are
L2-normalised by :class:`~lumir.embed.base.BaseEmbedder`.

Presets (:data:`PRESETS`; ``{content}`` is the image placeholder and the text, image first):

- ``"lamra"`` — LamRA-Ret's Explicit One-word Limitation prompts (Liu et al. 2025, "LamRA", §3.2): the user turn
  ``<image><text>\\nSummarize above {sentence|image|image and sentence} in one word: `` in the model's chat
  template with the assistant turn opened. The paper writes the prompt as ``<text> Summarize above sentence in one
  word: <emb>``; the official code puts ``\\n`` before "Summarize", a trailing space after the colon, and the
  assistant answer ``<emb>.`` after the generation prompt, and takes the hidden state at the position *before*
  ``<emb>``. That position is the last token of the prompt rendered with ``add_generation_prompt=True`` (a causal
  model's states before ``<emb>`` do not depend on it), so no ``<emb>`` token is added to the vocabulary and the
  vectors are identical. Instructions are prepended to the text as in M-BEIR/UniIR (``"{instruction} {text}"``),
  which is what LamRA's data code does; an instructed image query thus becomes image+text.
- ``"mmembed-e"`` — MM-Embed's LLaVa-E (Lin et al. 2024, "MM-Embed", §5.1 and Table 11): raw text, no chat
  template, the tokenizer's ``<eos>`` appended and pooled: queries ``<inst>\\nQuery: <content><eos>``, candidates
  (and queries without an instruction) ``<content><eos>``, ``<content>`` = image and text joined by ``\\n``.
- ``"mmembed-p"`` — MM-Embed's LLaVa-P (Table 12): candidates ``<content>\\nDescribe the above in one word:``;
  instructed queries ``[<desired modality>] <content>\\n<instruction>`` where the instruction is a Table 12 one-word
  prompt (e.g. ``"Describe the everyday caption in one word:"``, pass them as ``instructions=``) and the desired
  modality is ``query.meta["cand_modality"]`` (M-BEIR's, omitted when unknown). The prompt goes into the chat
  template because MM-Embed follows E5-V (Jiang et al. 2024), which prompts LLaVA-Next through its chat format.
- a custom :class:`PromptFormat` (``template=``): a ``str.format`` string (or a dict of :class:`PromptFormat`
  fields) with ``{content}`` and optionally ``{what}`` (sentence/image/image and sentence), ``{instruction}`` and
  ``{target}`` (``"[image] "`` or ``""``).

Queries without an instruction use the candidate prompt, so they embed exactly like the same item as a candidate.
With ``chat_template=None`` a preset's own choice holds; the chat template is used only when the model has one.
``max_length`` caps the text tokens of a prompt (an image placeholder counts as one token): the item's text is cut,
never the template around it, so the ``in one word:`` suffix and ``<eos>`` always survive.

Training contract (:class:`lumir.train` embedder trainers): :attr:`MLLMEmbedder.model` is the ``transformers``
model (it may be replaced by a peft model); ``prepare(items, role)`` then ``forward_inputs(inputs, role)`` gives
differentiable, unnormalised ``(n, hidden)`` embeddings, the same code path as :meth:`~BaseEmbedder.embed`;
:meth:`MLLMEmbedder.save` writes a folder that ``load_embedder("mllm:PATH")`` restores (a LoRA adapter and a
``lumir_embedder.json`` manifest naming its base, or a full model).

Example:
    >>> from lumir.testing.tiny import build_tiny_lm
    >>> e = MLLMEmbedder(*build_tiny_lm(), preset="lamra")
    >>> e.embed([Item("t", text="a red dog")], role="candidate").shape
    torch.Size([1, 16])
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from lumir.embed.base import BaseEmbedder, EmbedInput
from lumir.embed.instructions import UNIIR_TEMPLATE, InstructionSet, apply_instruction, resolve_instruction
from lumir.errors import DataFormatError, ModalityError
from lumir.models.hub import dtype_name, quiet_loading, resolve_dtype, resolve_local_model
from lumir.models.pooling import last_token_pool
from lumir.types import Item, Modality, Role

__all__ = ["MANIFEST", "MANIFEST_FORMAT", "PRESETS", "MLLMEmbedder", "MLLMInput", "PromptFormat"]

logger = logging.getLogger(__name__)

MANIFEST = "lumir_embedder.json"
MANIFEST_FORMAT = "lumir-mllm-embedder/1"
_IMG, _TXT = "\ue000", "\ue001"  # private-use sentinels marking where the image and the text go
_WHAT = {Modality.TEXT: "sentence", Modality.IMAGE: "image", Modality.IMAGE_TEXT: "image and sentence"}
_MROPE_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


@dataclass(frozen=True)
class PromptFormat:
    """How items become prompts (see the module docstring for the fields of the templates).

    Attributes:
        candidate: template for candidates and for queries without an instruction.
        query: template for queries with an instruction.
        joiner: between the image placeholder and the text inside ``{content}``.
        chat: put the prompt as the user turn of the chat template with the assistant turn opened.
        append_eos: append the tokenizer's eos token (pooled, as LLaVa-E does).
        instruction_in_text: apply instructions to the text (UniIR/LamRA) instead of the ``{instruction}`` slot.
        source: where the format comes from.
    """

    name: str
    candidate: str
    query: str
    joiner: str = "\n"
    chat: bool = True
    append_eos: bool = False
    instruction_in_text: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        for which in ("candidate", "query"):
            template = getattr(self, which)
            if "{content}" not in template:
                raise ValueError(f"prompt template {which}={template!r} has no {{content}} field")
            try:
                template.format(content="", what="", instruction="", target="")
            except (KeyError, IndexError, ValueError) as err:
                raise ValueError(
                    f"prompt template {which}={template!r} is not a str.format template over "
                    f"{{content}}, {{what}}, {{instruction}}, {{target}}: {err!r}"
                ) from None

    @classmethod
    def parse(cls, value: str | Mapping[str, Any] | PromptFormat) -> PromptFormat:
        """A :class:`PromptFormat` from itself, a dict of its fields, or one template string for both roles (queries
        then get instructions in the ``{instruction}`` slot when the string has one, else prepended to the text)."""
        if isinstance(value, PromptFormat):
            return value
        if isinstance(value, str):
            return cls("custom", value, value, instruction_in_text="{instruction}" not in value)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown prompt format field(s) {unknown}; use some of {sorted(known)}")
        data = {"name": "custom", **value}
        data.setdefault("query", data.get("candidate", ""))
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_LAMRA = "{content}\nSummarize above {what} in one word: "
PRESETS: dict[str, PromptFormat] = {
    "lamra": PromptFormat(
        "lamra", _LAMRA, _LAMRA, joiner="", chat=True, instruction_in_text=True,
        source="LamRA (Liu et al. 2025) §3.2 EOL prompts, as in the official code",
    ),
    "mmembed-e": PromptFormat(
        "mmembed-e", "{content}", "{instruction}\nQuery: {content}", chat=False, append_eos=True,
        source="MM-Embed (Lin et al. 2024) §5.1 LLaVa-E, Table 11",
    ),
    "mmembed-p": PromptFormat(
        "mmembed-p", "{content}\nDescribe the above in one word:", "{target}{content}\n{instruction}", chat=True,
        source="MM-Embed (Lin et al. 2024) §5.1 LLaVa-P, Table 12",
    ),
}  # fmt: skip
"""Named prompt formats (module docstring)."""


@dataclass(frozen=True, slots=True)
class MLLMInput(EmbedInput):
    """An :class:`EmbedInput` that remembers its role, its query instruction (when the format has a slot for it)
    and the query's desired candidate modality (``{target}``)."""

    role: Role = Role.CANDIDATE
    instruction: str | None = None
    target: str | None = None


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's ``lumir_embedder.json``, or None."""
    file = folder / MANIFEST
    if not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"not JSON ({err})", path=file) from err
    if manifest.get("format") != MANIFEST_FORMAT:
        raise DataFormatError(f"format is {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}", path=file)
    return dict(manifest)


def load_hf_model(folder: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    """``(model, processor_or_tokenizer)`` of a local folder: a vision–language model when the config has a
    ``vision_config``, else a causal LM."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} holds no config.json: not a transformers model folder")
    with quiet_loading():
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        if getattr(config, "vision_config", None) is not None:
            model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype, local_files_only=True)
            return model, AutoProcessor.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
        return model, AutoTokenizer.from_pretrained(folder, local_files_only=True)


class MLLMEmbedder(BaseEmbedder):
    """Embeds items with a causal LM or vision–language model through a one-word prompt (module docstring).

    Args:
        model: a ``transformers`` causal LM or image-text-to-text model (moved to ``device``/``dtype``, eval mode).
        processor: its tokenizer (text LM) or processor (vision–language model).
        preset: ``"lamra"`` (default), ``"mmembed-e"`` or ``"mmembed-p"`` (:data:`PRESETS`).
        template: a custom :class:`PromptFormat`, dict or template string (overrides ``preset``).
        chat_template: force the chat template on (True) or off (False); None keeps the format's choice.
        max_length: most text tokens per prompt (the item's text is cut, never the template); None: no cut.
        padding_side: ``"right"`` (default) or ``"left"``; vectors are the same either way.
        base_path: the folder the weights came from (:meth:`from_pretrained` sets it; :meth:`save` of an adapter
            needs it).
        **options: :class:`~lumir.embed.base.BaseEmbedder` options (device, dtype, instructions, ...).
    """

    type_name = "mllm"

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        preset: str = "lamra",
        template: str | Mapping[str, Any] | PromptFormat | None = None,
        chat_template: bool | None = None,
        max_length: int | None = None,
        padding_side: str = "right",
        base_path: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        instructions: InstructionSet | Mapping[str, Any] | str | Path | None = None,
        instruction_template: str = UNIIR_TEMPLATE,
        show_progress: bool | None = None,
        sort_by_length: bool = True,
    ) -> None:
        super().__init__(
            device=device,
            dtype=dtype,
            instructions=instructions,
            instruction_template=instruction_template,
            show_progress=show_progress,
            sort_by_length=sort_by_length,
        )
        if template is None and preset not in PRESETS:
            raise ValueError(f"unknown MLLM embedder preset {preset!r}; use one of {sorted(PRESETS)} or template=")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.format = PRESETS[preset] if template is None else PromptFormat.parse(template)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = padding_side
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        config = model.config
        self.is_vlm = getattr(config, "vision_config", None) is not None and hasattr(processor, "image_processor")
        self.modalities = frozenset(Modality) if self.is_vlm else frozenset({Modality.TEXT})
        text_config = config.get_text_config()
        self.dim = int(text_config.hidden_size)
        rope = getattr(text_config, "rope_parameters", None) or getattr(text_config, "rope_scaling", None) or {}
        self._positions = config.model_type not in _MROPE_TYPES and "mrope_section" not in rope
        self.chat_template = chat_template
        owner = processor if self.is_vlm else self.tokenizer
        has_template = bool(getattr(owner, "chat_template", None))
        if chat_template and not has_template:
            raise ValueError("chat_template=True but the model's tokenizer/processor has no chat template")
        self.use_chat = (self.format.chat if chat_template is None else chat_template) and has_template
        self.max_length = max_length
        self.padding_side = padding_side
        self.base_path = None if base_path is None else Path(base_path).resolve()
        self.image_token = str(getattr(processor, "image_token", None) or "<image>")
        self._source: dict[str, Any] = {"path": None if self.base_path is None else str(self.base_path)}
        self._parts: dict[tuple[Any, ...], tuple[str, str]] = {}

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, adapter: str | Path | None = None, trainable: bool = False, **options: Any
    ) -> MLLMEmbedder:
        """Load a local model folder, a folder :meth:`save` wrote, or a LoRA adapter folder over its base.

        Args:
            path: a transformers folder, or an adapter folder (``adapter_config.json``) whose base is named by its
                ``lumir_embedder.json`` (else by peft's ``base_model_name_or_path``). Options saved in the manifest
                are defaults that ``options`` override.
            adapter: a LoRA adapter folder to load over ``path``.
            trainable: load the adapter's weights trainable (to continue training it).

        Raises:
            ModelNotFoundError: ``path``, ``adapter`` or an adapter's base folder does not exist.
            ValueError: the folder is not a transformers model folder.
        """
        folder = resolve_local_model(path, what="MLLM embedder")
        manifest = read_manifest(folder) or {}
        adapter_folder = None if adapter is None else resolve_local_model(adapter, what="LoRA adapter")
        saved = {} if adapter_folder is None else read_manifest(adapter_folder) or {}  # the adapter's options win
        opts = {**manifest.get("options", {}), **saved.get("options", {}), **options}
        base_folder = folder
        if (folder / "adapter_config.json").is_file():
            if adapter_folder is not None:
                raise ValueError(f"{folder} is itself a LoRA adapter; pass its base folder as path with adapter=")
            base = manifest.get("base") or json.loads((folder / "adapter_config.json").read_text()).get(
                "base_model_name_or_path"
            )
            base_folder = resolve_local_model(base or "", what=f"base model of the adapter in {folder}")
            adapter_folder = folder
        model, processor = load_hf_model(base_folder, resolve_dtype(opts.get("dtype", "float32")))
        if adapter_folder is not None:
            from lumir._deps import require

            require("peft", extra="train")
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_folder, is_trainable=trainable)
        embedder = cls(model, processor, base_path=base_folder, **opts)
        embedder._source = {"path": str(folder)}
        if adapter is not None:
            embedder._source["adapter"] = str(adapter_folder)
        return embedder

    # ------------------------------------------------------------------------------------------------ prompts
    def prepare(self, items: Sequence[Item], role: Role) -> list[EmbedInput]:
        """One :class:`MLLMInput` per item: instructions resolved for queries (applied to the text when the format
        says so), the role and the desired modality recorded."""
        role = Role(role)
        inputs: list[EmbedInput] = []
        for position, item in enumerate(items):
            text, instruction, target = item.text, None, None
            if role is Role.QUERY:
                instruction = resolve_instruction(item, self.instructions) or None
                if instruction and self.format.instruction_in_text:
                    text, instruction = apply_instruction(item.text, instruction, self.instruction_template), None
                wanted = item.meta.get("cand_modality") if instruction else None
                target = None if wanted is None else str(Modality.parse(wanted).value)
            inputs.append(MLLMInput(position, item.id, text, item.image, role, instruction, target))
        bad = [inp.item_id for inp in inputs if inp.modality not in self.modalities]
        if bad:
            raise ModalityError(
                f"{type(self).__name__} cannot embed {bad[:5]}: supported modalities are "
                f"{sorted(m.value for m in self.modalities)}"
            )
        return inputs

    def _template(self, inp: EmbedInput, role: Role) -> tuple[str, str]:
        """``(prefix, suffix)`` around the item's text in the final prompt string (cached per prompt shape)."""
        instruction = getattr(inp, "instruction", None) if role is Role.QUERY else None
        target = getattr(inp, "target", None) if instruction else None
        key = (instruction, target, inp.image is not None, inp.text is not None)
        if key in self._parts:
            return self._parts[key]
        content = self.format.joiner.join([_IMG] * (inp.image is not None) + [_TXT] * (inp.text is not None))
        template = self.format.query if instruction else self.format.candidate
        user = template.format(
            content=content,
            what=_WHAT[inp.modality],
            instruction=instruction or "",
            target=f"[{target}] " * bool(target),
        )
        if self.use_chat:
            rendered = self._chat(user)
        else:
            rendered = user.replace(_IMG, self.image_token)
        if self.format.append_eos:
            rendered += str(self.tokenizer.eos_token)
        if (_TXT in rendered) != (inp.text is not None) or _IMG in rendered:
            raise ValueError(f"the chat template of this model drops or repeats parts of the prompt {user!r}")
        prefix, _, suffix = rendered.partition(_TXT)
        self._parts[key] = (prefix, suffix)
        return prefix, suffix

    def _chat(self, user: str) -> str:
        content: Any = user
        if self.is_vlm:  # content parts; the processor's template writes its own image placeholder
            content = []
            for i, piece in enumerate(user.split(_IMG)):
                if i:
                    content.append({"type": "image"})
                if piece:
                    content.append({"type": "text", "text": piece})
        owner = self.processor if self.is_vlm else self.tokenizer
        messages = [{"role": "user", "content": content}]
        return str(owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def _special(self, prompt: str) -> bool:
        """Whether the tokenizer should add its special tokens (not when the template already wrote BOS)."""
        bos = self.tokenizer.bos_token
        return not (bos and prompt.startswith(bos))

    def _count(self, prompt: str) -> int:
        return len(self.tokenizer(prompt, add_special_tokens=self._special(prompt))["input_ids"])

    def render(self, inp: EmbedInput, role: Role | str) -> tuple[str, bool]:
        """The exact prompt string the model sees for a prepared input, and whether its text was truncated."""
        prefix, suffix = self._template(inp, Role(role))
        text = inp.text
        if text is None:
            return prefix, False
        limit = self.max_length
        full = prefix + text + suffix
        if limit is None or len(full.encode("utf-8")) + 8 <= limit or self._count(full) <= limit:
            return full, False  # a token covers at least one byte (special tokens: the +8 margin)
        if self._count(prefix + suffix) > limit:
            raise ValueError(f"max_length={limit} is shorter than the prompt template itself ({prefix + suffix!r})")
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc.get("offset_mapping")
        keep = min(len(ids), max(limit - (self._count(full) - len(ids)), 0))
        while True:
            if offsets is not None:
                cut = text[: offsets[keep - 1][1]] if keep > 0 else ""
            else:
                cut = self.tokenizer.decode(ids[:keep])
            if keep == 0 or self._count(prefix + cut + suffix) <= limit:
                return prefix + cut + suffix, True
            keep -= 1

    def render_prompts(self, items: Sequence[Item], role: Role | str) -> list[str]:
        """The prompt strings of items in a role (after instructions and truncation), for inspection."""
        return [self.render(inp, role)[0] for inp in self.prepare(items, Role(role))]

    def warn_truncated(self, inputs: Sequence[EmbedInput]) -> int:
        """Log one warning when item texts are cut to fit :attr:`max_length`; return how many were."""
        if self.max_length is None:
            return 0
        cut = [inp.item_id for inp in inputs if self.render(inp, getattr(inp, "role", Role.CANDIDATE))[1]]
        if cut:
            logger.warning(
                "%d of %d texts were cut to fit max_length=%d prompt tokens (first: item %r)",
                len(cut), len(inputs), self.max_length, cut[0],
            )  # fmt: skip
        return len(cut)

    def input_key(self, item: Item, role: Role) -> tuple[Any, ...]:
        """The prompt string and image identity (equal keys give equal vectors)."""
        from lumir.embed.memo import image_key

        [inp] = self.prepare([item], Role(role))
        return (self.render(inp, role)[0], image_key(inp.image))

    # ------------------------------------------------------------------------------------------------ forward
    def _backbone(self) -> Any:
        """The module returning ``last_hidden_state``: the model under a peft wrapper and under its LM head."""
        model = self.model
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        inner = getattr(model, "model", None)
        return inner if isinstance(inner, torch.nn.Module) and hasattr(model, "lm_head") else model

    def tokenize(self, inputs: Sequence[EmbedInput], role: Role | str) -> dict[str, torch.Tensor]:
        """The padded model inputs of a batch (CPU tensors), images through the processor."""
        role = Role(role)
        for inp in inputs:
            if isinstance(inp, MLLMInput) and inp.role is not role:
                raise ValueError(f"input {inp.item_id!r} was prepared as a {inp.role.value}, not a {role.value}")
        with_images = [inp for inp in inputs if inp.image is not None]
        if with_images and not self.is_vlm:
            raise ModalityError(f"{type(self).__name__} over a text-only model cannot embed images")
        prompts = [self.render(inp, role)[0] for inp in inputs]
        special = self._special(prompts[0])
        if self.is_vlm:
            images = self.load_images(with_images) or None
            enc = self.processor(
                text=prompts, images=images, padding=True, add_special_tokens=special, return_tensors="pt"
            )
        else:
            enc = self.tokenizer(prompts, padding=True, add_special_tokens=special, return_tensors="pt")
        return dict(enc)

    def forward_inputs(self, inputs: Sequence[EmbedInput], role: Role | str) -> torch.Tensor:
        """Differentiable ``(len(inputs), hidden)`` float32 embeddings (not normalised) on the model's device, in
        input order: last hidden state at the last real token. No grad mode is set here; :meth:`embed` runs this
        under ``inference_mode`` and trainers call it directly."""
        param = next(self.model.parameters())
        if not inputs:
            return torch.zeros(0, self.dim, device=param.device)
        enc = self.tokenize(inputs, role)
        batch = {
            k: v.to(param.device, dtype=param.dtype if v.is_floating_point() else None)
            for k, v in enc.items()
            if isinstance(v, torch.Tensor)
        }
        mask = batch["attention_mask"]
        if self._positions:  # positions from the mask, so left padding does not shift them
            batch["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        batch.pop("token_type_ids", None)
        out = self._backbone()(**batch, use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]  # (b, seq, dim)
        return last_token_pool(hidden, mask).float()

    def _encode_batch(self, batch: Sequence[EmbedInput]) -> torch.Tensor:
        return self.forward_inputs(batch, getattr(batch[0], "role", Role.CANDIDATE))

    # ------------------------------------------------------------------------------------------------ artifacts
    def _source_spec(self) -> dict[str, Any]:
        return dict(self._source)

    def _options_spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.format == PRESETS.get(self.format.name):
            out["preset"] = self.format.name
        else:
            out["template"] = self.format.to_dict()
        if self.chat_template is not None:
            out["chat_template"] = self.chat_template
        if self.max_length is not None:
            out["max_length"] = self.max_length
        if self.padding_side != "right":
            out["padding_side"] = self.padding_side
        return out

    def save(self, path: str | Path) -> Path:
        """Write a folder ``load_embedder("mllm:PATH")`` reloads to identical vectors: a peft model's adapter only
        (its base named in ``lumir_embedder.json``), or the full model with its processor/tokenizer.

        Raises:
            ValueError: an adapter over an in-memory base (no :attr:`base_path` to name).
        """
        from lumir.config import versions, write_json

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        adapter = hasattr(self.model, "peft_config")
        if adapter and self.base_path is None:
            raise ValueError(
                "cannot save a LoRA adapter over an in-memory base model: save the base with save_pretrained and "
                "build the embedder with MLLMEmbedder.from_pretrained(BASE) first"
            )
        self.model.save_pretrained(out)
        if not adapter:
            self.processor.save_pretrained(out)
        options = {k: v for k, v in self.spec().items() if k not in ("type", "path", "adapter")}
        manifest = {
            "format": MANIFEST_FORMAT,
            "adapter": adapter,
            "base": str(self.base_path) if adapter else None,
            "parent": None if self.base_path is None else str(self.base_path),
            "options": options,
            "versions": versions("transformers", "peft"),
        }
        write_json(out / MANIFEST, manifest)
        return out

    def __repr__(self) -> str:
        return (
            f"MLLMEmbedder(format={self.format.name!r}, dim={self.dim}, images={self.is_vlm}, "
            f"device={self.device}, dtype={dtype_name(self.dtype)})"
        )
