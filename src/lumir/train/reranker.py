"""LamRA-Rank training (LamRA §3.4): a LoRA on a chat model, trained jointly for pointwise and listwise reranking.

Losses (pure functions on the logits of the first answer position, next-token cross-entropy over the full
vocabulary, as the paper's ``L_ce`` on the reranker's autoregressive output):

- :func:`pointwise_loss` — ``L_point = L_ce(YES, Reranker(q, c_pos)) + L_ce(NO, Reranker(q, c_neg))``;
- :func:`listwise_loss` — ``L_list = L_ce(GT-POSITION, Reranker(q, c_1, …, c_pos, …, c_M))``;
- :func:`lamra_rank_loss` — ``L_rank = L_point + L_list`` (optionally weighted).

Only the answer token is trained: the rerankers read exactly one token at the first assistant position
(:meth:`~lumir.models.chat.hf.TransformersChatModel.token_logprobs`), and the loss is taken there, on the same ids.

Recipe (``recipes/reranker/lamra_rank.yaml``; ``lumir train reranker --config ... [--profile cpu]``)::

    kind: reranker
    model: {base: smollm2 | FOLDER, lora: {r, alpha, dropout, target_modules}, dtype: float32, device: auto}
    data: {train: ROWS.jsonl | [...], corpus: ITEMS.jsonl | BEIR_FOLDER, holdout: 0.1, top: 100}
    objective: {pointwise: true, listwise: true, list_negatives: [2, 5], point_weight: 1.0, list_weight: 1.0}
    prompt: {max_words: 64, list_max_words: 40, system: null, image_mode: native}
    train: {learning_rate, batch_size, micro_batch_size, epochs, max_steps, warmup, ..., seed, save_steps}
    output_dir: runs/reranker/lamra_rank

Rows and examples: :mod:`lumir.train.reranker_data`. The output folder holds ``checkpoints/`` (resumable),
``log.jsonl``, ``recipe.yaml``, ``result.json`` and ``model/``: the LoRA adapter, the tokenizer and
``lumir_reranker.json`` (base folder, prompts, resolved recipe, metrics, versions). ``model/`` loads as a chat
model (``load_chat_model("hf:" + model_dir)``), so ``--rerank yes-no:llm=hf:DIR`` and ``listwise:llm=hf:DIR`` run
it with fusion unchanged; rerank with the same ``max_words`` it was trained with (the manifest records them).
"""

from __future__ import annotations

import json
import math
import resource
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

from lumir.train.reranker_data import LIST_NEGATIVES, RerankCollator, load_corpus, read_rerank_rows

__all__ = [
    "RERANKER_FORMAT",
    "RERANKER_MANIFEST",
    "LamRARankTrainer",
    "RerankerTrainResult",
    "answer_loss",
    "lamra_rank_loss",
    "listwise_loss",
    "pointwise_loss",
    "run_reranker_recipe",
    "train_reranker",
]

RERANKER_FORMAT = "lumir-reranker/1"
RERANKER_MANIFEST = "lumir_reranker.json"
RECIPE_KEYS = {"kind", "name", "description", "source", "model", "data", "objective", "prompt", "train",
               "output_dir", "overrides", "profiles"}  # fmt: skip
MODEL_KEYS = {"base", "lora", "dtype", "device"}
DATA_KEYS = {"train", "corpus", "holdout", "top"}
OBJECTIVE_DEFAULTS: dict[str, Any] = {
    "pointwise": True,
    "listwise": True,
    "list_negatives": list(LIST_NEGATIVES),
    "point_weight": 1.0,
    "list_weight": 1.0,
}
PROMPT_DEFAULTS: dict[str, Any] = {"max_words": 64, "list_max_words": 40, "system": None, "image_mode": "native"}


# ---------------------------------------------------------------------------------------------------------- losses


