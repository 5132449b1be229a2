"""Two-stage training of action-aware prompts (LAMP, action-aware prompt tuning paper §3.4, eq. 10-11, Table 5).

- **Stage 1** (eq. 10): the prompts, the triplet encoder, the prompt adapter and the interaction module (and, for
  lumir-mini's adaptation, the small patch transformer) are trained with the symmetric contrastive loss
  ``L_i2t + L_t2i`` and a learnable temperature (:func:`lamp_contrastive_loss`); the towers stay frozen.
- **Stage 2** (eq. 11): only the interaction module trains, with the triplet loss ``max(d_p - d_n + α, 0)``
  (:func:`lamp_triplet_loss`; cosine distance, hardest in-batch negative by default, both directions). A model
  without the module (``interaction="cat"``, Table 3's CAT) trains its prompts in stage 2 instead.
- Table 5's alternatives: ``schedule="one-stage"`` (stage 1 only) and ``"combined"`` (both losses summed in one stage
  of ``stage1_epochs + stage2_epochs`` epochs).

**Which scores the losses see.** The image embedding depends on a text's knowledge. ``pairing="cross"`` (default)
scores every caption of a batch against every image of the batch *prompted with that caption's knowledge* —
``S[t, i] = cos(z^img(i | k_t), z^txt_t)`` — exactly what re-scoring computes at inference (§3.5), for both
directions; the cost is ``B^2`` image encodings per step. ``pairing="paired"`` encodes each image once with its
own caption's knowledge and scores all pairs with those embeddings (``B`` encodings; the literal reading of eq. 10,
whose negatives then carry other captions' knowledge).

Training reads cached inputs (:class:`PromptTuningData`: backbone inputs per image, frozen knowledge encodings and
text embeddings per caption) and never calls an LLM. Batches never hold one image twice. A checkpoint
(``checkpoint.pt``, written atomically after every epoch) holds the trainable weights, temperature, optimizer,
stage, epoch and RNG state; an interrupted run resumes where it stopped. ``log.jsonl`` has one line per epoch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lumir.config import atomic_path
from lumir.models.action_model import ActionAwareModel
from lumir.models.action_prompt import KnowledgeBatch
from lumir.train.contrastive import cosine_lr, no_duplicate_batches
from lumir.train.losses import LearnableTemperature

__all__ = [
    "PromptTuningConfig",
    "PromptTuningData",
    "PromptTuningTrainer",
    "first_stage_batches",
    "lamp_contrastive_loss",
    "lamp_triplet_loss",
    "stage_plan",
]


def lamp_contrastive_loss(scores: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Eq. 10: ``L_i2t + L_t2i`` over a ``(B, B)`` cosine matrix ``scores[t, i]`` (caption ``t``, image ``i``;
    positives on the diagonal), each the batch mean of a cross-entropy at temperature ``1 / logit_scale``.

    The paper sums the two directions (CLIP averages them).

    Example:
        >>> s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> round(lamp_contrastive_loss(s, 1.0).item(), 4)  # 2 * -log(e / (e + 1))
        0.6265
    """
    target = torch.arange(scores.shape[0], device=scores.device)
    logits = scores * logit_scale
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)


def lamp_triplet_loss(scores: torch.Tensor, margin: float = 0.2, *, hardest: bool = True) -> torch.Tensor:
    """Eq. 11: ``max(d_p - d_n + α, 0)`` with cosine distance ``d = 1 - s``, i.e. ``max(s_n - s_p + α, 0)``, for
    both directions (caption → images along rows, image → captions along columns) over a ``(B, B)`` matrix with
    positives on the diagonal. ``hardest`` takes each anchor's hardest in-batch negative (VSE++); otherwise the
    hinge is summed over all negatives. Mean over anchors, summed over the two directions.

    Example:
        >>> s = torch.tensor([[0.9, 0.8], [0.1, 0.5]])
        >>> round(lamp_triplet_loss(s, 0.2).item(), 4)  # rows: .1, 0; columns: 0, .5 -> .05 + .25
        0.3
    """
    n = scores.shape[0]
    pos = scores.diagonal()
    eye = torch.eye(n, dtype=torch.bool, device=scores.device)
    neg = scores.masked_fill(eye, float("-inf"))
    if hardest:
        t2i = (neg.max(dim=1).values - pos + margin).clamp(min=0)
        i2t = (neg.max(dim=0).values - pos + margin).clamp(min=0)
        return t2i.mean() + i2t.mean()
    t2i = (scores - pos[:, None] + margin).clamp(min=0).masked_fill(eye, 0).sum(dim=1)
    i2t = (scores - pos[None, :] + margin).clamp(min=0).masked_fill(eye, 0).sum(dim=0)
    return t2i.mean() + i2t.mean()


