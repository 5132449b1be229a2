"""MGQRe step 2, preference rank optimisation (§3.3, eq. 3): PRO (Song et al., 2024) on the retriever's rankings.

Recipe (``recipes/rewriter/pro.yaml``): the SFT recipe's blocks, ``stage: pro``, ``model.init`` = the SFT artifact,
``data.train`` = D_PRO rows ``{"id", "prompt": low, "rewrites": [best first, ...], "scores": [...]}`` (2..k entries,
``scores`` being the retriever's score of the ground-truth image for each rewrite), and three more ``train:`` keys:
``rank_length`` (k, the paper's 5), ``sft_weight`` (0: eq. 3 as written) and ``tie_eps`` (see :func:`pro_loss`).

Each optimiser step scores every candidate of ``batch_size`` lists with the policy (length-normalised completion
log-probabilities, :func:`lumir.train.rewriter.common.sequence_logprobs`) and minimises :func:`pro_loss`.
Besides the loss, the log reports ``top1`` (lists whose best rewrite gets the highest log-probability) and
``pair_acc`` (strictly ordered pairs the policy orders like the retriever), on training batches and the holdout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from lumir.train.rewriter.common import (
    EncodedBatch,
    JsonlLog,
    RewriterTrainResult,
    encode_completions,
    sequence_logprobs,
)
from lumir.train.rewriter.loop import (
    JsonlLogCallback,
    ProgressBarCallback,
    check_keys,
    final_eval,
    finish,
    load_policy,
    prepare_output,
    quiet_warnings,
    read_rows,
    split_holdout,
    strip_default_callbacks,
    train_config,
    training_arguments,
)
from lumir.train.rewriter.sft import DATA_KEYS, RECIPE_KEYS

__all__ = ["PRO_DEFAULTS", "PROCollator", "PROTrainer", "pro_loss", "ranking_accuracy", "train_pro"]

logger = logging.getLogger(__name__)

PRO_DEFAULTS: dict[str, Any] = {"rank_length": 5, "sft_weight": 0.0, "tie_eps": 1e-6}
"""PRO's ``train:`` keys: the list length k (MGQRe §4.1.3: 5), the SFT term's weight and the tie margin."""


def pro_loss(
    logps: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    sft_weight: float = 0.0,
    tie_eps: float = 1e-6,
) -> torch.Tensor:
    """MGQRe's eq. 3, the listwise Bradley–Terry loss of PRO (Song et al., 2024), averaged over the batch.

    For each list of k candidate rewrites ``y_1 ≻ … ≻ y_k`` of one query::

        L = Σ_{j<k} −log( exp(π_j / T_j^j) / Σ_{i≥j} exp(π_i / T_j^i) ),
        T_j^i = 1 / (r_j − r_i) for i > j,   T_j^j = min_{i>j} T_j^i

    Two different things play the two roles of "r" in §3.3:

    - ``rewards`` r are the **retriever's scores** of the ground-truth image for each rewrite (D_PRO's ``scores``):
      they order the list (best first) and set the temperatures, so a candidate far below ``y_j`` is pushed down
      hard and one nearly as good as ``y_j`` barely at all; ``y_j``'s own temperature is its sharpest.
    - ``logps`` π are the **policy's length-normalised log-probabilities** of each rewrite given the prompt (the
      "normalized log probability" that eq. 2 calls the reward): the only thing the gradient flows through.

    Args:
        logps: ``(B, k)`` policy scores, column 0 the retriever's best.
        rewards: ``(B, k)`` retriever scores, non-increasing along each row where ``mask`` holds.
        mask: ``(B, k)`` True for real candidates; a list shorter than k fills its first entries and pads the rest
            (padded ``logps`` values are ignored). None: every list has k candidates.
        sft_weight: adds ``sft_weight × (−π_1)``, the (token-averaged) NLL of the best candidate, as the original PRO
            objective does; 0 (the default) is MGQRe's eq. 3 alone.
        tie_eps: tied scores (``r_j == r_i``) would make ``T`` infinite; the gap is floored at ``tie_eps``, so a tie
            puts ``exp(π_i × tie_eps) ≈ 1`` in the denominator (no preference between the two, and almost no
            gradient through the tied candidate), and a list whose candidates all tie contributes ≈ log of its length
            and no useful gradient.

    Returns:
        A scalar: the sum over ``j`` of the terms above, averaged over the B lists (a list with fewer than two
        candidates adds 0), plus the SFT term.

    Raises:
        ValueError: a list is not ordered best-first by ``rewards`` (or the shapes differ).

    Example:
        >>> round(float(pro_loss(torch.tensor([[-1.0, -2.0]]), torch.tensor([[0.9, 0.4]]))), 4)  # softplus(-0.5)
        0.4741
    """
    if logps.shape != rewards.shape or logps.dim() != 2:
        raise ValueError(f"logps {tuple(logps.shape)} and rewards {tuple(rewards.shape)} must both be (B, k)")
    k = logps.shape[1]
    valid = (
        torch.ones_like(logps, dtype=torch.bool) if mask is None else mask.to(device=logps.device, dtype=torch.bool)
    )
    r = rewards.to(device=logps.device, dtype=logps.dtype)
    gap = r[:, :, None] - r[:, None, :]  # gap[b, j, i] = r_j − r_i = 1 / T_j^i
    later = torch.ones(k, k, dtype=torch.bool, device=logps.device).triu(diagonal=1)  # i > j
    pair = later & valid[:, :, None] & valid[:, None, :]
    if bool((pair & (gap < 0)).any()):
        raise ValueError("each list must be ordered best-first by its rewards (non-increasing along dim 1)")
    scale = torch.where(pair, gap.clamp_min(tie_eps), torch.zeros_like(gap))
    own = scale.max(dim=-1).values  # 1 / T_j^j = max_{i>j} (r_j − r_i)
    active = pair.any(dim=-1)  # j has a later candidate (so j < k and j is real)
    pos = logps * own  # π_j / T_j^j
    neg = (logps[:, None, :] * scale).masked_fill(~pair, float("-inf"))  # π_i / T_j^i, i > j
    terms = torch.logsumexp(torch.cat([pos[:, :, None], neg], dim=-1), dim=-1) - pos
    loss = torch.where(active, terms, torch.zeros_like(terms)).sum(dim=-1).mean()
    if sft_weight:
        best = valid[:, 0]
        loss = loss - sft_weight * (logps[:, 0] * best).sum() / best.sum().clamp_min(1)
    return loss


def ranking_accuracy(logps: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, int]:
    """Counts for ``top1`` (lists whose best candidate has the highest ``logps``) and ``pair_acc`` (strictly ordered
    pairs, ``r_j > r_i``, with ``logps_j > logps_i``): ``{"lists", "top1_hits", "pairs", "pair_hits"}``.

    Example:
        >>> ranking_accuracy(torch.tensor([[-1.0, -2.0, -0.5]]), torch.tensor([[3.0, 2.0, 1.0]]))
        {'lists': 1, 'top1_hits': 0, 'pairs': 3, 'pair_hits': 1}
    """
    with torch.no_grad():
        valid = torch.ones_like(logps, dtype=torch.bool) if mask is None else mask.to(logps.device).bool()
        r = rewards.to(logps.device, logps.dtype)
        lists = valid.sum(-1) >= 2
        masked = logps.masked_fill(~valid, float("-inf"))
        top1 = (masked[:, 1:].max(dim=-1).values < logps[:, 0]) & lists
        k = logps.shape[1]
        later = torch.ones(k, k, dtype=torch.bool, device=logps.device).triu(diagonal=1)
        strict = later & valid[:, :, None] & valid[:, None, :] & (r[:, :, None] > r[:, None, :])
        right = strict & (logps[:, :, None] > logps[:, None, :])
        return {
            "lists": int(lists.sum()),
            "top1_hits": int(top1.sum()),
            "pairs": int(strict.sum()),
            "pair_hits": int(right.sum()),
        }


def _sorted_rows(rows: Sequence[dict], rank_length: int) -> list[dict]:
    """D_PRO rows checked, sorted best-first by score and cut to ``rank_length`` candidates (lists of < 2 dropped)."""
    out = []
    for row in rows:
        rewrites, scores = row["rewrites"], row["scores"]
        if len(rewrites) != len(scores) or not all(isinstance(t, str) for t in rewrites):
            raise ValueError(f"D_PRO row {row.get('id')!r}: 'rewrites' (texts) and 'scores' must have the same length")
        ranked = sorted(zip(rewrites, (float(s) for s in scores), strict=True), key=lambda p: -p[1])[:rank_length]
        if len(ranked) >= 2:
            out.append({**row, "rewrites": [t for t, _ in ranked], "scores": [s for _, s in ranked]})
    return out


@dataclass
class PROCollator:
    """Lists of D_PRO rows → one right-padded batch of all their (prompt, rewrite) pairs, plus the ``(B, k)``
    ``rewards``/``mask`` and each pair's ``slots`` index into the flattened ``B × k`` grid (no padded candidate is
    ever run through the model)."""

    tokenizer: Any
    rank_length: int = 5
    max_length: int = 128

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        k = self.rank_length
        rewards = torch.zeros(len(rows), k)
        mask = torch.zeros(len(rows), k, dtype=torch.bool)
        queries, completions, slots = [], [], []
        for b, row in enumerate(rows):
            for j, (text, score) in enumerate(zip(row["rewrites"][:k], row["scores"][:k], strict=True)):
                queries.append(str(row["prompt"]))
                completions.append(str(text))
                slots.append(b * k + j)
                rewards[b, j] = float(score)
                mask[b, j] = True
        enc = encode_completions(self.tokenizer, queries, completions, max_length=self.max_length)
        return {
            "input_ids": enc.input_ids,
            "attention_mask": enc.attention_mask,
            "completion_mask": enc.completion_mask,
            "slots": torch.tensor(slots, dtype=torch.long),
            "rewards": rewards,
            "mask": mask,
        }


def candidate_logps(model: Any, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``(B, k)`` length-normalised log-probabilities of a :class:`PROCollator` batch (0 where padded)."""
    batch = EncodedBatch(inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"])
    flat = sequence_logprobs(model, batch, normalize=True)
    shape = inputs["mask"].shape
    grid = flat.new_zeros(shape[0] * shape[1]).index_copy(0, inputs["slots"].to(flat.device), flat)
    return grid.view(shape)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: Sequence[dict]) -> None:
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


