"""ActionAwareModel: a frozen image–text model plus LAMP's trainable prompting parts, saved and loaded as one folder.

Built from a spec (``{"backbone": {"kind": "mini" | "clip", ...}, "prompt": {...}}``) so a saved folder reloads
without code:

- ``{"kind": "mini", "heads": null | DIR, "dim": 256, "layers": 2, "attention_heads": 4}``: lumir-mini (shipped
  heads by default) with :class:`~lumir.models.action_backbones.MiniPatchBackbone` — lumir's adaptation;
- ``{"kind": "clip", "path": DIR}``: a local ``transformers`` CLIP checkpoint, the paper's setting.

A saved folder holds ``lumir_action_model.json`` (format, spec, prompt config, versions, meta) and
``weights.safetensors`` (the trainable parameters only; the frozen towers are rebuilt from the spec).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from lumir.config import atomic_path, atomic_write_text, versions
from lumir.errors import DataFormatError, ModelNotFoundError
from lumir.models.action_backbones import (
    ClipTextSide,
    ClipVisionBackbone,
    MiniImageInputs,
    MiniPatchBackbone,
    MiniTextSide,
    MiniTowers,
    encode_knowledge,
)
from lumir.models.action_prompt import ActionPromptConfig, ActionPrompter, KnowledgeBatch

__all__ = ["ACTION_MODEL_FORMAT", "ActionAwareModel", "Knowledge"]

ACTION_MODEL_FORMAT = "lumir-action-prompt/1"
_CONFIG = "lumir_action_model.json"
_WEIGHTS = "weights.safetensors"
Knowledge = tuple[Sequence[Sequence[str]], Sequence[str]]
"""One text's knowledge: its triplets and their state descriptions."""