def first_stage_batches(
    texts: torch.Tensor, base: torch.Tensor, image_of: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Batches of captions whose photos the first stage confuses (our addition; ``batching="first_stage"``).

    Re-scoring only ever sees a first stage's top-k, so random in-batch negatives are mostly far easier than the
    candidates it must order. Walking captions in a seeded random order, each new batch is seeded with one caption
    and filled with unbatched captions of the photos the first stage ranks highest for it (``texts @ base.T``),
    never two captions of one photo. Every caption lands in exactly one batch.

    Example:
        >>> texts = torch.eye(4)
        >>> base = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 1.0, 0], [0, 0, 0.9, 0.1]])
        >>> batches = first_stage_batches(texts, base, torch.arange(4), 2, torch.Generator().manual_seed(0))
        >>> sorted(sorted(b.tolist()) for b in batches)  # photos 0/1 and 2/3 look alike to the first stage
        [[0, 1], [2, 3]]
    """
    n = texts.shape[0]
    by_image: dict[int, list[int]] = {}
    for c, i in enumerate(image_of.tolist()):
        by_image.setdefault(i, []).append(c)
    depth = min(base.shape[0], 4 * batch_size)
    neighbours = (texts.float() @ base.float().T).topk(depth, dim=1).indices.tolist()
    used = [False] * n
    batches: list[torch.Tensor] = []
    for seed in torch.randperm(n, generator=generator).tolist():
        if used[seed]:
            continue
        batch, photos = [seed], {int(image_of[seed])}
        used[seed] = True
        for photo in neighbours[seed]:
            if len(batch) == batch_size:
                break
            free = [c for c in by_image.get(photo, []) if not used[c]] if photo not in photos else []
            if free:
                batch.append(free[0])
                used[free[0]] = True
                photos.add(photo)
        batches.append(torch.tensor(batch, dtype=torch.long))
    return batches


Schedule = Literal["two-stage", "one-stage", "combined"]


@dataclass
class PromptTuningConfig:
    """Training settings (a recipe's ``train`` block). Learning rates, epochs and batch size are ours: the paper's
    are in its unavailable supplement."""

    schedule: Schedule = "two-stage"
    pairing: Literal["cross", "paired"] = "cross"
    batch_size: int = 16
    stage1_epochs: int = 3
    stage1_lr: float = 1e-3
    stage2_epochs: int = 1
    stage2_lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20
    temperature: float = 0.07
    margin: float = 0.2
    hardest_negative: bool = True
    grad_clip: float = 1.0
    batching: Literal["random", "first_stage"] = "random"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in ("two-stage", "one-stage", "combined"):
            raise ValueError(f"schedule must be two-stage, one-stage or combined, got {self.schedule!r}")
        if self.pairing not in ("cross", "paired"):
            raise ValueError(f"pairing must be 'cross' or 'paired', got {self.pairing!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (in-batch negatives)")
        if self.batching not in ("random", "first_stage"):
            raise ValueError(f"batching must be 'random' or 'first_stage', got {self.batching!r}")


@dataclass
class Stage:
    name: str
    epochs: int
    lr: float
    groups: tuple[str, ...]
    losses: tuple[str, ...]
    train_temperature: bool


def stage_plan(config: PromptTuningConfig, *, has_interaction: bool = True) -> list[Stage]:
    """The stages of a schedule: which parameter groups train, with which losses.

    Example:
        >>> [(s.name, s.groups, s.losses) for s in stage_plan(PromptTuningConfig())]
        [('stage1', ('prompts', 'tower', 'interaction'), ('contrastive',)), ('stage2', ('interaction',), ('triplet',))]
    """
    everything = ("prompts", "tower", "interaction")
    stage1 = Stage("stage1", config.stage1_epochs, config.stage1_lr, everything, ("contrastive",), True)
    if config.schedule == "one-stage":
        return [stage1]
    if config.schedule == "combined":
        epochs = config.stage1_epochs + config.stage2_epochs
        return [Stage("combined", epochs, config.stage1_lr, everything, ("contrastive", "triplet"), True)]
    second = ("interaction",) if has_interaction else ("prompts",)
    return [stage1, Stage("stage2", config.stage2_epochs, config.stage2_lr, second, ("triplet",), False)]


@dataclass
class PromptTuningData:
    """Cached training inputs.

    Attributes:
        images: backbone inputs, each ``(n_images, ...)`` (e.g. mini: ``tokens``, ``base``).
        knowledge: frozen knowledge encodings of the captions (``n_captions`` rows).
        texts: ``z^txt`` of the captions ``(n_captions, D)``.
        image_of: ``(n_captions,)`` the image index of each caption.
    """

    images: dict[str, torch.Tensor]
    knowledge: KnowledgeBatch
    texts: torch.Tensor
    image_of: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.texts.shape[0]
        if len(self.knowledge) != n or self.image_of.shape[0] != n:
            raise ValueError(f"captions disagree: {n} texts, {len(self.knowledge)} knowledge rows, "
                             f"{self.image_of.shape[0]} image indices")  # fmt: skip


@dataclass
class PromptTuningSummary:
    steps: int
    seconds: float
    epochs: list[dict[str, Any]]
    config: dict[str, Any]


EpochCallback = Callable[[ActionAwareModel, str, int], Mapping[str, float]]


class PromptTuningTrainer:
    """Runs :func:`stage_plan` over :class:`PromptTuningData`, resumably (see the module docstring).

    Args:
        model: the model whose trainable parts are trained in place.
        data: cached inputs. config: settings. output_dir: checkpoint and log folder (None: nothing written).
        on_epoch: called after every epoch with (model, stage name, epoch); its metrics go into the log.
    """

    def __init__(
        self,
        model: ActionAwareModel,
        data: PromptTuningData,
        config: PromptTuningConfig,
        output_dir: str | Path | None = None,
        *,
        on_epoch: EpochCallback | None = None,
        progress: bool = False,
    ) -> None:
        self.model, self.data, self.config = model, data, config
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.on_epoch, self.progress = on_epoch, progress
        self.temperature = LearnableTemperature(config.temperature).to(model.prompter.visual_prompts.device)
        self.plan = stage_plan(config, has_interaction=model.prompter.interaction is not None)
        self.groups = model.trainable_groups()

    def _set_trainable(self, stage: Stage) -> list[nn.Parameter]:
        for p in self.model.parameters():
            p.requires_grad_(False)
        params = [p for g in stage.groups for p in self.groups[g]]
        for p in params:
            p.requires_grad_(True)
        self.temperature.log_logit_scale.requires_grad_(stage.train_temperature)
        if stage.train_temperature:
            params = [*params, self.temperature.log_logit_scale]
        if not params:
            raise ValueError(f"{stage.name} has nothing to train (groups {stage.groups})")
        return params

    def scores(self, captions: torch.Tensor) -> torch.Tensor:
        """``(B, B)`` scores of a batch of caption indices (see ``pairing``)."""
        device = self.model.prompter.visual_prompts.device
        img = self.data.image_of[captions]
        images = {k: v[img].float().to(device) for k, v in self.data.images.items()}
        kb = self.data.knowledge.index(captions).to(device) if self.model.config.uses_knowledge else None
        texts = self.data.texts[captions].to(device)
        if self.config.pairing == "cross":
            return self.model.cross_scores(images, kb, texts, chunk=4096)
        return texts @ self.model.encode(images, kb).T

    def loss(self, stage: Stage, scores: torch.Tensor) -> torch.Tensor:
        total = scores.new_zeros(())
        if "contrastive" in stage.losses:
            total = total + lamp_contrastive_loss(scores, self.temperature.logit_scale)
        if "triplet" in stage.losses:
            total = total + lamp_triplet_loss(scores, self.config.margin, hardest=self.config.hardest_negative)
        return total

    def _checkpoint(self) -> Path | None:
        return None if self.output_dir is None else self.output_dir / "checkpoint.pt"

    def _save(self, stage_index: int, epoch: int, optimizer: torch.optim.Optimizer, log: list[dict[str, Any]]) -> None:
        path = self._checkpoint()
        if path is None:
            return
        state = {"stage": stage_index, "epoch": epoch, "model": self.model.trainable_state(),
                 "temperature": self.temperature.state_dict(), "optimizer": optimizer.state_dict(),
                 "rng": torch.get_rng_state(), "log": log, "config": asdict(self.config)}  # fmt: skip
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def _resume(self) -> dict[str, Any] | None:
        path = self._checkpoint()
        if path is None or not path.is_file():
            return None
        state: dict[str, Any] = torch.load(path, weights_only=False)
        if state.get("config") != asdict(self.config):
            raise ValueError(f"{path} was written with another training config; move it away to start over")
        self.model.load_state_dict(state["model"], strict=False)
        self.temperature.load_state_dict(state["temperature"])
        torch.set_rng_state(state["rng"])
        return state

    def train(self) -> PromptTuningSummary:
        """Run (or resume) every stage; returns the per-epoch log."""
        cfg = self.config
        resumed = self._resume()
        log: list[dict[str, Any]] = list(resumed["log"]) if resumed else []
        start_stage = resumed["stage"] if resumed else 0
        start_epoch = resumed["epoch"] + 1 if resumed else 0
        if resumed is None:
            torch.manual_seed(cfg.seed)
        steps, t0 = 0, time.perf_counter()
        for si, stage in enumerate(self.plan):
            if si < start_stage or stage.epochs == 0:
                continue
            params = self._set_trainable(stage)
            optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=cfg.weight_decay)
            first_epoch = start_epoch if si == start_stage else 0
            if resumed is not None and si == start_stage and first_epoch > 0:
                optimizer.load_state_dict(resumed["optimizer"])
            if si == start_stage and first_epoch >= stage.epochs:
                continue
            per_epoch = len(self._batches(si, 0))
            total = per_epoch * stage.epochs
            self.model.train()
            for epoch in range(first_epoch, stage.epochs):
                losses, e0 = [], time.perf_counter()
                batches = self._batches(si, epoch)
                desc = f"{stage.name} epoch {epoch + 1}/{stage.epochs}"
                for b, captions in enumerate(tqdm(batches, desc=desc, unit="step", disable=not self.progress)):
                    if captions.numel() < 2:
                        continue
                    for group in optimizer.param_groups:
                        group["lr"] = cosine_lr(epoch * per_epoch + b, total, cfg.warmup_steps, stage.lr)
                    loss = self.loss(stage, self.scores(captions))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    optimizer.step()
                    losses.append(float(loss.detach()))
                    steps += 1
                self.model.eval()
                entry: dict[str, Any] = {
                    "stage": stage.name,
                    "epoch": epoch,
                    "loss": sum(losses) / max(len(losses), 1),
                    "steps": len(losses),
                    "seconds": round(time.perf_counter() - e0, 2),
                    "temperature": float(self.temperature.temperature.detach()),
                }
                if self.on_epoch is not None:
                    with torch.no_grad():
                        entry.update(self.on_epoch(self.model, stage.name, epoch))
                self.model.train()
                log.append(entry)
                self._log(entry)
                self._save(si, epoch, optimizer, log)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return PromptTuningSummary(steps, time.perf_counter() - t0, log, asdict(cfg))

    def _batches(self, stage_index: int, epoch: int) -> list[torch.Tensor]:
        """Caption batches without a repeated image, seeded by (seed, stage, epoch)."""
        g = torch.Generator().manual_seed(self.config.seed * 1000 + stage_index * 100 + epoch)
        if self.config.batching == "first_stage" and "base" in self.data.images:
            return first_stage_batches(self.data.texts, self.data.images["base"], self.data.image_of,
                                       self.config.batch_size, g)  # fmt: skip
        return no_duplicate_batches(self.data.image_of, self.config.batch_size, g)

    def _log(self, entry: Mapping[str, Any]) -> None:
        if self.progress:
            tqdm.write(json.dumps(entry))
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with (self.output_dir / "log.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
