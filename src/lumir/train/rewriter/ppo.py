"""MGQRe §3.4 stage 3: PPO of the rewriter against a retriever's reward, with an adaptive KL penalty (eq. 5).

trl no longer ships PPO, so this is a compact PPO over a *sequence-level* reward, written for lumir:

1. **Rollout.** For a batch of ``batch_size`` queries, sample ``group_size`` (G) rewrites each from the policy
   (left-padded batched ``generate`` with sampling, on :data:`lumir.rewrite.prompts.TRAINED` rendered by the chat
   template, exactly as :class:`~lumir.rewrite.trained.TrainedRewriter` serves it). The sampled token ids are
   scored as sampled (prompt + completion up to and including EOS, re-laid right-padded), never re-tokenised text.
2. **Reward and KL.** ``r(x, y)`` from the recipe's reward (:mod:`lumir.train.rewriter.rewards`, eq. 4 by
   default); the per-sequence KL estimate ``log π(y|x) - log π_PRO(y|x)`` (sums over completion tokens) against a
   frozen copy of the PRO policy; the shaped reward ``r - β·KL`` of eq. 5.
3. **Advantage: group-mean baseline.** ``A_i = R_i - mean(R of the G rewrites of the same query)``. The reward is
   one terminal scalar per rewrite, so a per-token value head would only have to learn that scalar per prompt; the
   G samples already give a prompt-specific baseline at no cost, without a second loss, extra parameters or a
   critic that is wrong early in a short run. (It is RLOO's leave-one-out baseline scaled by (G-1)/G.)
   ``normalize_advantages`` also divides by the batch's standard deviation.
4. **Update.** ``ppo_epochs`` passes over the rollout in shuffled mini-batches of the clipped surrogate
   (:func:`ppo_clip_loss`) on the ratio of new to old *sequence* probabilities, ε = 0.2; then β moves by
   :class:`AdaptiveKLController` (Ziegler et al. 2019), starting at the paper's 0.1 (§4.1.3).

Sampling at ``temperature: 1``, ``top_k: 0``, ``top_p: 1`` (the defaults) draws from π itself, which the KL
estimate and the importance ratio assume; other values train on a tempered/truncated proposal. Dropout is off
throughout (the policy stays in eval mode), so old and new log-probabilities agree before the first update.

Every step is seeded by ``(seed, step)`` (data order, sampling, mini-batch order), and ``checkpoint.pt``
(trainable weights, optimizer, step, KL controller) is written every ``save_steps`` steps, so a rerun with
``resume`` continues exactly where the last checkpoint left off. One line per step goes to ``log.jsonl``: mean
reward, KL, β, score inflation, loss, clip fraction, mean rewrite length, the reward's diagnostics and one sampled
rewrite (to read what the reward pays for). The rewriter lands in ``<output_dir>/model`` (stage ``ppo``, parent =
the PRO folder), with ``recipe.yaml`` and ``result.json`` beside it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from lumir.train.rewriter.common import EncodedBatch, JsonlLog, RewriterTrainResult, prompt_text, sequence_logprobs
from lumir.train.rewriter.rewards import RewardFunction

__all__ = [
    "AdaptiveKLController",
    "PPOConfig",
    "PPOTrainer",
    "Rollout",
    "group_advantages",
    "ppo_clip_loss",
    "train_ppo",
]

CHECKPOINT = "checkpoint.pt"
_CHECKPOINT_FORMAT = "lumir-ppo-checkpoint/1"


@dataclass
class PPOConfig:
    """The recipe's ``train:`` block (paper values where §4.1.3 gives them; lumir's choices otherwise).

    Attributes:
        epochs: passes over the training queries (paper: 1).
        batch_size: queries per step (paper: 32); each contributes ``group_size`` rewrites.
        group_size: rewrites sampled per query (G >= 2, for the group-mean baseline).
        ppo_epochs: optimisation passes over each rollout.
        mini_batch_size: sequences per gradient step (None: the whole rollout).
        learning_rate: AdamW learning rate (paper: 5e-6), constant.
        clip: PPO's ε.
        kl_coef: initial β (paper: 0.1).
        kl_target: the KL (nats per sequence) the adaptive controller steers to; None keeps β fixed.
        kl_horizon: the controller's horizon in sequences (Ziegler et al.: 10,000).
        max_steps: stop after this many steps (None: ``epochs`` over the data).
        save_steps: checkpoint period in steps.
    """

    epochs: int = 1
    batch_size: int = 32
    group_size: int = 4
    ppo_epochs: int = 4
    mini_batch_size: int | None = None
    learning_rate: float = 5e-6
    weight_decay: float = 0.0
    clip: float = 0.2
    kl_coef: float = 0.1
    kl_target: float | None = 6.0
    kl_horizon: int = 10000
    normalize_advantages: bool = False
    max_new_tokens: int = 48
    max_prompt_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_grad_norm: float | None = 1.0
    max_steps: int | None = None
    save_steps: int = 50
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 for the group-mean baseline, got {self.group_size}")
        if self.batch_size < 1 or self.ppo_epochs < 1 or self.epochs < 1 or self.save_steps < 1:
            raise ValueError("batch_size, ppo_epochs, epochs and save_steps must be >= 1")
        if not 0 < self.clip < 1:
            raise ValueError(f"clip must be in (0, 1), got {self.clip}")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> PPOConfig:
        """Build from a recipe block; unknown keys raise ValueError naming them and the known ones."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(options) - known)
        if extra:
            raise ValueError(f"unknown PPO options {extra}; known: {sorted(known)}")
        return cls(**dict(options))


