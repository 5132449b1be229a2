"""Action knowledge from captions with an LLM (action-aware prompt tuning, §3.2 and Figure 4).

Two prompts with in-context examples, then a format check with bounded retries:

1. **Q1** parses a caption T into action triplets ``R_t = LLM([Q1, T])`` (Eq. 1): ``(subject, action, object)``,
   with attribute triplets such as ``(girl, is, small)`` allowed;
2. **Q2** turns each triplet, with its caption as context, into an action-state description ``D = LLM(Q2, R_t)``
   (Eq. 3), e.g. "She focuses on the laptop screen, types on the keyboard, and maintains a stable posture".

``mode="joint"`` asks both in one call per caption: a joint prompt (Q1 and Q2's instructions, in-context examples in
the same style) answers lines ``(subject, action, object) | state sentence``, checked with the same
:func:`parse_triplets` and :func:`check_state`; a state that fails (or is cut by the token cap) is asked again with
Q2, a caption whose triplets fail gets the joint prompt again. On Flickr8k with Qwen2.5-Coder-0.5B it made 2.4x
fewer calls and 1.5x the captions/s with more captions passing, but one triplet per caption instead of two
(benchmarks/results/knowledge_flickr8k.md). ``mode="rules"`` needs no LLM: triplets read off the caption by word
rules, no states (:mod:`lumir.augment.knowledge_rules`, Table 2's hand-crafted ablation).

The paper's prompts were written with GPT-3.5 and are not printed; ours (:mod:`lumir.augment.knowledge_prompts`)
have the same shape (instruction, in-context examples, the input). Greedy decoding first; an answer that fails the
format check is asked again with seeded sampling (temperature 0.7, seed = attempt), at most ``max_retries`` times.
Every call goes through the ChatModel (wrap it in :class:`~lumir.models.chat.cache.CachedChatModel` so reruns cost
nothing), and results are appended to a jsonl file one caption per line, so an interrupted job resumes where it
stopped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lumir.augment.knowledge_prompts import (
    JOINT_CONTENT,
    JOINT_EXAMPLES,
    Q1_EXAMPLES,
    Q2_EXAMPLES,
    Triplet,
    _fmt,
    check_state,
    copies_example_words,
    grounded,
    joint_prompt,
    parse_joint,
    parse_triplets,
    q1_prompt,
    q2_prompt,
)
from lumir.augment.knowledge_rules import RULES_MODEL, handcrafted_prompt, rule_triplets
from lumir.errors import DataFormatError
from lumir.protocols import ChatModel
from lumir.types import Item

__all__ = [
    "JOINT_CONTENT",
    "JOINT_EXAMPLES",
    "MODES",
    "Q1_EXAMPLES",
    "Q2_EXAMPLES",
    "ActionKnowledge",
    "KnowledgeExtractor",
    "check_state",
    "copies_example_words",
    "grounded",
    "handcrafted_prompt",
    "joint_prompt",
    "parse_joint",
    "parse_triplets",
    "q1_prompt",
    "q2_prompt",
    "rule_knowledge",
    "rule_triplets",
]

MODES = ("two-step", "joint", "rules")
"""Extraction modes: Q1 then one Q2 per triplet (the default); one joint call per caption; LLM-free rules."""
JOINT_STOP = ("\n\n", "\nCaption:")
"""Stop strings of the joint prompt: its answer ends at a blank line or a made-up next example."""


@dataclass
class ActionKnowledge:
    """The knowledge of one caption, as one jsonl line.

    Attributes:
        id, caption: the input. triplets: Q1's parsed triplets. states: one Q2 description per triplet ("" when
        that triplet's description never passed the check). valid: Q1 passed and every state passed.
        attempts: model calls made (first tries plus retries). errors: the format-check failures seen.
        model: the ChatModel's spec (``{"type": "rules"}`` for rule-based records), for provenance.
        mode: the extraction mode (:data:`MODES`) that wrote the record.
    """

    id: str
    caption: str
    triplets: list[Triplet] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    valid: bool = False
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    mode: str = "two-step"

    def to_json(self) -> str:
        data = asdict(self)
        data["triplets"] = [list(t) for t in self.triplets]
        return json.dumps(data, ensure_ascii=False)


def rule_knowledge(
    items: Sequence[tuple[str, str]], *, max_triplets: int = 4, attributes: bool = True
) -> list[ActionKnowledge]:
    """LLM-free knowledge for ``(id, caption)`` pairs: :func:`rule_triplets`, empty states, ``model={"type":
    "rules"}``; ``valid`` means a triplet was found.

    Example:
        >>> k = rule_knowledge([("c1", "A dog catches a Frisbee in midair .")])[0]
        >>> k.triplets, k.states, k.valid, k.model
        ([('dog', 'catches', 'frisbee')], [''], True, {'type': 'rules'})
    """
    out = []
    for i, caption in items:
        triplets = rule_triplets(caption, max_triplets=max_triplets, attributes=attributes)
        out.append(
            ActionKnowledge(
                i,
                caption,
                triplets=triplets,
                states=[""] * len(triplets),
                valid=bool(triplets),
                errors=[] if triplets else ["rules: no triplet found"],
                model=dict(RULES_MODEL),
                mode="rules",
            )
        )
    return out


def _read_seen(path: Path) -> set[str]:
    """Caption ids already in a knowledge jsonl."""
    seen: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            seen.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataFormatError(f"not a knowledge line ({err}); move the file away", path=path, line=n) from err
    return seen


class KnowledgeExtractor:
    """Q1 -> triplets -> Q2 -> states (or one joint call, or rules), with format checks and bounded retries.

    Args:
        llm: any ChatModel (text is enough), or a spec; ignored (may be None) with ``mode="rules"``.
        mode: ``"two-step"`` (Q1, then one Q2 call per triplet; the default), ``"joint"`` (one call per caption
            answering triplets and states together; failed states retried with Q2) or ``"rules"`` (no LLM).
        max_retries: extra sampled attempts per prompt after a failed greedy answer.
        max_new_tokens: generation caps for Q1 and Q2.
        joint_max_new_tokens: generation cap for the joint prompt.
        max_triplets: at most this many triplets are kept (and described) per caption.
    """

    def __init__(
        self,
        llm: ChatModel | str | Mapping[str, Any] | None = None,
        *,
        mode: str = "two-step",
        max_retries: int = 2,
        max_new_tokens: Sequence[int] = (64, 48),
        joint_max_new_tokens: int = 160,
        max_triplets: int = 4,
        llm_cache: str | Path | None = None,
    ) -> None:
        from lumir.models.chat.cache import resolve_chat_model

        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if len(max_new_tokens) != 2:
            raise ValueError(f"max_new_tokens is (Q1 cap, Q2 cap), got {max_new_tokens!r}")
        if mode != "rules" and llm is None:
            raise ValueError(f"mode {mode!r} needs an llm (mode='rules' runs without one)")
        self.mode = mode
        self.chat: ChatModel | None = None if mode == "rules" or llm is None else resolve_chat_model(llm, llm_cache)
        self.max_retries = max_retries
        self.max_new_tokens = (int(max_new_tokens[0]), int(max_new_tokens[1]))
        self.joint_max_new_tokens = int(joint_max_new_tokens)
        self.max_triplets = max_triplets

    def spec(self) -> dict[str, Any]:
        """Everything that rebuilds this extractor through :data:`lumir.registry.AUGMENTERS`, its LLM included."""
        if self.chat is None:
            return {"type": "knowledge", "llm": None, "mode": self.mode, "max_triplets": self.max_triplets}
        out = {
            "type": "knowledge",
            "llm": self.chat.spec(),
            "mode": self.mode,
            "max_retries": self.max_retries,
            "max_new_tokens": list(self.max_new_tokens),
            "max_triplets": self.max_triplets,
        }
        if self.mode == "joint":
            out["joint_max_new_tokens"] = self.joint_max_new_tokens
        return out

    def augment(self, items: Sequence[Item]) -> list[Item]:
        """The caption items with their knowledge in ``meta["knowledge"]`` (``triplets``, ``states``, ``valid``,
        ``attempts``, ``errors``, ``model``); items without text pass unchanged. :meth:`run` does it resumably."""
        texts = [(it.id, it.text) for it in items if it.text]
        found = {k.id: k for k in self.extract(texts)}
        out = []
        for it in items:
            k = found.get(it.id)
            if k is None:
                out.append(it)
                continue
            record = {key: value for key, value in asdict(k).items() if key not in ("id", "caption")}
            record["triplets"] = [list(t) for t in k.triplets]
            out.append(Item(it.id, text=it.text, image=it.image, meta={**it.meta, "knowledge": record}))
        return out

    def _ask(self, prompts: Sequence[str], max_new_tokens: int, attempt: int, **extra: Any) -> list[str]:
        assert self.chat is not None
        convs = [[{"role": "user", "content": p}] for p in prompts]
        gen: dict[str, Any] = {"max_new_tokens": max_new_tokens, **extra}
        if attempt > 0:
            gen.update(temperature=0.7, seed=attempt)
        return self.chat.generate(convs, **gen)

    def extract(self, items: Sequence[tuple[str, str]]) -> list[ActionKnowledge]:
        """Knowledge for ``(id, caption)`` pairs (batched per step across captions)."""
        if self.mode == "rules":
            return rule_knowledge(items, max_triplets=self.max_triplets)
        assert self.chat is not None
        model = self.chat.spec()
        out = [ActionKnowledge(i, c, model=model, mode=self.mode) for i, c in items]
        if self.mode == "joint":
            jobs = self._joint(out)
        else:
            self._q1(out)
            for k in out:
                k.states = [""] * len(k.triplets)
            jobs = [(i, j, 0) for i, k in enumerate(out) for j in range(len(k.triplets))]
        self._q2(out, jobs)
        for k in out:
            k.valid = bool(k.triplets) and all(k.states)
        return out

    def _q1(self, out: list[ActionKnowledge]) -> None:
        pending = list(range(len(out)))
        for attempt in range(self.max_retries + 1):
            if not pending:
                break
            answers = self._ask([q1_prompt(out[i].caption) for i in pending], self.max_new_tokens[0], attempt)
            still = []
            for i, answer in zip(pending, answers, strict=True):
                out[i].attempts += 1
                triplets, error = parse_triplets(answer, caption=out[i].caption)
                if error is None:
                    out[i].triplets = triplets[: self.max_triplets]
                else:
                    out[i].errors.append(f"Q1: {error}")
                    still.append(i)
            pending = still

    def _joint(self, out: list[ActionKnowledge]) -> list[tuple[int, int, int]]:
        """Joint calls with retries; returns the Q2 jobs ``(caption, triplet, first attempt)`` of failed states.

        A failed state already had its first (greedy) try in the joint answer, so Q2 asks it at most
        ``max_retries`` more times: greedily first (a new prompt), then sampled.
        """
        jobs: list[tuple[int, int, int]] = []
        pending = list(range(len(out)))
        for attempt in range(self.max_retries + 1):
            if not pending:
                break
            prompts = [joint_prompt(out[i].caption) for i in pending]
            answers = self._ask(prompts, self.joint_max_new_tokens, attempt, stop=list(JOINT_STOP))
            still = []
            for i, answer in zip(pending, answers, strict=True):
                k = out[i]
                k.attempts += 1
                pairs, error = parse_joint(answer, caption=k.caption)
                if error is not None:
                    k.errors.append(f"joint: {error}")
                    still.append(i)
                    continue
                pairs = pairs[: self.max_triplets]
                k.triplets = [t for t, _ in pairs]
                k.states = [""] * len(pairs)
                for j, (t, raw) in enumerate(pairs):
                    state, err = check_state(raw, triplet=t, caption=k.caption, example_words=JOINT_CONTENT)
                    if err is None and not state.endswith((".", "!", "?")):
                        err = "description is cut off (no closing punctuation)"
                    if err is None:
                        k.states[j] = state
                    else:
                        k.errors.append(f"joint {_fmt(t)}: {err}")
                        jobs.append((i, j, 1))
            pending = still
        return [(i, j, a) for i, j, a in jobs if a <= self.max_retries]

    def _q2(self, out: list[ActionKnowledge], jobs: list[tuple[int, int, int]]) -> None:
        """Q2 for ``(caption, triplet, tries used)`` jobs until each passes or has had ``max_retries + 1`` tries;
        the Q2 attempt number (greedy first, then seeded sampling) is the tries used before Q2."""
        q2_attempt = 0
        while jobs:
            prompts = [q2_prompt(out[i].caption, out[i].triplets[j]) for i, j, _ in jobs]
            answers = self._ask(prompts, self.max_new_tokens[1], q2_attempt)
            retry = []
            for (i, j, used), answer in zip(jobs, answers, strict=True):
                out[i].attempts += 1
                state, error = check_state(answer, triplet=out[i].triplets[j], caption=out[i].caption)
                if error is None:
                    out[i].states[j] = state
                else:
                    out[i].errors.append(f"Q2 {_fmt(out[i].triplets[j])}: {error}")
                    if used + 1 <= self.max_retries:
                        retry.append((i, j, used + 1))
            jobs = retry
            q2_attempt += 1

    def run(
        self, items: Iterable[tuple[str, str]], output: str | Path, *, batch_size: int = 16, progress: bool = True
    ) -> dict[str, int]:
        """Extract knowledge for every caption not yet in ``output`` (jsonl, appended per batch; resumable).

        Returns counts: ``done`` (this run), ``skipped`` (already in the file), ``valid`` (this run).

        Raises:
            OutputLockedError: another job is writing ``output`` (its ``<output>.lock`` is held); nothing is written.
        """
        from lumir.io.lock import output_lock
        from lumir.progress import progress as progress_bar

        path = Path(output)
        all_items = list(items)
        with output_lock(path), path.open("a", encoding="utf-8") as fh:
            seen = _read_seen(path)  # read under the lock: another job's lines are all there
            todo = [(i, c) for i, c in all_items if i not in seen]
            counts = {"done": 0, "skipped": len(all_items) - len(todo), "valid": 0}
            with progress_bar(total=len(todo), desc="action knowledge", unit="caption", enabled=progress) as bar:
                for start in range(0, len(todo), batch_size):
                    for k in self.extract(todo[start : start + batch_size]):
                        fh.write(k.to_json() + "\n")
                        counts["done"] += 1
                        counts["valid"] += int(k.valid)
                    fh.flush()
                    bar.update(min(batch_size, len(todo) - start))
        return counts
