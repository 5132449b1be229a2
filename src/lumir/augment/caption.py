"""Extra captions from LLMs, sheared to human length (MLLM-augmented captions §3.2–3.4), with provenance.

Two augmenters, named so that one is never mistaken for the other:

- :class:`MultiViewCaptioner` — a pool of K vision-language ChatModels each *looks at the image* and answers the
  paper's question "Describe the <image> in English:" greedily, capped at T new tokens, then sheared
  (:func:`~lumir.augment.shearing.shear`). Records have ``kind = "mllm-caption"``.
- :class:`CaptionParaphraser` — a text LLM rewrites the *raw caption* (LaCLIP-style, it never sees the image),
  capped and sheared the same way. Records have ``kind = "llm-paraphrase"``.

The cap is one int for every model, or one per model: §3.4's T measured in each model's own tokens
(:func:`caption_budgets`), or the paper's fixed 30 (:data:`~lumir.augment.decoding.PAPER_MAX_NEW_TOKENS`, §4.1).
Decoding is greedy unless ``decoding=`` names a Table 10 preset (:data:`~lumir.augment.decoding.TABLE10_DECODING`)
for every model, or maps model names to presets or ``generate`` keywords. Shearing follows ``shear_rule``
(``"appendix"``, §7.1, by default, or ``"clause"``, §3.4).

Both write one jsonl record per (item, model) — ``id, source_id, model, kind, prompt, T, decoding, shear_rule,
raw, text, cut, complete`` — appended per batch and skipped on a rerun, so large jobs resume; wrap the ChatModels in
:class:`~lumir.models.chat.cache.CachedChatModel` to make reruns free. :func:`augmented_captions` turns records into
training caption items beside the raw ones, and :func:`scaled_epochs` keeps the training cost of the bigger set
equal to the raw baseline's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lumir.augment.decoding import resolve_decoding
from lumir.augment.shearing import CAPTION_QUESTION, DEFAULT_SHEAR_RULE, SHEAR_RULES, shear, shearing_budget
from lumir.errors import DataFormatError, ModalityError
from lumir.protocols import ChatModel, Conversation
from lumir.types import Item

__all__ = [
    "PARAPHRASE_PROMPT",
    "CaptionParaphraser",
    "MultiViewCaptioner",
    "augmented_captions",
    "caption_budgets",
    "scaled_epochs",
    "token_counter",
]

PARAPHRASE_PROMPT = (
    "Rewrite this image caption with different words but the same meaning, as one short sentence.\n"
    "Caption: {caption}\nRewritten caption:"
)
"""The paraphrase instruction (LaCLIP rewrites captions with an LLM; the wording is ours)."""


def token_counter(chat: ChatModel) -> Callable[[str], int]:
    """Count text in the chat model's own tokens (:meth:`~lumir.protocols.ChatModel.count_tokens`)."""
    return lambda s: int(chat.count_tokens(s))


def caption_budgets(models: Mapping[str, Any], captions: Iterable[str]) -> dict[str, int]:
    """T per pool model (§3.4): the mean raw-caption length in *that model's own* tokens (:func:`token_counter`).

    Example:
        >>> from lumir.testing.fakes import ScriptedChatModel
        >>> caption_budgets({"m": ScriptedChatModel()}, ["a dog runs", "two cats sleep on a sofa"])
        {'m': 5}
    """
    texts = list(captions)
    return {name: shearing_budget(texts, token_counter(model)) for name, model in models.items()}


def _read_done(path: Path) -> set[tuple[str, str]]:
    done: set[tuple[str, str]] = set()
    if not path.is_file():
        return done
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            done.add((str(rec["source_id"]), str(rec["model"])))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataFormatError(f"not a caption record ({err}); move the file away", path=path, line=n) from err
    return done