class AdaptiveKLController:
    """Ziegler et al. (2019)'s adaptive KL coefficient: ``β <- β·(1 + clip(KL/target - 1, -0.2, 0.2)·n/horizon)``.

    With ``target=None`` β stays fixed.

    Example:
        >>> kl = AdaptiveKLController(0.1, target=6.0, horizon=100)
        >>> round(kl.update(9.0, n_steps=10), 6)  # KL 50% over target: error clipped to +0.2, β grows 2%
        0.102
    """

    def __init__(self, init: float = 0.1, *, target: float | None = 6.0, horizon: int = 10000) -> None:
        if target is not None and target <= 0:
            raise ValueError(f"the KL target must be > 0, got {target}")
        self.value, self.target, self.horizon = float(init), target, int(horizon)

    def update(self, current: float, n_steps: int) -> float:
        """Move β after a step whose mean KL was ``current`` over ``n_steps`` sampled sequences; return it."""
        if self.target is not None:
            error = min(max(current / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.value, self.target, self.horizon = float(state["value"]), state["target"], int(state["horizon"])


def ppo_clip_loss(
    new_logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, as a loss to minimise, and the share of clipped ratios.

    ``loss = -mean(min(ρ·A, clip(ρ, 1-ε, 1+ε)·A))`` with ``ρ = exp(new - old)``; the clip fraction counts
    ``|ρ - 1| > ε``. Gradients reach ``new_logprobs`` only.

    Example:
        >>> new = torch.tensor([1.5, 0.5, 1.0]).log()
        >>> loss, frac = ppo_clip_loss(new, torch.zeros(3), torch.tensor([1.0, -1.0, 2.0]))
        >>> round(loss.item(), 6), round(frac.item(), 4)
        (-0.8, 0.6667)
    """
    old, adv = old_logprobs.detach().to(new_logprobs), advantages.detach().to(new_logprobs)
    ratio = torch.exp(new_logprobs - old)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)
    clipped = ((ratio - 1.0).abs() > clip).float().mean()
    return -surrogate.mean(), clipped.detach()


def group_advantages(rewards: torch.Tensor, group_size: int, *, normalize: bool = False) -> torch.Tensor:
    """``R_i`` minus the mean of its group (consecutive blocks of ``group_size``); with ``normalize`` the result is
    divided by its standard deviation over the batch.

    Example:
        >>> group_advantages(torch.tensor([1.0, 3.0, 0.0, 0.0]), 2).tolist()
        [-1.0, 1.0, 0.0, 0.0]
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.reshape(-1, group_size)
    adv = (grouped - grouped.mean(-1, keepdim=True)).reshape(-1)
    if normalize and adv.numel() > 1:
        adv = adv / adv.std().clamp_min(1e-8)
    return adv


@dataclass
class Rollout:
    """G sampled rewrites per query, as sampled: texts for the reward, token ids for the log-probabilities."""

    queries: list[str]
    targets: list[str]
    texts: list[str]
    batch: EncodedBatch
    lengths: torch.Tensor


def _subset(batch: EncodedBatch, idx: torch.Tensor) -> EncodedBatch:
    width = int(batch.attention_mask[idx].sum(-1).max())
    return EncodedBatch(
        batch.input_ids[idx, :width], batch.attention_mask[idx, :width], batch.completion_mask[idx, :width]
    )


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63)


class PPOTrainer:
    """One PPO step at a time over any reward callable (see the module doc); :func:`train_ppo` drives it."""

    def __init__(self, policy: Any, reference: Any, tokenizer: Any, reward: RewardFunction, config: PPOConfig) -> None:
        self.policy, self.reference, self.tokenizer, self.reward, self.config = (
            policy,
            reference,
            tokenizer,
            reward,
            config,
        )
        self.policy.eval()  # no dropout: old and new log-probs agree before the first update
        self.params = [p for p in policy.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the policy has no trainable parameters")
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.kl = AdaptiveKLController(config.kl_coef, target=config.kl_target, horizon=config.kl_horizon)
        self.step_count = 0

    # rollouts -------------------------------------------------------------------------------------------------------

    def rollout(self, queries: Sequence[str], targets: Sequence[str], *, seed: int) -> Rollout:
        """Sample ``group_size`` rewrites per query (rows grouped by query: q0's G rewrites first)."""
        from transformers import GenerationConfig

        cfg, tok = self.config, self.tokenizer
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        sides = tok.padding_side, tok.truncation_side
        tok.padding_side = tok.truncation_side = "left"
        try:
            enc = tok(
                [prompt_text(tok, q) for q in queries],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=cfg.max_prompt_tokens,
                add_special_tokens=False,
            )
        finally:
            tok.padding_side, tok.truncation_side = sides
        gen_config = GenerationConfig(
            do_sample=True,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            num_return_sequences=cfg.group_size,
            pad_token_id=pad,
            eos_token_id=eos,
        )
        device = next(self.policy.parameters()).device
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.policy.generate(
                input_ids=enc["input_ids"].to(device),
                attention_mask=enc["attention_mask"].to(device),
                generation_config=gen_config,
            ).cpu()
        width = enc["input_ids"].shape[1]
        rows, comp_lens, texts = [], [], []
        for i in range(out.shape[0]):
            q = i // cfg.group_size
            prompt = enc["input_ids"][q][enc["attention_mask"][q].bool()].tolist()
            completion = out[i, width:].tolist()
            if eos in completion:
                completion = completion[: completion.index(eos) + 1]
            body = completion[:-1] if completion and completion[-1] == eos else completion
            texts.append(tok.decode(body, skip_special_tokens=True).strip())
            comp_lens.append(len(body))
            rows.append((prompt, completion))
        longest = max(len(p) + len(c) for p, c in rows)
        ids = torch.full((len(rows), longest), pad, dtype=torch.long)
        att = torch.zeros((len(rows), longest), dtype=torch.long)
        comp = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, (p, c) in enumerate(rows):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            att[i, : len(p) + len(c)] = 1
            comp[i, len(p) : len(p) + len(c)] = 1
        rep = [x for x in queries for _ in range(cfg.group_size)]
        reps_t = [t for t in targets for _ in range(cfg.group_size)]
        return Rollout(rep, reps_t, texts, EncodedBatch(ids, att, comp), torch.tensor(comp_lens, dtype=torch.float))

    def _logprobs(self, model: Any, batch: EncodedBatch) -> torch.Tensor:
        size = self.config.mini_batch_size or batch.input_ids.shape[0]
        with torch.no_grad():
            parts = [
                sequence_logprobs(model, _subset(batch, idx), normalize=False).cpu()
                for idx in torch.arange(batch.input_ids.shape[0]).split(size)
            ]
        return torch.cat(parts)

    # one step -------------------------------------------------------------------------------------------------------

    def step(self, queries: Sequence[str], targets: Sequence[str]) -> dict[str, Any]:
        """Rollout, reward, KL-shaped group advantages, ``ppo_epochs`` clipped updates, β update; the step's stats."""
        cfg = self.config
        seed = _step_seed(cfg.seed, self.step_count)
        roll = self.rollout(queries, targets, seed=seed)
        old = self._logprobs(self.policy, roll.batch)
        ref = self._logprobs(self.reference, roll.batch)
        scored = self.reward(roll.queries, roll.texts, roll.targets)
        rewards = scored.rewards.detach().float().cpu()
        kl = old - ref
        beta = self.kl.value
        shaped = rewards - beta * kl
        adv = group_advantages(shaped, cfg.group_size, normalize=cfg.normalize_advantages)
        n = adv.numel()
        size = cfg.mini_batch_size or n
        order = torch.Generator().manual_seed(seed)
        losses, fracs = [], []
        for _ in range(cfg.ppo_epochs):
            for idx in torch.randperm(n, generator=order).split(size):
                new = sequence_logprobs(self.policy, _subset(roll.batch, idx), normalize=False)
                loss, frac = ppo_clip_loss(new, old[idx], adv[idx], cfg.clip)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                losses.append(float(loss.detach()))
                fracs.append(float(frac))
        self.kl.update(float(kl.mean()), n)
        self.step_count += 1
        return {
            "reward": float(rewards.mean()),
            "reward_std": float(rewards.std()) if n > 1 else 0.0,
            "kl": float(kl.mean()),
            "beta": beta,
            "score_inflation": scored.score_inflation,
            "loss": sum(losses) / len(losses),
            "clip_fraction": sum(fracs) / len(fracs),
            "length": float(roll.lengths.mean()),
            "words": sum(len(t.split()) for t in roll.texts) / len(roll.texts),
            "shaped_reward": float(shaped.mean()),
            "sample": {"query": roll.queries[0], "rewrite": roll.texts[0], "reward": float(rewards[0])},
            **{k: v for k, v in scored.extras.items() if k not in ("reward", "kl", "beta")},
        }

    # checkpoints ----------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        trainable = {n: p.detach().cpu().clone() for n, p in self.policy.named_parameters() if p.requires_grad}
        return {
            "format": _CHECKPOINT_FORMAT,
            "step": self.step_count,
            "trainable": trainable,
            "optimizer": self.optimizer.state_dict(),
            "kl": self.kl.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"not a PPO checkpoint (format {state.get('format')!r})")
        params = dict(self.policy.named_parameters())
        missing = sorted(set(state["trainable"]) - set(params))
        if missing:
            raise ValueError(f"the checkpoint has weights the policy lacks (first: {missing[:3]})")
        with torch.no_grad():
            for name, value in state["trainable"].items():
                params[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl.load_state_dict(state["kl"])
        self.step_count = int(state["step"])


def _batch_indices(n: int, step: int, cfg: PPOConfig) -> list[int]:
    """The rows of ``step``: each epoch is a fresh seeded permutation cut into ``batch_size`` slices."""
    epoch, j = divmod(step, math.ceil(n / cfg.batch_size))
    order = list(range(n))
    random.Random(f"{cfg.seed}:epoch:{epoch}").shuffle(order)
    return order[j * cfg.batch_size : (j + 1) * cfg.batch_size]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_ppo(
    recipe: Mapping[str, Any],
    *,
    output_dir: str | Path,
    resume: bool = True,
    reward: RewardFunction | None = None,
    show_progress: bool = True,
) -> RewriterTrainResult:
    """Run a ``stage: ppo`` rewriter recipe (blocks ``model``, ``data``, ``reward``, ``train``; see
    :mod:`lumir.train.rewriter.rl` and :class:`PPOConfig`); the model lands in ``<output_dir>/model``.

    Args:
        resume: continue from ``<output_dir>/checkpoint.pt`` when there is one; False starts afresh (the previous
            run's checkpoint and step log are removed).
        reward: use this reward callable instead of building the recipe's ``reward:`` block.

    Raises:
        ValueError: unknown recipe keys or ``train`` options, targets missing from the reward's pool, or a
            checkpoint written for another starting policy.
    """
    from transformers import set_seed

    from lumir.progress import progress
    from lumir.train.rewriter.loop import check_keys, finish, load_policy, quiet_warnings
    from lumir.train.rewriter.rl import (
        RL_RECIPE_KEYS,
        load_reference,
        prepare_reward,
        read_queries,
        reference_source,
        summarize_log,
        truncate_log,
    )

    t0 = time.perf_counter()
    check_keys(recipe, RL_RECIPE_KEYS, block="recipe")
    cfg = PPOConfig.from_dict(recipe.get("train") or {})
    rows = read_queries(recipe.get("data") or {})
    reward = prepare_reward(recipe, rows, reward)
    model_cfg = dict(recipe.get("model") or {})
    with quiet_warnings():
        set_seed(cfg.seed)
        policy = load_policy(model_cfg)
        ref_source = reference_source(model_cfg)
        reference = load_reference(ref_source, str(model_cfg.get("dtype") or "float32"))
    device = _device(cfg.device)
    policy.model.to(device)
    reference.to(device)
    trainer = PPOTrainer(policy.model, reference, policy.tokenizer, reward, cfg)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log, ckpt = JsonlLog(out / "log.jsonl"), out / CHECKPOINT
    resumed_from = 0
    if resume and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if state.get("reference") != ref_source:
            raise ValueError(f"{ckpt} was written for a run from {state.get('reference')!r}, not {ref_source!r}")
        trainer.load_state_dict(state)
        resumed_from = trainer.step_count
        truncate_log(log, resumed_from)
    else:
        log.path.unlink(missing_ok=True)
        ckpt.unlink(missing_ok=True)

    total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * math.ceil(len(rows) / cfg.batch_size)
    with (
        quiet_warnings(),
        progress(total=total, initial=trainer.step_count, desc="ppo", unit="step", enabled=show_progress) as bar,
    ):
        while trainer.step_count < total:
            idx = _batch_indices(len(rows), trainer.step_count, cfg)
            stats = trainer.step([rows[i].query for i in idx], [rows[i].target for i in idx])
            epoch = round(trainer.step_count / math.ceil(len(rows) / cfg.batch_size), 4)
            log.write({"kind": "train", "step": trainer.step_count, "epoch": epoch, **stats})
            if trainer.step_count % cfg.save_steps == 0 or trainer.step_count == total:
                _save_checkpoint(ckpt, {**trainer.state_dict(), "reference": ref_source})
            bar.update(1)
            bar.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['kl']:.2f}")

    metrics = {**summarize_log(log.read()), "train_rows": len(rows), "resumed_from_step": resumed_from}
    saved = dict(recipe)
    if not saved.get("reward"):
        saved["reward"] = reward.spec() if hasattr(reward, "spec") else {"type": type(reward).__name__}
    return finish(policy, out, saved, stage="ppo", metrics=metrics, seconds=time.perf_counter() - t0)


def _save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save(dict(state), tmp)
    tmp.replace(path)