class ActionAwareModel(nn.Module):
    """Frozen towers + :class:`~lumir.models.action_prompt.ActionPrompter` (+ the mini tower's trainable part).

    Use :meth:`build` (from a spec) or :meth:`load` (a saved folder).
    """

    def __init__(
        self,
        spec: Mapping[str, Any],
        backbone: ClipVisionBackbone | MiniPatchBackbone,
        text_side: ClipTextSide | MiniTextSide,
        prompter: ActionPrompter,
        image_inputs: Any,
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.spec_data = dict(spec)
        self.backbone, self.prompter = backbone, prompter
        self.text_side, self.image_inputs = text_side, image_inputs
        self.meta = dict(meta or {})

    @property
    def config(self) -> ActionPromptConfig:
        return self.prompter.config

    @classmethod
    def build(cls, spec: Mapping[str, Any], *, device: str = "cpu", seed: int = 0) -> ActionAwareModel:
        """A fresh (untrained) model from a spec; trainable parts are seeded with ``seed``."""
        backbone_spec = dict(spec.get("backbone") or {"kind": "mini"})
        prompt = dict(spec.get("prompt") or {})
        kind = backbone_spec.get("kind")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if kind == "mini":
                embedder = MiniTowers(backbone_spec.get("heads"), device=device)
                backbone: ClipVisionBackbone | MiniPatchBackbone = MiniPatchBackbone(
                    out_dim=embedder.heads.dim,
                    dim=int(backbone_spec.get("dim", 256)),
                    layers=int(backbone_spec.get("layers", 2)),
                    heads=int(backbone_spec.get("attention_heads", 4)),
                )
                text_side: ClipTextSide | MiniTextSide = MiniTextSide(embedder)
                image_inputs: Any = MiniImageInputs(embedder)
            elif kind == "clip":
                from lumir.models.clip import ClipTowers

                if "path" not in backbone_spec:
                    raise ValueError("a 'clip' backbone needs 'path': a local transformers CLIP folder")
                towers = ClipTowers.from_pretrained(backbone_spec["path"], device=device)
                backbone = ClipVisionBackbone(towers.model)
                text_side = ClipTextSide(towers)
                image_inputs = _ClipImageInputs(towers)
            else:
                raise ValueError(f"backbone kind must be 'mini' or 'clip', got {kind!r}")
            prompt.setdefault("early_layers", max(backbone.num_layers // 2, 1))
            config = ActionPromptConfig(
                dim=backbone.hidden,
                word_dim=text_side.word_dim,
                text_dim=text_side.text_dim,
                num_layers=backbone.num_layers,
                **prompt,
            )
            prompter = ActionPrompter(config)
        derived = ("dim", "word_dim", "text_dim", "num_layers")
        full = {"backbone": backbone_spec, "prompt": {k: v for k, v in config.to_dict().items() if k not in derived}}
        return cls(full, backbone, text_side, prompter, image_inputs).to(device)

    @classmethod
    def from_towers(cls, clip_model: Any, processor: Any, prompt: Mapping[str, Any] | None = None) -> ActionAwareModel:
        """A CLIP model already in memory (tests: :func:`lumir.testing.tiny.build_tiny_clip`); not re-loadable by
        :meth:`load` unless saved from a spec with a ``path``."""
        from lumir.models.clip import ClipTowers

        towers = ClipTowers(clip_model, processor)
        backbone = ClipVisionBackbone(towers.model)
        side = ClipTextSide(towers)
        opts = dict(prompt or {})
        opts.setdefault("early_layers", max(backbone.num_layers // 2, 1))
        config = ActionPromptConfig(
            dim=backbone.hidden, word_dim=side.word_dim, text_dim=side.text_dim, num_layers=backbone.num_layers,
            **opts,
        )  # fmt: skip
        return cls({"backbone": {"kind": "clip"}, "prompt": opts}, backbone, side, ActionPrompter(config),
                   _ClipImageInputs(towers))  # fmt: skip

    # ---- inputs ----
    def knowledge(self, records: Sequence[Knowledge]) -> KnowledgeBatch:
        """Frozen-encoder knowledge inputs for each text's ``(triplets, states)``."""
        return encode_knowledge(self.text_side, records, self.config.num_triplets)

    def caption_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """``z^txt`` of texts (the frozen text tower, as the first stage embeds them)."""
        return self.text_side.caption_embeddings(texts)

    def images(self, photos: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """Backbone inputs of photos."""
        return dict(self.image_inputs(photos))

    # ---- forward ----
    def encode(self, images: Mapping[str, torch.Tensor], knowledge: KnowledgeBatch | None) -> torch.Tensor:
        """``z^img`` ``(B, D)`` of image row ``b`` prompted with knowledge row ``b``."""
        return self.prompter.encode(self.backbone, dict(images), knowledge)

    def cross_scores(
        self,
        images: Mapping[str, torch.Tensor],
        knowledge: KnowledgeBatch | None,
        text_embeddings: torch.Tensor,
        *,
        chunk: int = 256,
    ) -> torch.Tensor:
        """``S[t, i] = cos(z^img(image i | knowledge of text t), z^txt_t)`` for every text and image, ``(T, I)``:
        what re-scoring computes (§3.5), every image encoded once per text."""
        n_t, n_i = text_embeddings.shape[0], next(iter(images.values())).shape[0]
        pairs_t = torch.arange(n_t).repeat_interleave(n_i)
        pairs_i = torch.arange(n_i).repeat(n_t)
        out = torch.empty(n_t * n_i, device=text_embeddings.device)
        for start in range(0, n_t * n_i, chunk):
            t, i = pairs_t[start : start + chunk], pairs_i[start : start + chunk]
            kb = knowledge.index(t) if knowledge is not None else None
            z = self.encode({k: v[i] for k, v in images.items()}, kb)
            out[start : start + len(t)] = (z * text_embeddings[t]).sum(-1)
        return out.view(n_t, n_i)

    def trainable_groups(self) -> dict[str, list[nn.Parameter]]:
        """``interaction`` (AIM), ``prompts`` (the rest of the prompter) and ``tower`` (the mini tower's new part)."""
        groups = self.prompter.stage_modules()
        groups["tower"] = self.backbone.trainable_parameters()
        return groups

    # ---- persistence ----
    def trainable_state(self) -> dict[str, torch.Tensor]:
        names = {id(p) for ps in self.trainable_groups().values() for p in ps}
        return {k: v.detach().cpu().contiguous() for k, v in self.named_parameters() if id(v) in names}

    def save(self, folder: str | Path) -> Path:
        """Write the spec, config and trainable weights (each file atomically)."""
        from safetensors.torch import save_file

        if self.spec_data["backbone"].get("kind") == "clip" and "path" not in self.spec_data["backbone"]:
            raise ValueError(
                "a CLIP model built in memory cannot be saved to reload; build it from a spec with a path"
            )
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / _WEIGHTS) as tmp:
            save_file(self.trainable_state(), str(tmp), metadata={"format": ACTION_MODEL_FORMAT})
        record = {"format": ACTION_MODEL_FORMAT, "spec": self.spec_data, "config": self.config.to_dict(),
                  "meta": self.meta, "versions": versions()}  # fmt: skip
        atomic_write_text(folder / _CONFIG, json.dumps(record, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, device: str = "cpu") -> ActionAwareModel:
        """Load a folder written by :meth:`save` (eval mode).

        Raises:
            ModelNotFoundError: a file is missing. DataFormatError: the config or weights do not match.
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        config_path, weights_path = folder / _CONFIG, folder / _WEIGHTS
        for p in (config_path, weights_path):
            if not p.is_file():
                raise ModelNotFoundError(f"action-aware model file not found: {p} (written by ActionAwareModel.save)")
        try:
            record = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataFormatError(f"invalid JSON: {err}", path=config_path) from err
        if record.get("format") != ACTION_MODEL_FORMAT:
            raise DataFormatError(f"not an action-aware model (format {record.get('format')!r})", path=config_path)
        model = cls.build(record["spec"], device=device)
        model.meta = dict(record.get("meta") or {})
        state = load_file(str(weights_path))
        expected = set(model.trainable_state())
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise DataFormatError(f"weights do not match the config (missing {missing[:3]}, extra {extra[:3]})",
                                  path=weights_path)  # fmt: skip
        model.load_state_dict(state, strict=False)
        return model.eval()


class _ClipImageInputs:
    def __init__(self, towers: Any) -> None:
        self.towers = towers

    def __call__(self, photos: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """Preprocessed pixels and ``base``, the unprompted CLIP image embedding (the first stage's)."""
        pixels = self.towers.preprocess_images(photos)
        with torch.no_grad():
            base = torch.nn.functional.normalize(self.towers.image_features(pixels), dim=-1)
        return {"pixel_values": pixels.float().cpu(), "base": base.float().cpu()}