class _Augmenter:
    """Shared loop: for each model and batch of items, generate, shear, append records.

    Options both augmenters take: ``max_new_tokens`` (T: one int, or model name -> int), ``batch_size``,
    ``decoding``, ``shear_rule`` and ``llm_cache`` (an SQLite file put in front of models given by spec).
    """

    kind = ""

    def __init__(
        self,
        models: Mapping[str, ChatModel | str | Mapping[str, Any]] | Sequence[str],
        *,
        max_new_tokens: int | Mapping[str, int],
        batch_size: int = 8,
        decoding: str | Mapping[str, str | Mapping[str, Any] | None] | None = None,
        shear_rule: str = DEFAULT_SHEAR_RULE,
        llm_cache: str | Path | None = None,
    ) -> None:
        from lumir.models.chat.cache import resolve_chat_model

        if not models:
            raise ValueError("give at least one model (name -> ChatModel or its spec)")
        pool = models if isinstance(models, Mapping) else {str(m): m for m in models}
        self.models = {name: resolve_chat_model(m, llm_cache) for name, m in pool.items()}
        self._decoding_option = decoding
        caps = dict.fromkeys(self.models, max_new_tokens) if isinstance(max_new_tokens, int) else dict(max_new_tokens)
        missing = sorted(set(self.models) - set(caps))
        if missing:
            raise ValueError(f"no token cap T for model(s) {missing}")
        for name, cap in caps.items():
            if cap < 1:
                raise ValueError(f"the token cap T must be >= 1, got {cap} for {name!r}")
        per_model = decoding if isinstance(decoding, Mapping) else dict.fromkeys(self.models, decoding)
        unknown = sorted(set(per_model) - set(self.models))
        if unknown:
            raise ValueError(f"decoding given for model(s) {unknown} not in the pool {sorted(self.models)}")
        if shear_rule not in SHEAR_RULES:
            raise ValueError(f"shear_rule must be one of {SHEAR_RULES}, got {shear_rule!r}")
        self.max_new_tokens = max_new_tokens
        self.caps = caps
        self.decoding = {n: resolve_decoding(per_model.get(n)) for n in self.models}
        self.shear_rule = shear_rule
        self.batch_size = batch_size

    def _conversation(self, item: Item) -> Conversation:
        raise NotImplementedError

    def _prompt_text(self, item: Item) -> str:
        raise NotImplementedError

    def _options_spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """Everything that rebuilds this augmenter through :data:`lumir.registry.AUGMENTERS`, its models included."""
        decoding = self._decoding_option
        return {
            "type": "captioner" if self.kind == "mllm-caption" else "paraphraser",
            "models": {name: model.spec() for name, model in self.models.items()},
            "max_new_tokens": self.max_new_tokens if isinstance(self.max_new_tokens, int) else dict(self.caps),
            "decoding": dict(decoding) if isinstance(decoding, Mapping) else decoding,
            "shear_rule": self.shear_rule,
            "batch_size": self.batch_size,
            **self._options_spec(),
        }

    def augment(self, items: Sequence[Item]) -> list[Item]:
        """One new caption item per (item, model) with a usable generation, provenance in ``meta``.

        An item's id is ``"<source id>#<model>"``; ``meta`` keeps the source item's meta plus ``source_id``,
        ``kind``, ``model``, ``prompt``, ``T``, ``decoding``, ``shear_rule``, ``cut`` and ``complete`` (False: cut
        by the cap mid-clause). Empty generations are left out. :meth:`run` does the same resumably, into jsonl.
        """
        by_id = {it.id: it for it in items}
        out: list[Item] = []
        for name in self.models:
            for rec in self.records(list(items), name):
                if rec["text"]:
                    src = by_id[rec["source_id"]]
                    keys = ("source_id", "kind", "model", "prompt", "T", "decoding", "shear_rule", "cut", "complete")
                    out.append(Item(rec["id"], text=rec["text"], meta={**src.meta, **{k: rec[k] for k in keys}}))
        return out

    def _check(self, items: Sequence[Item], name: str, model: ChatModel) -> None:
        return None

    def records(self, items: Sequence[Item], name: str) -> list[dict[str, Any]]:
        """Generate and shear for ``items`` with one model of the pool."""
        model = self.models[name]
        self._check(items, name, model)
        count = token_counter(model)
        cap = self.caps[name]
        gen, decoding = self.decoding[name]
        out: list[dict[str, Any]] = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            raws = model.generate([self._conversation(it) for it in batch], max_new_tokens=cap, **gen)
            for it, raw in zip(batch, raws, strict=True):
                result = shear(raw, hit_token_cap=count(raw) >= cap, rule=self.shear_rule)
                out.append(
                    {
                        "id": f"{it.id}#{name}",
                        "source_id": it.id,
                        "model": name,
                        "kind": self.kind,
                        "prompt": self._prompt_text(it),
                        "T": cap,
                        "decoding": decoding,
                        "shear_rule": result.rule,
                        "raw": raw,
                        "text": result.text,
                        "cut": result.cut,
                        "complete": result.complete,
                        "image": None if it.image is None else it.image.describe(),
                    }
                )
        return out

    def run(self, items: Iterable[Item], output: str | Path, *, progress: bool = True) -> dict[str, int]:
        """Every (item, model) record not yet in ``output`` (jsonl), appended per batch; returns counts.

        Raises:
            OutputLockedError: another job is writing ``output`` (its ``<output>.lock`` is held); nothing is written.
        """
        from lumir.io.lock import output_lock
        from lumir.progress import progress as progress_bar

        path = Path(output)
        items = list(items)
        counts = {"done": 0, "skipped": 0, "cut": 0, "incomplete": 0}
        with output_lock(path), path.open("a", encoding="utf-8") as fh:
            done = _read_done(path)  # read under the lock: another job's records are all there
            for name in self.models:
                todo = [it for it in items if (it.id, name) not in done]
                counts["skipped"] += len(items) - len(todo)
                with progress_bar(total=len(todo), desc=f"{self.kind} ({name})", unit="item", enabled=progress) as bar:
                    for start in range(0, len(todo), self.batch_size):
                        for rec in self.records(todo[start : start + self.batch_size], name):
                            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                            counts["done"] += 1
                            counts["cut"] += int(rec["cut"])
                            counts["incomplete"] += int(not rec["complete"])
                        fh.flush()
                        bar.update(len(todo[start : start + self.batch_size]))
        return counts