def answer_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``targets`` (B,) under ``logits`` (B, V) at the answer position.

    Example:
        >>> round(float(answer_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))), 4)  # log 2
        0.6931
    """
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (B, V) and targets (B,), got {tuple(logits.shape)}, {tuple(targets.shape)}")
    return F.cross_entropy(logits.float(), targets.to(logits.device).long())


def pointwise_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor, *, yes_id: int, no_id: int) -> torch.Tensor:
    """LamRA §3.4 ``L_point = L_ce(YES, Reranker(q, c_pos)) + L_ce(NO, Reranker(q, c_neg))``, each term averaged
    over the B queries of the batch.

    Args:
        pos_logits, neg_logits: (B, V) logits at the first answer position for the positive and negative prompts.
        yes_id, no_id: the vocabulary ids of the YES and NO answers (as the YES/NO reranker scores them).

    Example:
        >>> pos, neg = torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0]])
        >>> round(float(pointwise_loss(pos, neg, yes_id=1, no_id=0)), 4)  # -log(e²/(e²+2)) - log(1/3)
        1.3382
    """
    yes = torch.full(pos_logits.shape[:1], yes_id, dtype=torch.long, device=pos_logits.device)
    no = torch.full(neg_logits.shape[:1], no_id, dtype=torch.long, device=neg_logits.device)
    return answer_loss(pos_logits, yes) + answer_loss(neg_logits, no)


def listwise_loss(logits: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """LamRA §3.4 ``L_list = L_ce(GT-POSITION, Reranker(q, c_1, …, c_M+1))``, averaged over the batch.

    Args:
        logits: (B, V) logits at the first answer position of each listwise prompt.
        target_ids: (B,) the vocabulary id of each positive's position number (``"1"``..``"6"``).
    """
    return answer_loss(logits, target_ids)


def lamra_rank_loss(
    point: tuple[torch.Tensor, torch.Tensor] | None,
    listwise: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    yes_id: int,
    no_id: int,
    point_weight: float = 1.0,
    list_weight: float = 1.0,
) -> torch.Tensor:
    """LamRA §3.4 ``L_rank = L_point + L_list`` (weights 1 in the paper).

    Args:
        point: ``(pos_logits, neg_logits)`` for :func:`pointwise_loss`, or None to leave that term out.
        listwise: ``(logits, target_ids)`` for :func:`listwise_loss`, or None to leave that term out.

    Raises:
        ValueError: both terms are None.
    """
    terms = []
    if point is not None:
        terms.append(point_weight * pointwise_loss(*point, yes_id=yes_id, no_id=no_id))
    if listwise is not None:
        terms.append(list_weight * listwise_loss(*listwise))
    if not terms:
        raise ValueError("lamra_rank_loss needs the pointwise or the listwise term (or both)")
    return torch.stack(terms).sum()


# --------------------------------------------------------------------------------------------------------- trainer


def answer_logits(model: Any, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(B, V) logits at the last (left-padded) position: the first answer token, as ``token_logprobs`` reads it."""
    return model(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1]


