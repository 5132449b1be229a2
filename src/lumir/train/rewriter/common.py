"""What the three rewriter trainers share: prompt/completion encoding on the trained-rewriter prompt, sequence
log-probabilities, LoRA setup, seeding and jsonl logs.

The prompt is :data:`lumir.rewrite.prompts.TRAINED` rendered by the tokenizer's chat template, exactly as
:class:`lumir.rewrite.trained.TrainedRewriter` renders it at inference, so what is trained is what is served.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lumir.rewrite.prompts import rewriter_messages

__all__ = [
    "EncodedBatch",
    "JsonlLog",
    "RewriterTrainResult",
    "apply_lora",
    "encode_completions",
    "prompt_text",
    "sequence_logprobs",
    "trainable_state",
]


@dataclass
class RewriterTrainResult:
    """What every rewriter stage (``train_sft``, ``train_pro``, ``train_ppo``, ``train_grpo``) returns.

    Attributes:
        model_dir: the saved rewriter folder (``load_rewriter_model(model_dir)``, ``--rewrite trained:DIR``).
        log_path: the per-step ``log.jsonl``.
        metrics: final numbers (``steps``, ``train_loss``, ``eval_loss`` when there is a holdout, ...).
        seconds: wall time of this call (a resumed run counts only its own part).
    """

    model_dir: Path
    log_path: Path
    metrics: dict[str, Any]
    seconds: float


def prompt_text(tokenizer: Any, query: str) -> str:
    """The rewriter's prompt for ``query`` in the tokenizer's chat template, ending where the rewrite starts."""
    return str(tokenizer.apply_chat_template(rewriter_messages(query), tokenize=False, add_generation_prompt=True))


@dataclass
class EncodedBatch:
    """Right-padded prompt+completion token ids; ``completion_mask`` marks the completion tokens (incl. EOS)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor


def encode_completions(
    tokenizer: Any, queries: Sequence[str], completions: Sequence[str], *, max_length: int = 128
) -> EncodedBatch:
    """Tokenise (prompt(query) + completion + EOS) pairs; prompts longer than ``max_length`` keep their end."""
    if len(queries) != len(completions):
        raise ValueError(f"{len(queries)} queries but {len(completions)} completions")
    eos = tokenizer.eos_token_id
    rows, masks = [], []
    for q, c in zip(queries, completions, strict=True):
        p_ids = tokenizer(prompt_text(tokenizer, q), add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(c, add_special_tokens=False)["input_ids"] + [eos]
        c_ids = c_ids[: max(1, max_length // 2)]
        p_ids = p_ids[max(0, len(p_ids) - (max_length - len(c_ids))) :]  # keep the prompt's end
        rows.append(p_ids + c_ids)
        masks.append([0] * len(p_ids) + [1] * len(c_ids))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    comp = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, m) in enumerate(zip(rows, masks, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        att[i, : len(r)] = 1
        comp[i, : len(m)] = torch.tensor(m)
    return EncodedBatch(ids, att, comp)


def sequence_logprobs(model: Any, batch: EncodedBatch, *, normalize: bool = True) -> torch.Tensor:
    """Log-probability of each completion given its prompt, ``(batch,)``: the sum over completion tokens, divided
    by their count when ``normalize`` (PRO's "normalized log probability", §3.3)."""
    device = next(model.parameters()).device
    ids, att, comp = (t.to(device) for t in (batch.input_ids, batch.attention_mask, batch.completion_mask))
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
    targets = ids[:, 1:]
    token_lp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = comp[:, 1:].to(token_lp.dtype)
    total = (token_lp * mask).sum(-1)
    return total / mask.sum(-1).clamp_min(1.0) if normalize else total


def apply_lora(model: Any, lora: Mapping[str, Any] | None, *, task_type: str | None = "CAUSAL_LM") -> Any:
    """Wrap ``model`` in a fresh peft LoRA, or return it as it is when ``lora`` is None/empty (full fine-tuning) or
    the model is already a peft model.

    ``lora`` keys: ``r`` (16), ``alpha`` (32), ``dropout`` (0.05), ``target_modules`` (a list of module names, or a
    regex string matched against full module names, e.g. ``".*language_model.*\\.(q_proj|v_proj)"`` to leave a
    vision tower frozen), ``modules_to_save`` (modules trained in full, e.g. ``["multi_modal_projector"]``).
    ``task_type`` None gives a plain ``PeftModel`` (an embedder needs hidden states, not a language-model head).
    """
    if not lora or hasattr(model, "peft_config"):
        return model
    from lumir._deps import require

    require("peft", extra="train")
    from peft import LoraConfig, get_peft_model

    targets = lora.get("target_modules", ["q_proj", "k_proj", "v_proj", "o_proj"])
    config = LoraConfig(
        r=int(lora.get("r", 16)),
        lora_alpha=int(lora.get("alpha", 32)),
        lora_dropout=float(lora.get("dropout", 0.05)),
        target_modules=targets if isinstance(targets, str) else list(targets),
        modules_to_save=list(lora["modules_to_save"]) if lora.get("modules_to_save") else None,
        task_type=task_type,
    )
    return get_peft_model(model, config)


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """Copies of the parameters that require grad (smoke tests compare them before and after training)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class JsonlLog:
    """Append one JSON object per call to ``path`` (step logs of every trainer), flushed immediately."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._start = time.perf_counter()

    def write(self, record: Mapping[str, Any]) -> None:
        row = {"time": round(time.perf_counter() - self._start, 3), **record}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=float) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """All records so far (an absent file has none)."""
        if not self.path.is_file():
            return []
        return [json.loads(ln) for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]