class PROTrainer(Trainer):
    """A ``transformers.Trainer`` whose loss is :func:`pro_loss` over each batch's candidate lists.

    Batches come from :class:`PROCollator`; the loss is already a per-list mean, so gradient accumulation divides
    it by the number of micro-batches as usual. ``top1``/``pair_acc`` join the training and evaluation logs.
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, sft_weight: float = 0.0, tie_eps: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sft_weight, self.tie_eps = float(sft_weight), float(tie_eps)
        self._counts: dict[str, dict[str, int]] = {"train": {}, "eval": {}}

    def _count(self, split: str, logps: torch.Tensor, inputs: Mapping[str, torch.Tensor]) -> None:
        counts = self._counts[split]
        for key, value in ranking_accuracy(logps.detach(), inputs["rewards"], inputs["mask"]).items():
            counts[key] = counts.get(key, 0) + value

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        logps = candidate_logps(model, inputs)
        loss = pro_loss(logps, inputs["rewards"], inputs["mask"], sft_weight=self.sft_weight, tie_eps=self.tie_eps)
        self._count("train" if model.training else "eval", logps, inputs)
        return (loss, {"logps": logps}) if return_outputs else loss

    def prediction_step(
        self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "eval" if any(k.startswith("eval_") for k in logs) else "train" if "loss" in logs else None
        if split is not None and self._counts[split]:
            c, prefix = self._counts[split], "eval_" if split == "eval" else ""
            if c.get("lists"):
                logs[f"{prefix}top1"] = c["top1_hits"] / c["lists"]
            if c.get("pairs"):
                logs[f"{prefix}pair_acc"] = c["pair_hits"] / c["pairs"]
            self._counts[split] = {}
        super().log(logs, start_time)


def train_pro(
    recipe: Mapping[str, Any],
    *,
    output_dir: str | Path,
    resume: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
    show_progress: bool = True,
) -> RewriterTrainResult:
    """Run a ``stage: pro`` rewriter recipe (see the module docstring); the model lands in ``<output_dir>/model``.

    The policy starts from ``model.init`` (the SFT artifact, loaded trainable: a LoRA adapter keeps training) and
    is saved as stage ``pro`` with that artifact as its ``parent``.

    Raises:
        ValueError: unknown recipe keys, unordered lists, or a holdout that leaves nothing to train on.
        FileNotFoundError / DataFormatError: missing or malformed ``data.train``.
    """
    from transformers import set_seed

    t0 = time.perf_counter()
    check_keys(recipe, RECIPE_KEYS, block="recipe")
    data_cfg = dict(recipe.get("data") or {})
    check_keys(data_cfg, DATA_KEYS, block="data")
    if not data_cfg.get("train"):
        raise ValueError("data.train is required: the D_PRO jsonl file(s)")
    cfg = train_config(recipe.get("train"), PRO_DEFAULTS)
    k = int(cfg["rank_length"])
    if k < 2:
        raise ValueError(f"train.rank_length must be >= 2, got {k}")
    rows = _sorted_rows(read_rows(data_cfg["train"], {"prompt": str, "rewrites": list, "scores": list}), k)
    if not rows:
        raise ValueError(f"no D_PRO list in {data_cfg['train']} has two or more rewrites (data.train)")
    train_rows, held = split_holdout(rows, data_cfg.get("holdout"))
    model_cfg = dict(recipe.get("model") or {})
    if not model_cfg.get("init"):
        logger.warning("model.init is not set: PRO starts from the base model instead of an SFT artifact")

    out = Path(output_dir)
    checkpoint = prepare_output(out, resume=resume)
    with quiet_warnings():  # peft/transformers deprecation notices while loading
        set_seed(int(cfg["seed"]))
        policy = load_policy(model_cfg)
    args = training_arguments(cfg, out, evaluate=bool(held), remove_unused_columns=False, label_names=[])
    log = JsonlLog(out / "log.jsonl")
    with quiet_warnings():
        trainer = PROTrainer(
            model=policy.model,
            args=args,
            data_collator=PROCollator(policy.tokenizer, k, int(cfg["max_length"])),
            train_dataset=_Rows(train_rows),
            eval_dataset=_Rows(held) if held else None,
            processing_class=policy.tokenizer,
            callbacks=[JsonlLogCallback(log), ProgressBarCallback("pro", show_progress), *callbacks],
            sft_weight=float(cfg["sft_weight"]),
            tie_eps=float(cfg["tie_eps"]),
        )
        strip_default_callbacks(trainer)
        output = trainer.train(resume_from_checkpoint=checkpoint)
        records = [r for r in log.read() if r.get("kind") == "train" and "loss" in r]
        metrics: dict[str, Any] = {
            "steps": int(trainer.state.global_step),
            "epochs": round(float(trainer.state.epoch or 0), 4),
            "train_loss": records[-1]["loss"] if records else float("nan"),
            "first_loss": records[0]["loss"] if records else float("nan"),
            "mean_train_loss": float(output.training_loss),
            "train_lists": len(train_rows),
            "holdout_lists": len(held),
            "rank_length": k,
            "resumed_from_step": int(Path(checkpoint).name.rpartition("-")[2]) if checkpoint else 0,
        }
        if held:
            metrics.update(final_eval(trainer, log))
        return finish(policy, out, recipe, stage="pro", metrics=metrics, seconds=time.perf_counter() - t0)