class LamRARankTrainer(Trainer):
    """A ``transformers.Trainer`` whose loss is :func:`lamra_rank_loss` on :class:`RerankCollator` batches.

    Besides the loss, logs hold ``point_loss``, ``list_loss``, ``point_acc`` (pairs where P(YES | positive) >
    P(YES | negative), YES/NO softmax as the reranker computes it) and ``list_acc`` (lists whose positive's position
    token has the highest logit among "1".."n"), on training batches and the holdout.
    """

    loss_is_scaled_for_ga = False

    def __init__(
        self, *args: Any, yes_no: Sequence[int] | None, point_weight: float = 1.0, list_weight: float = 1.0, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.no_id, self.yes_id = (int(yes_no[0]), int(yes_no[1])) if yes_no is not None else (-1, -1)
        self.point_weight, self.list_weight = float(point_weight), float(list_weight)
        self._sums: dict[str, dict[str, float]] = {"train": {}, "eval": {}}

    def _add(self, split: str, **values: float) -> None:
        sums = self._sums[split]
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + float(value)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        split = "train" if model.training else "eval"
        point = listwise = None
        if "point" in inputs:
            logits = answer_logits(model, inputs["point"])
            half = logits.shape[0] // 2
            point = (logits[:half], logits[half:])
            with torch.no_grad():
                p_yes = logits.float().gather(1, inputs["point_choices"]).softmax(-1)[:, 1]
                self._add(
                    split,
                    point_n=half,
                    point_hits=float((p_yes[:half] > p_yes[half:]).sum()),
                    point_loss=float(pointwise_loss(*point, yes_id=self.yes_id, no_id=self.no_id)) * half,
                )
        if "list" in inputs:
            logits = answer_logits(model, inputs["list"])
            listwise = (logits, inputs["list_targets"])
            with torch.no_grad():
                choices = inputs["list_choices"]
                picked = logits.float().gather(1, choices.clamp(min=0)).masked_fill(choices < 0, float("-inf"))
                best = choices.gather(1, picked.argmax(-1, keepdim=True)).squeeze(1)
                self._add(
                    split,
                    list_n=len(best),
                    list_hits=float((best == inputs["list_targets"]).sum()),
                    list_loss=float(listwise_loss(*listwise)) * len(best),
                )
        loss = lamra_rank_loss(
            point,
            listwise,
            yes_id=self.yes_id,
            no_id=self.no_id,
            point_weight=self.point_weight,
            list_weight=self.list_weight,
        )
        return (loss, {}) if return_outputs else loss

    def prediction_step(
        self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "eval" if any(k.startswith("eval_") for k in logs) else "train" if "loss" in logs else None
        if split is not None and self._sums[split]:
            s, prefix = self._sums[split], "eval_" if split == "eval" else ""
            for kind in ("point", "list"):
                if s.get(f"{kind}_n"):
                    logs[f"{prefix}{kind}_loss"] = s[f"{kind}_loss"] / s[f"{kind}_n"]
                    logs[f"{prefix}{kind}_acc"] = s[f"{kind}_hits"] / s[f"{kind}_n"]
            self._sums[split] = {}
        super().log(logs, start_time)


class _EpochDraws(TrainerCallback):
    """Tell the collator which epoch it draws for (resumed runs draw what the interrupted run would have)."""

    def __init__(self, collator: RerankCollator) -> None:
        self.collator = collator

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.collator.epoch = math.floor(float(state.epoch or 0) + 1e-6)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: Sequence[dict]) -> None:
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


@dataclass
class RerankerTrainResult:
    """What :func:`train_reranker` returns.

    Attributes:
        model_dir: the adapter folder (``load_chat_model("hf:" + str(model_dir))``).
        log_path: the per-step ``log.jsonl``.
        metrics: ``steps``, losses and accuracies, holdout numbers, ``seconds_per_step``, ``peak_memory_mb``, ...
        seconds: wall time of this call (a resumed run counts only its own part).
    """

    model_dir: Path
    log_path: Path
    metrics: dict[str, Any]
    seconds: float


def _block(recipe: Mapping[str, Any], name: str, keys: set[str] | Mapping[str, Any]) -> dict[str, Any]:
    from lumir.train.rewriter.loop import check_keys

    value = recipe.get(name) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"recipe block {name!r} must be a mapping, got {value!r}")
    check_keys(value, keys, block=name)
    return {**(keys if isinstance(keys, Mapping) else {}), **value}