class MultiViewCaptioner(_Augmenter):
    """K vision-language models caption each image with the paper's question, greedy, at most T new tokens.

    Args:
        models: name -> vision-capable ChatModel (``supports_images``).
        max_new_tokens: T for every model, or name -> T (:func:`caption_budgets`: each model's own tokens), or
            the paper's fixed :data:`~lumir.augment.decoding.PAPER_MAX_NEW_TOKENS` (30, §4.1 / Table 10).
        question: the question; ``<image>`` marks where the image goes.
        decoding: greedy (None), a :data:`~lumir.augment.decoding.TABLE10_DECODING` preset name for every model,
            or name -> preset name or ``generate`` keywords (models left out decode greedily); records keep it.
        shear_rule: ``"appendix"`` (§7.1, default) or ``"clause"`` (§3.4); see :func:`~lumir.augment.shearing.shear`.
    """

    kind = "mllm-caption"

    def __init__(
        self,
        models: Mapping[str, ChatModel | str | Mapping[str, Any]] | Sequence[str],
        *,
        question: str = CAPTION_QUESTION,
        **options: Any,
    ) -> None:
        if "<image>" not in question:
            raise ValueError("the captioning question must contain <image>")
        super().__init__(models, **options)
        self.question = question

    def _options_spec(self) -> dict[str, Any]:
        return {"question": self.question}

    def _check(self, items: Sequence[Item], name: str, model: ChatModel) -> None:
        if not model.supports_images:
            raise ModalityError(
                f"captioner {name!r} reads text only; image captioning needs a vision-language model "
                f"(a text LLM can paraphrase captions instead: CaptionParaphraser)"
            )
        missing = [it.id for it in items if it.image is None]
        if missing:
            raise ModalityError(f"{len(missing)} item(s) to caption have no image (first: {missing[0]!r})")

    def _conversation(self, item: Item) -> Conversation:
        before, _, after = self.question.partition("<image>")
        parts: list[dict[str, Any]] = []
        if before:
            parts.append({"type": "text", "text": before})
        parts.append({"type": "image", "image": item.image})
        if after:
            parts.append({"type": "text", "text": after})
        return [{"role": "user", "content": parts}]

    def _prompt_text(self, item: Item) -> str:
        return self.question


