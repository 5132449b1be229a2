"""Contrastive trainer for two-tower heads over cached (frozen) features.

:class:`ContrastiveTrainer` learns a query head and a candidate head with the symmetric InfoNCE loss
(:func:`lumir.train.losses.info_nce`), a learnable temperature, in-batch negatives and optional per-query hard
negatives. Batches never hold the same candidate twice (sentence-transformers' ``NO_DUPLICATES`` sampler), so every
in-batch negative is a true negative. Candidates may have several cached *views* (e.g. an image and its mirror); one
view is drawn per sample and step (feature-level augmentation).

**Union pools** (MM-Embed §4.1, M-BEIR's universal setting): ``ContrastiveData.candidate_texts`` appends text
candidates, embedded by the *query* head, after the image candidates in one index space, and ``query_image`` makes
a query image+text: its candidate-head image embedding and its query-head text embedding (e.g. an instruction)
are normalised and summed (UniIR's score-level fusion, as :class:`lumir.embed.mini.MiniEmbedder` embeds image+text).
``groups`` keeps queries about the same thing (e.g. a caption asking for a photo and the photo asking for a
caption) out of one batch. ``hard_negative_scope="batch"`` contrasts every query with every hard negative of the
batch (MM-Embed eq. 1); a candidate that is another query's positive or hard negative but relevant to this query
(``relevance``) is masked out of its softmax. ``hard_negatives_per_step`` draws that many of each query's mined
negatives anew every step (MM-Embed samples one negative per triplet).

Everything is seeded: batches come from a ``torch.Generator`` seeded with ``seed + epoch``, dropout from the global
RNG seeded once, and a checkpoint (``checkpoint.pt``, written atomically after every epoch) holds heads, temperature,
optimizer, step and RNG state, so an interrupted run resumes to the same result as an uninterrupted one.
``log.jsonl`` records one line per logged step and per epoch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lumir.config import atomic_path
from lumir.progress import progress
from lumir.train.losses import LearnableTemperature, info_nce

__all__ = [
    "ContrastiveConfig",
    "ContrastiveData",
    "ContrastiveTrainer",
    "TrainSummary",
    "cosine_lr",
    "no_duplicate_batches",
]


@dataclass
class ContrastiveConfig:
    """Trainer hyperparameters (the ``train:`` block of a recipe).

    Attributes:
        epochs: passes over all queries.
        batch_size: queries per step, each with a distinct positive candidate.
        lr: peak AdamW learning rate (cosine decay to 0 after ``warmup_steps`` of linear warm-up).
        weight_decay: AdamW weight decay on weight matrices (not on biases, statistics or the temperature).
        warmup_steps: linear warm-up steps.
        temperature: initial softmax temperature τ (CLIP: 0.07).
        learnable_temperature: optimise log(1/τ) with the heads (CLIP), else keep τ fixed.
        symmetric: average query→candidate and candidate→query losses (CLIP).
        view_sampling: ``"random"`` (one random view of each candidate per step) or ``"first"``.
        seed: seed for batches, views, dropout and initialisation.
        log_every: write a ``log.jsonl`` line every N steps.
        grad_clip: max gradient norm (None: no clipping).
        drop_last: drop an epoch's trailing batches that are not full (tiny batches have few negatives and
            near-zero loss); kept when no batch would be full.
        rewrite_p: MGQRe §3.5 random query rewriting: each step, each query that has a cached rewrite
            (``ContrastiveData.rewritten``) is replaced by it with this probability (the paper uses 0.6).
        hard_negative_scope: ``"query"`` (each query sees its own hard negatives; UniIR) or ``"batch"`` (every
            hard negative of the batch is a negative for every query; MM-Embed eq. 1).
        hard_negatives_per_step: draw this many of each query's hard negatives at random every step (0: use all).
    """

    epochs: int = 10
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    temperature: float = 0.05
    learnable_temperature: bool = True
    symmetric: bool = True
    view_sampling: str = "random"
    seed: int = 0
    log_every: int = 10
    grad_clip: float | None = None
    drop_last: bool = True
    rewrite_p: float = 0.0
    hard_negative_scope: str = "query"
    hard_negatives_per_step: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"need epochs >= 1 and batch_size >= 2, got {self.epochs} and {self.batch_size}")
        if self.view_sampling not in ("random", "first"):
            raise ValueError(f"view_sampling must be 'random' or 'first', got {self.view_sampling!r}")
        if not (self.lr > 0 and self.temperature > 0):
            raise ValueError("lr and temperature must be positive")
        if not 0.0 <= self.rewrite_p <= 1.0:
            raise ValueError(f"rewrite_p must be in [0, 1], got {self.rewrite_p}")
        if self.hard_negative_scope not in ("query", "batch"):
            raise ValueError(f"hard_negative_scope must be 'query' or 'batch', got {self.hard_negative_scope!r}")
        if self.hard_negatives_per_step < 0:
            raise ValueError(f"hard_negatives_per_step must be >= 0, got {self.hard_negatives_per_step}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ContrastiveConfig:
        """Build from a recipe block; unknown keys are an error listing the accepted ones."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown train option(s) {unknown}; accepted: {sorted(known)}")
        return cls(**values)