def _load_chat(model_cfg: Mapping[str, Any]) -> tuple[Any, Path]:
    """The chat model over the base folder (text LM or VLM, as inference loads it), with a fresh LoRA on it."""
    from lumir.models.chat.hf import TransformersChatModel
    from lumir.rewrite.artifact import base_model_folder
    from lumir.train.rewriter.common import apply_lora
    from lumir.train.rewriter.loop import LORA_KEYS, check_keys

    lora = model_cfg.get("lora")
    if not isinstance(lora, Mapping) or not lora:
        raise ValueError(f"model.lora must be a mapping ({sorted(LORA_KEYS)}): LamRA-Rank trains a LoRA adapter")
    check_keys(lora, LORA_KEYS, block="model.lora")
    base = base_model_folder(str(model_cfg.get("base") or "smollm2"))
    dtype = str(model_cfg.get("dtype") or "float32")
    chat = TransformersChatModel.from_pretrained(base, dtype=dtype, device=str(model_cfg.get("device") or "auto"))
    chat.model = apply_lora(chat.model, lora)
    return chat, base


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def save_reranker(chat: Any, out: Path, *, base: Path, recipe: Mapping[str, Any], metrics: Mapping[str, Any]) -> Path:
    """Save the adapter, the tokenizer/processor and ``lumir_reranker.json`` (base, prompts, recipe, metrics)."""
    from lumir.config import versions
    from lumir.rerank.prompts import LAMRA_LISTWISE_PROMPT, LAMRA_POINTWISE_PROMPT, LISTWISE_ITEM

    out.mkdir(parents=True, exist_ok=True)
    chat.model.save_pretrained(out)
    chat.processor.save_pretrained(out)
    prompt = {**PROMPT_DEFAULTS, **dict(recipe.get("prompt") or {})}
    manifest = {
        "format": RERANKER_FORMAT,
        "method": "LamRA-Rank (§3.4)",
        "adapter": True,
        "base": str(base),
        "objective": {**OBJECTIVE_DEFAULTS, **dict(recipe.get("objective") or {})},
        "prompts": {"pointwise": LAMRA_POINTWISE_PROMPT, "listwise": LAMRA_LISTWISE_PROMPT, "item": LISTWISE_ITEM},
        "rerank_with": {
            "yes-no": f"yes-no:llm=hf:{out},max_words={prompt['max_words']}",
            "listwise": f"listwise:llm=hf:{out},max_words={prompt['list_max_words']}",
        },
        "config": json.loads(json.dumps(dict(recipe), default=str)),
        "metrics": dict(metrics),
        "versions": versions("transformers", "peft", "torch"),
    }
    (out / RERANKER_MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    return out


def train_reranker(
    recipe: Mapping[str, Any],
    *,
    output_dir: str | Path | None = None,
    resume: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
    show_progress: bool = True,
) -> RerankerTrainResult:
    """Run a ``kind: reranker`` recipe (see the module docstring); the adapter lands in ``<output_dir>/model``.

    Args:
        output_dir: checkpoints, ``log.jsonl``, ``recipe.yaml``, ``result.json`` and ``model/`` (default: the
            recipe's ``output_dir``, else ``runs/reranker/lamra_rank``).
        resume: continue from the last checkpoint in ``output_dir/checkpoints`` (False starts over).
        callbacks: extra ``transformers`` callbacks (tests interrupt a run with one).

    Raises:
        ValueError: unknown recipe keys, no objective, or a holdout that leaves nothing to train on.
        FileNotFoundError / DataFormatError: missing or malformed ``data.train`` / ``data.corpus``.
    """
    import yaml
    from transformers import set_seed

    from lumir.config import atomic_write_text, write_json
    from lumir.rerank.listwise import ListwiseReranker
    from lumir.rerank.pointwise import YesNoReranker
    from lumir.train.rewriter.common import JsonlLog
    from lumir.train.rewriter.loop import (
        JsonlLogCallback,
        ProgressBarCallback,
        check_keys,
        final_eval,
        prepare_output,
        quiet_warnings,
        split_holdout,
        strip_default_callbacks,
        train_config,
        training_arguments,
    )

    t0 = time.perf_counter()
    check_keys(recipe, RECIPE_KEYS, block="recipe")
    model_cfg = _block(recipe, "model", MODEL_KEYS)
    data_cfg = _block(recipe, "data", DATA_KEYS)
    objective = _block(recipe, "objective", OBJECTIVE_DEFAULTS)
    prompt = _block(recipe, "prompt", PROMPT_DEFAULTS)
    cfg = train_config(recipe.get("train"))
    if not data_cfg.get("train") or not data_cfg.get("corpus"):
        raise ValueError("data.train (rows jsonl) and data.corpus (items jsonl or BEIR folder) are required")
    rows = read_rerank_rows(data_cfg["train"])
    top = int(data_cfg.get("top") or 100)
    rows = [{**r, "negatives": r["negatives"][:top]} for r in rows]
    train_rows, held = split_holdout(rows, data_cfg.get("holdout"))
    corpus = load_corpus(data_cfg["corpus"])

    out = Path(output_dir or recipe.get("output_dir") or Path("runs") / "reranker" / "lamra_rank")
    checkpoint = prepare_output(out, resume=resume)
    with quiet_warnings():
        set_seed(int(cfg["seed"]))
        chat, base = _load_chat(model_cfg)
    shared = {"system": prompt["system"], "image_mode": prompt["image_mode"], "progress": False}
    lo, hi = (int(v) for v in objective["list_negatives"])
    pointwise = YesNoReranker(chat, max_words=int(prompt["max_words"]), **shared)
    listwise = ListwiseReranker(chat, window=hi + 1, max_words=int(prompt["list_max_words"]), **shared)
    collator = RerankCollator(
        chat,
        corpus,
        pointwise=pointwise if objective["pointwise"] else None,
        listwise=listwise if objective["listwise"] else None,
        seed=int(cfg["seed"]),
        list_negatives=(lo, hi),
    )
    args = training_arguments(cfg, out, evaluate=bool(held), remove_unused_columns=False, label_names=[])
    log = JsonlLog(out / "log.jsonl")
    with quiet_warnings():
        trainer = LamRARankTrainer(
            model=chat.model,
            args=args,
            data_collator=collator,
            train_dataset=_Rows(train_rows),
            eval_dataset=_Rows(held) if held else None,
            processing_class=chat.tokenizer,
            callbacks=[
                _EpochDraws(collator),
                JsonlLogCallback(log),
                ProgressBarCallback("lamra-rank", show_progress),
                *callbacks,
            ],
            yes_no=collator.yes_no,
            point_weight=float(objective["point_weight"]),
            list_weight=float(objective["list_weight"]),
        )
        if held:
            trainer.get_eval_dataloader = _fixed_eval_loader(trainer, collator)  # type: ignore[method-assign]
        strip_default_callbacks(trainer)
        start_step = int(Path(checkpoint).name.rpartition("-")[2]) if checkpoint else 0
        t_train = time.perf_counter()
        output = trainer.train(resume_from_checkpoint=checkpoint)
        train_seconds = time.perf_counter() - t_train
        records = [r for r in log.read() if r.get("kind") == "train" and "loss" in r]
        steps = int(trainer.state.global_step)
        metrics: dict[str, Any] = {
            "steps": steps,
            "epochs": round(float(trainer.state.epoch or 0), 4),
            "train_loss": records[-1]["loss"] if records else float("nan"),
            "first_loss": records[0]["loss"] if records else float("nan"),
            "mean_train_loss": float(output.training_loss),
            "train_queries": len(train_rows),
            "holdout_queries": len(held),
            "resumed_from_step": start_step,
            "seconds_per_step": round(train_seconds / max(1, steps - start_step), 3),
            "peak_memory_mb": _peak_memory_mb(),
            "trainable_parameters": sum(p.numel() for p in chat.model.parameters() if p.requires_grad),
        }
        if held:
            metrics.update(final_eval(trainer, log))
    chat.model.eval()
    with quiet_warnings():
        model_dir = save_reranker(chat, out / "model", base=base, recipe=recipe, metrics=metrics)
    atomic_write_text(
        out / "recipe.yaml", yaml.safe_dump(json.loads(json.dumps(recipe, default=str)), sort_keys=False)
    )
    seconds = round(time.perf_counter() - t0, 2)
    result = RerankerTrainResult(model_dir, out / "log.jsonl", metrics, seconds)
    write_json(
        out / "result.json",
        {"model_dir": str(model_dir), "log": str(result.log_path), "metrics": metrics, "seconds": seconds},
    )
    return result


def _fixed_eval_loader(trainer: Trainer, collator: RerankCollator) -> Any:
    """The trainer's eval dataloader, collating with draws fixed to epoch 0 (a stable holdout)."""
    original = trainer.get_eval_dataloader
    fixed = collator.with_fixed_draws()

    def loader(eval_dataset: Any = None) -> Any:
        trainer.data_collator = fixed
        try:
            return original(eval_dataset)
        finally:
            trainer.data_collator = collator

    return loader


def run_reranker_recipe(
    recipe: Mapping[str, Any] | str | Path,
    *,
    overrides: Sequence[str] = (),
    profile: str | None = None,
    output_dir: str | Path | None = None,
    resume: bool = True,
    **options: Any,
) -> RerankerTrainResult:
    """Load a ``kind: reranker`` recipe (if a path), apply ``profile`` then ``overrides``, and train.

    The recipe saved with the run (``recipe.yaml``, the manifest) is the resolved one, without ``profiles`` and
    with an ``overrides`` block recording the profile and ``--set`` values applied.

    Raises:
        ValueError: not a reranker recipe, or an unknown profile.
    """
    from lumir.train.recipe import apply_overrides, apply_profile, load_recipe

    loaded = load_recipe(recipe) if isinstance(recipe, (str, Path)) else dict(recipe)
    if loaded.get("kind") != "reranker":
        raise ValueError(f"not a reranker recipe (kind {loaded.get('kind')!r}, expected 'reranker')")
    resolved = apply_profile(loaded, profile) if profile else dict(loaded)
    resolved = apply_overrides(resolved, overrides)
    resolved.pop("profiles", None)
    record: dict[str, Any] = {}
    if profile:
        record.update(profile=profile, profile_values=dict(loaded["profiles"][profile]))
    if overrides:
        record["set"] = list(overrides)
    if record:
        resolved["overrides"] = record
    return train_reranker(resolved, output_dir=output_dir, resume=resume, **options)