class CaptionParaphraser(_Augmenter):
    """A text LLM rewrites each raw caption (LaCLIP-style), greedy, at most T new tokens, sheared.

    These are paraphrases of human captions, not descriptions of the image: records say ``kind = "llm-paraphrase"``.
    ``max_new_tokens``, ``decoding`` and ``shear_rule`` are as for :class:`MultiViewCaptioner`.
    """

    kind = "llm-paraphrase"

    def __init__(
        self,
        models: Mapping[str, ChatModel | str | Mapping[str, Any]] | Sequence[str],
        *,
        prompt: str = PARAPHRASE_PROMPT,
        **options: Any,
    ) -> None:
        if "{caption}" not in prompt:
            raise ValueError("the paraphrase prompt must contain {caption}")
        super().__init__(models, **options)
        self.prompt = prompt

    def _options_spec(self) -> dict[str, Any]:
        return {"prompt": self.prompt}

    def _check(self, items: Sequence[Item], name: str, model: ChatModel) -> None:
        missing = [it.id for it in items if not it.text]
        if missing:
            raise ModalityError(f"{len(missing)} caption item(s) have no text (first: {missing[0]!r})")

    def _conversation(self, item: Item) -> Conversation:
        return [{"role": "user", "content": self._prompt_text(item)}]

    def _prompt_text(self, item: Item) -> str:
        return self.prompt.format(caption=item.text)


def augmented_captions(
    raw: Sequence[Item], records: Iterable[Mapping[str, Any]], *, require_complete: bool = True
) -> list[Item]:
    """Raw caption items plus one item per usable generated record, each with its provenance in ``meta``.

    A record's item keeps the raw item's ``meta`` (e.g. ``meta["image"]``, which pairs it with its photo), gains
    ``source``, ``kind``, ``model``, ``prompt`` and ``T``, and has id ``"<raw id>#<model>"``. Empty records, and
    incomplete ones when ``require_complete``, are left out.
    """
    by_id = {it.id: it for it in raw}
    out = [Item(it.id, text=it.text, image=it.image, meta={**it.meta, "source": "raw"}) for it in raw]
    for rec in records:
        src = by_id.get(str(rec.get("source_id")))
        text = str(rec.get("text") or "").strip()
        if src is None or not text or (require_complete and not rec.get("complete", False)):
            continue
        meta = {
            **src.meta,
            "source": str(rec["model"]),
            "kind": rec["kind"],
            "model": rec["model"],
            "prompt": rec["prompt"],
            "T": rec["T"],
        }
        out.append(Item(str(rec["id"]), text=text, meta=meta))
    return out


def scaled_epochs(epochs: int, raw_pairs: int, total_pairs: int) -> int:
    """Epochs on the augmented set that cost what ``epochs`` on the raw set cost: ``epochs / k``, k = total / raw.

    Example:
        >>> scaled_epochs(20, 20_000, 40_000)
        10
    """
    if raw_pairs < 1 or total_pairs < raw_pairs:
        raise ValueError(f"need total_pairs >= raw_pairs >= 1, got {total_pairs} and {raw_pairs}")
    return max(1, round(epochs * raw_pairs / total_pairs))