@dataclass
class ContrastiveData:
    """Cached features and positives.

    Attributes:
        queries: ``(n_queries, d_q)`` query features (e.g. captions).
        candidates: ``(n_candidates, n_views, d_c)`` candidate features (e.g. image and mirror image).
        positives: ``(n_queries,)`` index of each query's positive candidate.
        hard_negatives: optional ``(n_queries, n_neg)`` candidate indices of each query's hard negatives.
        rewritten: optional ``(n_queries, d_q)`` features of each query's rewrite, made once by a frozen rewriter
            (MGQRe §3.5); ``has_rewrite`` ``(n_queries,)`` marks the queries that have one.
        candidate_texts: optional ``(n_text, d_q)`` text candidates, embedded by the query head; candidate index
            ``n_candidates + j`` is row ``j`` (a union pool of images and texts).
        query_image: optional ``(n_queries,)`` candidate index of each query's image (-1: none); such a query is
            image+text: its ``queries`` row is the text part (e.g. the instruction), the image goes through the
            candidate head, and the two normalised embeddings are summed.
        groups: optional ``(n_queries,)`` labels; no batch holds two queries of one group (default: ``positives``).
        relevance: optional ``(query_labels (n_queries,), candidate_labels (n_candidates + n_text,))``: candidate
            ``c`` is relevant to query ``i`` when the labels are equal; such candidates are masked out of query
            ``i``'s softmax when they appear as another query's positive or hard negative (default: only the
            query's own positive index counts).
    """

    queries: torch.Tensor
    candidates: torch.Tensor
    positives: torch.Tensor
    hard_negatives: torch.Tensor | None = None
    rewritten: torch.Tensor | None = None
    has_rewrite: torch.Tensor | None = None
    candidate_texts: torch.Tensor | None = None
    query_image: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    relevance: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def n_candidates(self) -> int:
        """Candidates in the index space: images (``candidates``) then texts (``candidate_texts``)."""
        return self.candidates.shape[0] + (0 if self.candidate_texts is None else self.candidate_texts.shape[0])

    def __post_init__(self) -> None:
        if self.candidates.ndim == 2:
            self.candidates = self.candidates[:, None, :]
        n = self.queries.shape[0]
        if self.positives.shape != (n,):
            raise ValueError(f"positives must have shape ({n},), got {tuple(self.positives.shape)}")
        total = self.n_candidates
        if n and not (int(self.positives.min()) >= 0 and int(self.positives.max()) < total):
            raise ValueError("positives index candidates out of range")
        if self.hard_negatives is not None:
            if self.hard_negatives.ndim != 2 or self.hard_negatives.shape[0] != n:
                raise ValueError(
                    f"hard_negatives must be (n_queries={n}, n_neg), got {tuple(self.hard_negatives.shape)}"
                )
            if (
                self.hard_negatives.numel()
                and not 0 <= int(self.hard_negatives.min()) <= int(self.hard_negatives.max()) < total
            ):
                raise ValueError(f"hard_negatives index candidates out of range [0, {total})")
        if self.candidate_texts is not None and self.candidate_texts.shape[1:] != self.queries.shape[1:]:
            raise ValueError(
                f"candidate_texts must be (n_text, {self.queries.shape[1]}) like queries, got "
                f"{tuple(self.candidate_texts.shape)}"
            )
        if self.query_image is not None and (
            self.query_image.shape != (n,) or (n and int(self.query_image.max()) >= self.candidates.shape[0])
        ):
            raise ValueError(f"query_image must be (n_queries={n},) indices of image candidates or -1")
        if self.groups is not None and self.groups.shape != (n,):
            raise ValueError(f"groups must have shape ({n},), got {tuple(self.groups.shape)}")
        if self.relevance is not None and (self.relevance[0].shape != (n,) or self.relevance[1].shape != (total,)):
            raise ValueError(f"relevance must be ((n_queries={n},), (n_candidates={total},)) label tensors")
        if self.rewritten is not None:
            if self.rewritten.shape != self.queries.shape:
                raise ValueError(
                    f"rewritten must match queries {tuple(self.queries.shape)}, got {tuple(self.rewritten.shape)}"
                )
            if self.has_rewrite is None:
                self.has_rewrite = torch.ones(n, dtype=torch.bool)


