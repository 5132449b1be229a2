"""EmbedderTrainer: contrastive training of a model-backed embedder on ``transformers.Trainer``.

The trainer differentiates through the **same embedder object** that indexes at inference: each step prepares the
batch's queries and candidates with ``embedder.prepare(items, role)`` (instructions, prompt templates) and encodes
them with ``embedder.forward_inputs(inputs, role)`` — the code path ``embedder.embed`` runs under
``torch.inference_mode`` — so what is trained is what is served (:class:`lumir.embed.mllm.MLLMEmbedder` implements
both; any embedder that does can be trained).

Loss (:func:`lumir.train.losses.info_nce`):

- default ``negatives="batch"``: MM-Embed eq. 1 (Lin et al. 2024, §4.1): for every query the softmax runs over
  D_B = all positives and all hard negatives of the batch, query → candidate. With no hard negatives this is
  LamRA-Ret's L_ret (Liu et al. 2025, §3.3) and MM-Embed's M^rand stage;
- ``negatives="query"``: each query is contrasted with the in-batch positives and its *own* hard negatives only
  (UniIR's ``clip_sf``, the variant :class:`lumir.train.contrastive.ContrastiveTrainer` uses);
- ``symmetric``: add the candidate → query direction over the positives (CLIP); off by default, as in both papers;
- labelled positives of a query that sit elsewhere in the batch (another query's positive or negative) are left out
  of its softmax (``exclude``), so a duplicate-relevance batch never pushes a query away from a right answer.

Memory: ``gradient_checkpointing`` recomputes activations in backward; ``grad_cache_chunk`` (GradCache, Gao et al.
2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup", https://arxiv.org/abs/2101.06983)
encodes the batch in chunks without a graph, takes the loss gradient with respect to the embeddings, then re-encodes
chunk by chunk with a graph and back-propagates those cached gradients: the loss and gradients equal the full
batch's (dropout replays the same random state) while peak activation memory is one chunk's, so the effective
batch (every in-batch negative) exceeds memory.

Batches come from :class:`lumir.data.samplers.ExampleBatchSampler`: no duplicate item in a batch; optionally
task-homogeneous batches or a weighted mixture of sources (MM-Embed's continual text-to-text fine-tuning samples
multimodal and text triplets uniformly, §4.1.2).

Checkpoints hold only the trainable weights (LoRA, a learnable temperature), with the optimizer, scheduler and RNG
states ``transformers.Trainer`` keeps, so a resumed run continues the same run; the final folder is
``embedder.save(...)``'s, which ``load_embedder`` reloads without code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lumir.data.examples import TrainingExample
from lumir.data.samplers import ExampleBatchSampler
from lumir.train.losses import HARD_NEGATIVE_SCOPES, LearnableTemperature, info_nce
from lumir.types import Item, Role

__all__ = ["EmbedderTrainConfig", "EmbedderTrainer", "EmbeddingModule", "batch_loss_inputs", "trainable_weights"]

TRAINABLE_FILE = "trainable.safetensors"
SAMPLERS = ("no_duplicates", "task_homogeneous")


@dataclass
class EmbedderTrainConfig:
    """The ``train:`` block of an embedder recipe (defaults: MM-Embed/LamRA choices unless noted).

    Attributes:
        epochs: passes over the examples (LamRA stage I: 2, stage II: 1; MM-Embed: 2).
        max_steps: stop after this many optimizer steps (> 0 overrides ``epochs``).
        batch_size: examples per step (each brings a query, a positive and up to ``negatives_per_query``).
        grad_accumulation: optimizer step every N batches (N separate softmaxes, unlike GradCache).
        lr: peak learning rate (LamRA stage I 4e-4, stage II 1e-4; MM-Embed 1e-4, continual 2e-5).
        weight_decay: AdamW weight decay.
        warmup: linear warm-up: a fraction (< 1) of the steps, or a step count.
        lr_scheduler: a ``transformers`` scheduler name.
        temperature: softmax temperature τ (neither paper states it; 0.05 is this library's default).
        learnable_temperature: optimise log(1/τ) too (CLIP); off: τ fixed, as in both papers.
        symmetric: add the candidate → query loss (off: both papers train query → candidate).
        negatives: ``"batch"`` (MM-Embed eq. 1) or ``"query"`` (UniIR), see the module docstring.
        negatives_per_query: hard negatives per example used in a step (MM-Embed: 1).
        grad_cache_chunk: GradCache chunk size in items (0: off).
        gradient_checkpointing: recompute activations in backward (MM-Embed A.1 uses it).
        sampler: ``"no_duplicates"`` or ``"task_homogeneous"``.
        mix: source weights (``{"flickr8k": 1, "scifact": 1}`` or ``"uniform"``) for a mixture of sources.
        drop_last: drop batches that are not full.
        max_grad_norm: gradient clipping.
        seed: seeds batches, LoRA initialisation and dropout.
        logging_steps / save_steps / save_total_limit: ``transformers.TrainingArguments`` of the same names.
    """

    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 32
    grad_accumulation: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup: float = 0.0
    lr_scheduler: str = "linear"
    temperature: float = 0.05
    learnable_temperature: bool = False
    symmetric: bool = False
    negatives: str = "batch"
    negatives_per_query: int = 1
    grad_cache_chunk: int = 0
    gradient_checkpointing: bool = False
    sampler: str = "no_duplicates"
    mix: Any = None
    drop_last: bool = False
    max_grad_norm: float = 1.0
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 2

    def __post_init__(self) -> None:
        if self.negatives not in HARD_NEGATIVE_SCOPES:
            raise ValueError(f"negatives must be one of {HARD_NEGATIVE_SCOPES}, got {self.negatives!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.batch_size < 2 and not self.negatives_per_query:
            raise ValueError("batch_size 1 without hard negatives has no negatives")
        if not (self.lr > 0 and self.temperature > 0) or self.grad_cache_chunk < 0 or self.negatives_per_query < 0:
            raise ValueError("lr and temperature must be positive; grad_cache_chunk and negatives_per_query >= 0")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EmbedderTrainConfig:
        """Build from a recipe block; unknown keys are an error listing the accepted ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown train option(s) {unknown}; accepted: {sorted(known)}")
        return cls(**values)


class EmbeddingModule(nn.Module):
    """What ``Trainer`` optimises: the embedder's model (often a peft LoRA model) and the temperature."""

    def __init__(self, embedder: Any, config: EmbedderTrainConfig) -> None:
        super().__init__()
        self.embedder = embedder
        self.backbone = embedder.model  # registered so the Trainer sees its parameters
        self.temperature = LearnableTemperature(config.temperature)
        self.temperature.requires_grad_(config.learnable_temperature)

    def encode(self, items: Sequence[Item], role: Role, chunk: int = 0) -> torch.Tensor:
        """Differentiable embeddings of ``items`` (unnormalised), ``chunk`` items per forward (0: all at once)."""
        inputs = self.embedder.prepare(list(items), role)
        if not chunk or len(inputs) <= chunk:
            return self.embedder.forward_inputs(inputs, role)
        parts = [self.embedder.forward_inputs(inputs[i : i + chunk], role) for i in range(0, len(inputs), chunk)]
        return torch.cat(parts)


def batch_loss_inputs(
    batch: Sequence[TrainingExample], negatives_per_query: int
) -> tuple[list[Item], list[Item], torch.Tensor]:
    """``(positives + negatives, negatives, exclude)`` of a batch: candidates in loss order and the false-negative
    mask over the query → candidate logits ``[B positives, M negatives]``."""
    positives = [ex.positive for ex in batch]
    negatives = [n for ex in batch for n in ex.negatives[:negatives_per_query]]
    columns = [c.id for c in positives + negatives]
    exclude = torch.tensor([[cid in ex.positive_ids for cid in columns] for ex in batch], dtype=torch.bool)
    return positives + negatives, negatives, exclude


def trainable_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that require grad, by name (what a checkpoint stores)."""
    return {n: p.detach().cpu().clone() for n, p in module.named_parameters() if p.requires_grad}


class _Examples(Dataset[TrainingExample]):
    def __init__(self, examples: Sequence[TrainingExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> TrainingExample:
        return self.examples[i]


def _collate(batch: list[TrainingExample]) -> dict[str, Any]:
    return {"examples": batch}


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


def _training_arguments(config: EmbedderTrainConfig, output_dir: Path, **overrides: Any) -> Any:
    from transformers import TrainingArguments

    values: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accumulation,
        "learning_rate": config.lr,
        "weight_decay": config.weight_decay,
        "warmup_steps": float(config.warmup),  # a fraction (< 1) of the steps, or a step count
        "lr_scheduler_type": config.lr_scheduler,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "max_grad_norm": config.max_grad_norm,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": config.logging_steps,
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "report_to": [],
        "disable_tqdm": False,
        "use_cpu": not torch.cuda.is_available(),
    }
    values.update(overrides)
    return TrainingArguments(**values)


class EmbedderTrainer:
    """Train ``embedder`` contrastively on ``examples`` (a thin owner of a ``transformers.Trainer`` subclass).

    Args:
        embedder: an embedder with ``model``, ``prepare``, ``forward_inputs`` and ``save`` (e.g. ``MLLMEmbedder``);
            wrap its model in LoRA first (:func:`lumir.train.rewriter.common.apply_lora`) to train adapters only.
        examples: the training examples.
        config: hyperparameters.
        output_dir: checkpoints (``checkpoint-N/``) and the final embedder folder (``model/``).
        callbacks: extra ``transformers.TrainerCallback`` s.
        **training_args: overrides of the derived ``TrainingArguments``.
    """

    def __init__(
        self,
        embedder: Any,
        examples: Sequence[TrainingExample],
        config: EmbedderTrainConfig,
        output_dir: str | Path,
        *,
        callbacks: Sequence[Any] | None = None,
        **training_args: Any,
    ) -> None:
        for name in ("model", "prepare", "forward_inputs", "save"):
            if not hasattr(embedder, name):
                raise TypeError(f"{type(embedder).__name__} cannot be trained here: it has no {name!r}")
        if not examples:
            raise ValueError("no training examples")
        self.embedder = embedder
        self.config = config
        self.output_dir = Path(output_dir)
        torch.manual_seed(config.seed)
        if config.gradient_checkpointing:
            _enable_gradient_checkpointing(embedder.model)
        self.module = EmbeddingModule(embedder, config)
        self.examples = list(examples)
        groups = [ex.source if config.mix is not None else (ex.task or ex.source) for ex in self.examples]
        self.sampler = ExampleBatchSampler(
            [ex.item_ids() for ex in self.examples],
            config.batch_size,
            groups=groups,
            homogeneous=config.sampler == "task_homogeneous",
            weights=config.mix,
            drop_last=config.drop_last,
            seed=config.seed,
        )
        args = _training_arguments(config, self.output_dir, **training_args)
        self.trainer = _ContrastiveHFTrainer(
            owner=self,
            model=self.module,
            args=args,
            train_dataset=_Examples(self.examples),
            data_collator=_collate,
            callbacks=list(callbacks or []),
        )

    def loss(self, batch: Sequence[TrainingExample], query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """The contrastive loss of a batch from its query and candidate embeddings (loss order of
        :func:`batch_loss_inputs`)."""
        n = len(batch)
        _, negatives, exclude = batch_loss_inputs(batch, self.config.negatives_per_query)
        positives, hard = candidates[:n], candidates[n:]
        scope = self.config.negatives
        if scope == "query" and negatives:
            counts = {min(len(ex.negatives), self.config.negatives_per_query) for ex in batch}
            if len(counts) != 1:
                raise ValueError(
                    "negatives='query' needs the same number of hard negatives per example; "
                    f"this batch has {sorted(counts)} (use negatives='batch')"
                )
            per_query = counts.pop()
            hard_in: torch.Tensor | None = hard.reshape(n, per_query, -1)
            # own negatives are never labelled positives (TrainingExample checks), so only the in-batch part masks
            exclude = torch.cat([exclude[:, :n], torch.zeros(n, per_query, dtype=torch.bool)], dim=1)
        else:
            hard_in = hard if negatives else None
        return info_nce(
            query,
            positives,
            logit_scale=self.module.temperature.logit_scale,
            hard_negatives=hard_in,
            hard_negative_scope=scope,
            exclude=exclude if exclude.any() else None,
            symmetric=self.config.symmetric,
        )

    def batch_loss(self, batch: Sequence[TrainingExample]) -> torch.Tensor:
        """The loss of a batch with a full autograd graph (no GradCache)."""
        candidates, _, _ = batch_loss_inputs(batch, self.config.negatives_per_query)
        q = self.module.encode([ex.query for ex in batch], Role.QUERY)
        c = self.module.encode(candidates, Role.CANDIDATE)
        return self.loss(batch, q, c)

    def grad_cache_step(self, batch: Sequence[TrainingExample], scale: float = 1.0) -> torch.Tensor:
        """One GradCache forward/backward (gradients accumulate into the parameters); returns the detached loss."""
        chunk = self.config.grad_cache_chunk
        candidates, _, _ = batch_loss_inputs(batch, self.config.negatives_per_query)
        sides = [
            (self.embedder.prepare([ex.query for ex in batch], Role.QUERY), Role.QUERY),
            (self.embedder.prepare(candidates, Role.CANDIDATE), Role.CANDIDATE),
        ]
        cached: list[list[tuple[Any, Any, torch.Tensor]]] = []
        for inputs, role in sides:  # pass 1: embeddings without a graph, remembering each chunk's RNG state
            parts = []
            for i in range(0, len(inputs), chunk):
                state = _rng_state()
                with torch.no_grad():
                    parts.append(
                        (inputs[i : i + chunk], state, self.embedder.forward_inputs(inputs[i : i + chunk], role))
                    )
            cached.append(parts)
        reps = [torch.cat([p[2] for p in parts]).detach().requires_grad_() for parts in cached]
        loss = self.loss(batch, reps[0], reps[1]) * scale
        loss.backward()  # gradients w.r.t. the embeddings (and the temperature)
        after = _rng_state()
        for (_, role), parts, rep in zip(sides, cached, reps, strict=True):  # pass 2: replay chunks with a graph
            start = 0
            assert rep.grad is not None
            for chunk_inputs, state, emb in parts:
                _set_rng_state(state)
                out = self.embedder.forward_inputs(chunk_inputs, role)
                out.backward(rep.grad[start : start + len(emb)])
                start += len(emb)
        _set_rng_state(after)
        return loss.detach() / scale

    def train(self, *, resume: bool = True) -> dict[str, Any]:
        """Run training (continuing the newest ``checkpoint-N`` in ``output_dir`` when ``resume``), save the final
        embedder to ``output_dir/model`` and return the Trainer's metrics with ``model_dir``."""
        last = _last_checkpoint(self.output_dir) if resume else None
        result = self.trainer.train(resume_from_checkpoint=str(last) if last else None)
        model_dir = self.output_dir / "model"
        self.embedder.model = self.module.backbone.eval()  # inference again: no dropout
        self.embedder.save(model_dir)
        metrics = dict(result.metrics)
        metrics.update(model_dir=str(model_dir), steps=int(result.global_step), config=asdict(self.config))
        return metrics


def _enable_gradient_checkpointing(model: Any) -> None:
    if not hasattr(model, "gradient_checkpointing_enable"):
        raise ValueError(f"{type(model).__name__} does not support gradient checkpointing")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # LoRA on a frozen base: the checkpointed inputs need grad


def _last_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and (p / TRAINABLE_FILE).is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _trainer_base() -> type:
    from transformers import Trainer

    return Trainer


class _ContrastiveHFTrainer(_trainer_base()):  # type: ignore[misc]
    """``transformers.Trainer`` with lumir's batch sampler, loss, GradCache step and trainable-only checkpoints."""

    def __init__(self, *, owner: EmbedderTrainer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.owner = owner

    def get_train_dataloader(self) -> DataLoader[Any]:
        loader = DataLoader(self.train_dataset, batch_sampler=self.owner.sampler, collate_fn=_collate)
        return self.accelerator.prepare(loader)

    def compute_loss(
        self, model: nn.Module, inputs: Mapping[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        loss = self.owner.batch_loss(inputs["examples"])
        return (loss, {}) if return_outputs else loss

    def training_step(self, model: nn.Module, inputs: Mapping[str, Any], num_items_in_batch: Any = None) -> Any:
        if not self.owner.config.grad_cache_chunk:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        scale = 1.0 / self.current_gradient_accumulation_steps
        return self.owner.grad_cache_step(inputs["examples"], scale=scale).to(self.args.device) * scale

    def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
        from safetensors.torch import save_file

        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file(trainable_weights(self.model), str(out / TRAINABLE_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        from safetensors.torch import load_file

        path = Path(resume_from_checkpoint) / TRAINABLE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{resume_from_checkpoint} is not an embedder checkpoint: no {TRAINABLE_FILE}")
        target = model or self.model
        state = load_file(str(path))
        missing = sorted(set(state) - {n for n, _ in target.named_parameters()})
        if missing:
            raise ValueError(f"checkpoint {resume_from_checkpoint} has weights this model lacks: {missing[:3]}")
        params = dict(target.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))

    def _load_best_model(self) -> None:  # pragma: no cover - best-model tracking is not used
        return None


def steps_per_epoch(trainer: EmbedderTrainer) -> int:
    """Optimizer steps per epoch (batches / gradient accumulation)."""
    return max(1, math.ceil(len(trainer.sampler) / trainer.config.grad_accumulation))