@dataclass
class TrainSummary:
    """What a training run reports (also written to ``summary.json``)."""

    steps: int
    epochs: int
    final_loss: float
    temperature: float
    seconds: float
    resumed_from_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def no_duplicate_batches(positives: torch.Tensor, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffle query indices into batches in which no candidate appears twice.

    Like sentence-transformers' ``NoDuplicatesBatchSampler``: walk a random permutation and put each query in the
    first open batch that does not yet hold its positive. Every query lands in exactly one batch; batches are full
    except possibly the last few.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> batches = no_duplicate_batches(torch.tensor([0, 0, 1, 1]), 2, g)
        >>> [sorted(b.tolist()) for b in batches]  # queries 0 and 1 share candidate 0, so they never meet
        [[0, 3], [1, 2]]
    """
    order = torch.randperm(positives.shape[0], generator=generator).tolist()
    pos = positives.tolist()
    open_batches: list[tuple[list[int], set[int]]] = []
    done: list[list[int]] = []
    for q in order:
        for members, seen in open_batches:
            if pos[q] not in seen:
                members.append(q)
                seen.add(pos[q])
                break
        else:
            open_batches.append(([q], {pos[q]}))
        if open_batches and len(open_batches[0][0]) == batch_size:
            done.append(open_batches.pop(0)[0])
    done.extend(members for members, _ in open_batches)
    return [torch.tensor(b, dtype=torch.long) for b in done]


def cosine_lr(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 0 at ``total``.

    Example:
        >>> cosine_lr(0, 100, 10, 1.0), cosine_lr(10, 100, 10, 1.0), round(cosine_lr(55, 100, 10, 1.0), 3)
        (0.1, 1.0, 0.5)
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


EpochCallback = Callable[["ContrastiveTrainer", int], Mapping[str, float]]


class ContrastiveTrainer:
    """Train a query head and a candidate head on :class:`ContrastiveData` (see the module docstring).

    Args:
        query_head: module mapping query features to embeddings.
        candidate_head: module mapping candidate features to embeddings (may be the same module).
        data: features and positives.
        config: hyperparameters.
        output_dir: where ``checkpoint.pt``, ``log.jsonl`` and ``summary.json`` go.
        on_epoch_end: optional callback returning metrics (e.g. validation recall) logged with the epoch.
    """

    def __init__(
        self,
        query_head: nn.Module,
        candidate_head: nn.Module,
        data: ContrastiveData,
        config: ContrastiveConfig,
        output_dir: str | Path,
        *,
        on_epoch_end: EpochCallback | None = None,
    ) -> None:
        self.query_head, self.candidate_head = query_head, candidate_head
        self.data, self.config = data, config
        self.output_dir = Path(output_dir)
        self.on_epoch_end = on_epoch_end
        self.temperature = LearnableTemperature(config.temperature)
        self.temperature.requires_grad_(config.learnable_temperature)
        self.steps_per_epoch = len(self._batches(0))
        self.total_steps = self.steps_per_epoch * config.epochs
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=config.lr)
        self.step = 0
        self.rewritten_seen = 0  # queries replaced by their rewrite so far (this process)
        self.epoch = 0

    # ---------------------------------------------------------------- setup
    def trainable_modules(self) -> nn.ModuleList:
        """Heads and temperature (deduplicated when the two heads are one module)."""
        mods = [self.query_head] + ([self.candidate_head] if self.candidate_head is not self.query_head else [])
        return nn.ModuleList([*mods, self.temperature])

    def _param_groups(self) -> list[dict[str, Any]]:
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for module in self.trainable_modules():
            for p in module.parameters():
                if not p.requires_grad:
                    continue
                (decay if p.ndim >= 2 else no_decay).append(p)
        return [
            {"params": decay, "weight_decay": self.config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def _batches(self, epoch: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        groups = self.data.positives if self.data.groups is None else self.data.groups
        batches = no_duplicate_batches(groups, self.config.batch_size, g)
        full = [b for b in batches if len(b) == self.config.batch_size]
        return full if self.config.drop_last and full else batches

    # ---------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        """Where the latest end-of-epoch checkpoint is written."""
        return self.output_dir / "checkpoint.pt"

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly."""
        return {
            "modules": self.trainable_modules().state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "torch_rng": torch.get_rng_state(),
            "config": asdict(self.config),
        }

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint.pt`` atomically (a crash mid-write leaves the previous one intact)."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(self.state_dict(), tmp)
        return self.checkpoint_path

    def load_checkpoint(self, path: str | Path | None = None) -> bool:
        """Resume from ``checkpoint.pt`` if it exists; returns whether it did.

        Raises:
            ValueError: the checkpoint was written with different hyperparameters.
        """
        path = Path(path) if path is not None else self.checkpoint_path
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=False)
        defaults = asdict(ContrastiveConfig())  # options added later keep their defaults in older checkpoints
        state["config"] = {**{k: v for k, v in defaults.items() if k not in state["config"]}, **state["config"]}
        if state["config"] != asdict(self.config):
            diff = {k: (v, asdict(self.config)[k]) for k, v in state["config"].items() if asdict(self.config)[k] != v}
            raise ValueError(
                f"{path} was written with other train settings {diff} (checkpoint, now); "
                "use another output_dir or delete the checkpoint to start over"
            )
        self.trainable_modules().load_state_dict(state["modules"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        torch.set_rng_state(state["torch_rng"])
        return True

    # ---------------------------------------------------------------- training
    def _log(self, record: Mapping[str, Any]) -> None:
        with (self.output_dir / "log.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def _truncate_log(self) -> None:
        """Drop log lines written after the checkpoint being resumed (an interrupted epoch)."""
        log = self.output_dir / "log.jsonl"
        if not log.is_file():
            return
        keep = [ln for ln in log.read_text(encoding="utf-8").splitlines() if json.loads(ln)["epoch"] <= self.epoch]
        log.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")

    def _candidate_features(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        feats = self.data.candidates[index]  # (b, views, d) or (b, n, views, d)
        views = feats.shape[-2]
        if views == 1 or self.config.view_sampling == "first":
            return feats[..., 0, :]
        pick = torch.randint(views, feats.shape[:-2], generator=generator)
        return torch.gather(feats, -2, pick[..., None, None].expand(*feats.shape[:-2], 1, feats.shape[-1])).squeeze(-2)

    def _query_features(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batch's query features, each swapped for its cached rewrite with probability ``rewrite_p``."""
        feats = self.data.queries[batch]
        if self.config.rewrite_p <= 0 or self.data.rewritten is None or self.data.has_rewrite is None:
            return feats
        swap = (torch.rand(len(batch), generator=generator) < self.config.rewrite_p) & self.data.has_rewrite[batch]
        self.rewritten_seen += int(swap.sum())
        return torch.where(swap[:, None], self.data.rewritten[batch], feats)

    def encode_queries(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Embeddings ``(b, dim)`` of queries; image+text queries (``query_image``) fuse both heads."""
        q = self.query_head(self._query_features(batch, generator))
        if self.data.query_image is None:
            return q
        image = self.data.query_image[batch]
        has = image >= 0
        if not bool(has.any()):
            return q
        img = self.candidate_head(self._candidate_features(image[has], generator))
        fused = F.normalize(F.normalize(q[has], dim=-1) + F.normalize(img, dim=-1), dim=-1)
        return q.index_put((has.nonzero().squeeze(1),), fused)

    def encode_candidates(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Embeddings ``(n, dim)`` of candidates by index: images by the candidate head, texts by the query head."""
        if self.data.candidate_texts is None:
            return self.candidate_head(self._candidate_features(index, generator))
        n_images = self.data.candidates.shape[0]
        is_text = index >= n_images
        parts, order = [], []
        if bool((~is_text).any()):
            parts.append(self.candidate_head(self._candidate_features(index[~is_text], generator)))
            order.append((~is_text).nonzero().squeeze(1))
        if bool(is_text.any()):
            parts.append(self.query_head(self.data.candidate_texts[index[is_text] - n_images]))
            order.append(is_text.nonzero().squeeze(1))
        out = torch.cat(parts)
        return out[torch.argsort(torch.cat(order))]  # back to the order of ``index``

    def _hard_negative_index(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """``(b, n)`` hard-negative candidate indices of a batch; ``hard_negatives_per_step`` random columns."""
        if self.data.hard_negatives is None:
            return None
        idx = self.data.hard_negatives[batch]  # (b, n_neg)
        take = self.config.hard_negatives_per_step
        if take and take < idx.shape[1]:
            cols = torch.rand(idx.shape, generator=generator).argsort(dim=1)[:, :take]
            idx = torch.gather(idx, 1, cols)
        return idx

    def _false_negatives(self, batch: torch.Tensor, hard: torch.Tensor | None) -> torch.Tensor | None:
        """``(b, b + m)`` mask of logits that are known-relevant candidates of another query's slot."""
        if self.config.hard_negative_scope != "batch" or hard is None:
            return None
        columns = torch.cat([self.data.positives[batch], hard.reshape(-1)])  # candidate index per logit column
        if self.data.relevance is None:
            return columns[None, :] == self.data.positives[batch][:, None]
        query_labels, candidate_labels = self.data.relevance
        return candidate_labels[columns][None, :] == query_labels[batch][:, None]

    def compute_loss(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """InfoNCE of one batch of query indices (in-batch plus optional hard negatives; see the config)."""
        q = self.encode_queries(batch, generator)
        c = self.encode_candidates(self.data.positives[batch], generator)
        idx = self._hard_negative_index(batch, generator)
        hard = None
        if idx is not None:
            hard = self.encode_candidates(idx.reshape(-1), generator).reshape(idx.shape[0], idx.shape[1], -1)
        exclude = self._false_negatives(batch, idx)
        extra: dict[str, Any] = {}
        if self.config.hard_negative_scope == "batch":  # MM-Embed eq. 1 (default "query" keeps older info_nce calls)
            extra = {"hard_negative_scope": "batch", "exclude": exclude}
        return info_nce(
            q,
            c,
            logit_scale=self.temperature.logit_scale,
            hard_negatives=hard,
            symmetric=self.config.symmetric,
            **extra,
        )

    def train(self, *, resume: bool = True, show_progress: bool = True) -> TrainSummary:
        """Run (or finish) training; returns a :class:`TrainSummary`, also saved as ``summary.json``."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(self.config.seed)
        resumed = self.load_checkpoint() if resume else False
        if resumed:
            self._truncate_log()
        elif (self.output_dir / "log.jsonl").exists():
            (self.output_dir / "log.jsonl").unlink()
        start_epoch = self.epoch
        history: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        loss_value = float("nan")
        bar = progress(total=self.total_steps, initial=self.step, desc="train", unit="step", enabled=show_progress)
        for epoch in range(start_epoch, self.config.epochs):
            for module in self.trainable_modules():
                module.train()
            g = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch + 7)
            losses = []
            for batch in self._batches(epoch):
                lr = cosine_lr(self.step, self.total_steps, self.config.warmup_steps, self.config.lr)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss = self.compute_loss(batch, g)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.config.grad_clip:
                    nn.utils.clip_grad_norm_(
                        [p for grp in self.optimizer.param_groups for p in grp["params"]], self.config.grad_clip
                    )
                self.optimizer.step()
                self.step += 1
                loss_value = float(loss.detach())
                losses.append(loss_value)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", tau=f"{float(self.temperature.temperature.detach()):.4f}")
                if self.step % self.config.log_every == 0:
                    self._log(
                        {
                            "epoch": epoch + 1,
                            "step": self.step,
                            "loss": loss_value,
                            "lr": lr,
                            "temperature": float(self.temperature.temperature.detach()),
                        }
                    )
            self.epoch = epoch + 1
            for module in self.trainable_modules():
                module.eval()
            record: dict[str, Any] = {
                "epoch": self.epoch,
                "step": self.step,
                "epoch_loss": float(np.mean(losses)),
                "temperature": float(self.temperature.temperature.detach()),
            }
            if self.on_epoch_end is not None:
                with torch.no_grad():
                    record.update(self.on_epoch_end(self, self.epoch))
            history.append(record)
            self._log(record)
            self.save_checkpoint()
        bar.close()
        summary = TrainSummary(
            steps=self.step,
            epochs=self.epoch,
            final_loss=loss_value,
            temperature=float(self.temperature.temperature.detach()),
            seconds=round(time.perf_counter() - t0, 2),
            resumed_from_epoch=start_epoch,
            history=history,
        )
        (self.output_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=1) + "\n", encoding="utf-8")
        return summary
