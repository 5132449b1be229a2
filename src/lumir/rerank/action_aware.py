"""Action-aware re-scoring (LAMP; action-aware prompt tuning, §3.5 "Inference") of a first-stage top-k.

§3.5: "the original CLIP model is used to pre-select the top-k (i.e., k=20) samples, after which our method is applied
to refine features and re-rank results". The prompted image embedding depends on the text's action knowledge, so
images cannot be indexed ahead: :class:`ActionAwareReranker` re-scores each query's top ``k`` with an
:class:`~lumir.models.action_model.ActionAwareModel`:

- **text → image** (a text query, image candidates): the query's knowledge prompts every candidate image,
  ``S = cos(z_img(candidate | knowledge(query)), z_txt(query))``;
- **image → text** (an image query, text candidates): each candidate's knowledge prompts the query image,
  ``S = cos(z_img(query | knowledge(candidate)), z_txt(candidate))``.

Any other pair (text → text, composed queries, image+text candidates) is refused with a ModalityError before any
work; give a mixed pool's first stage ``candidate_modality``.

A text's knowledge (triplets and state descriptions, :mod:`lumir.augment.knowledge`) is taken, in order, from
``item.meta["knowledge"]`` (what ``KnowledgeExtractor.augment`` writes), the ``knowledge`` jsonl files (matched on
the text after whitespace normalisation), texts this reranker extracted before, or is extracted now with
``extractor`` (or ``llm``, a shortcut for a default extractor). Without an extractor a missing text raises
:class:`MissingKnowledgeError` naming the query. A text whose extraction failed the format check is used with the
triplets that did parse (a failed state falls back to its triplet's words) and counted in ``knowledge_invalid``; a
text without any triplet is prompted with empty knowledge and counted in ``knowledge_empty``.

The paper ranks by S alone (α = 0); ``alpha`` fuses S with the first-stage score like the other rerankers
(:mod:`lumir.rerank.fusion`). The re-scored head is ordered by the new score and the candidates below ``k`` keep their
first-stage order after it (:func:`~lumir.rerank.base.apply_rerank`). Cost is reported in ``rankings.meta["rerank"]``
and :attr:`ActionAwareReranker.last_stats`: ``seconds``, ``ms_per_query``, ``images_loaded`` (decoded),
``images_encoded`` (prompted image forward passes, = ``prompts``), ``knowledge_texts``, ``knowledge_cache_hits``,
``knowledge_extracted``, ``knowledge_invalid``, ``knowledge_empty`` and the extractor LLM's ``model_calls``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from lumir.collections import Corpus, Rankings
from lumir.data.knowledge import KnowledgeStore, normalize_text
from lumir.errors import LumirError, ModalityError, with_cli_message
from lumir.io.images import load_image
from lumir.models.action_model import ActionAwareModel
from lumir.progress import progress
from lumir.protocols import ChatModel
from lumir.rerank.base import RerankStats, apply_rerank
from lumir.rerank.fusion import FusionConfig
from lumir.types import Item, Modality, Query

__all__ = [
    "ActionAwareReranker",
    "KnowledgeSource",
    "MissingKnowledgeError",
    "direction",
]

Entry = tuple[list[tuple[str, str, str]], list[str], bool]
"""One text's knowledge: triplets, state descriptions, whether it passed the format check."""
_COUNTERS = ("knowledge_texts", "knowledge_cache_hits", "knowledge_extracted", "knowledge_invalid", "knowledge_empty")


class MissingKnowledgeError(LumirError, ValueError):
    """A text to re-score has no action knowledge and no extractor was given."""


class KnowledgeSource(Protocol):
    """What the reranker needs of an extractor (:class:`lumir.augment.knowledge.KnowledgeExtractor`): ``extract``
    returns, per ``(id, caption)``, an object with ``triplets``, ``states`` and ``valid``."""

    def extract(self, items: Sequence[tuple[str, str]]) -> list[Any]: ...

    def spec(self) -> dict[str, Any]: ...


def _entry(data: Mapping[str, Any]) -> Entry:
    triplets = []
    for t in data.get("triplets") or []:
        if not isinstance(t, (list, tuple)) or len(t) != 3:
            raise ValueError(f"a triplet must be [subject, action, object], got {t!r}")
        triplets.append((str(t[0]), str(t[1]), str(t[2])))
    states = [str(s or "") for s in data.get("states") or []]
    valid = data.get("valid")
    if valid is None:
        valid = bool(triplets) and len(states) >= len(triplets) and all(states[: len(triplets)])
    return triplets, states, bool(valid)


class ActionAwareReranker:
    """Re-score each query's top ``k`` with action-knowledge-prompted image embeddings (module docstring, §3.5).

    Args:
        model: an :class:`~lumir.models.action_model.ActionAwareModel` or the folder it was saved to.
        k: candidates re-scored per query (the paper's top-20).
        knowledge: knowledge jsonl file(s) written by ``lumir augment knowledge`` / ``KnowledgeExtractor.run``.
        extractor: extracts knowledge of texts found nowhere else: a ``KnowledgeExtractor`` or its augmenter spec
            (``"knowledge:qwen-coder"``); ``llm``: a chat model (or spec) for a default extractor instead.
        llm_cache: SQLite LLM cache in front of an extractor LLM given by spec.
        alpha, normalize, per_task_alpha, fusion: score fusion with the first stage (α = 0: LAMP's score alone).
        batch_size: (text, image) pairs per forward pass. device: where a model given by path is loaded.
        progress: progress bar (None: for 64 pairs or more).
    """

    name = "action-aware"
    default_k = 20
    default_alpha = 0.0

    def __init__(
        self,
        model: ActionAwareModel | str | Path,
        *,
        k: int | None = None,
        knowledge: str | Path | Sequence[str | Path] | None = None,
        extractor: KnowledgeSource | str | Mapping[str, Any] | None = None,
        llm: ChatModel | str | Mapping[str, Any] | None = None,
        llm_cache: str | Path | None = None,
        alpha: float | None = None,
        normalize: str = "none",
        per_task_alpha: Mapping[str, float] | None = None,
        fusion: FusionConfig | None = None,
        batch_size: int = 32,
        device: str | None = None,
        progress: bool | None = None,
    ) -> None:
        self.k = self.default_k if k is None else int(k)
        if self.k < 1:
            raise ValueError(f"rerank budget k must be >= 1, got {self.k}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if fusion is not None and (alpha is not None or normalize != "none" or per_task_alpha):
            raise ValueError("give either fusion= or alpha/normalize/per_task_alpha, not both")
        self.fusion = (fusion or FusionConfig(alpha, normalize, dict(per_task_alpha or {}))).with_default(0.0)
        self.device = device
        if isinstance(model, ActionAwareModel):
            self.model, self.model_path = (model if device is None else model.to(device)), None
        else:
            self.model_path = str(model)
            self.model = ActionAwareModel.load(self.model_path, device=device or "cpu")
        files = [] if knowledge is None else [knowledge] if isinstance(knowledge, (str, Path)) else list(knowledge)
        self.knowledge_files = [str(p) for p in files]
        self._store = KnowledgeStore(self.knowledge_files)
        self._extracted: dict[str, Entry] = {}
        self._owners: dict[str, str] = {}  # normalised text -> who needs it (named in errors)
        if llm is not None:
            if extractor is not None:
                raise ValueError("give either extractor= or llm= (a default extractor over that LLM), not both")
            extractor = {"type": "knowledge", "llm": llm}
        if isinstance(extractor, (str, Path, Mapping)):
            from lumir.registry import AUGMENTERS

            given = isinstance(extractor, Mapping) and "llm_cache" in extractor
            extra = {"llm_cache": str(llm_cache)} if llm_cache is not None and not given else {}
            self.extractor: KnowledgeSource | None = AUGMENTERS.build(extractor, **extra)
        else:
            self.extractor = extractor
        self.batch_size = batch_size
        self.progress = progress
        self.last_stats = RerankStats()

    def spec(self) -> dict[str, Any]:
        """Everything that rebuilds this reranker through :data:`lumir.registry.RERANKERS`."""
        out: dict[str, Any] = {
            "type": self.name,
            "model": self.model_path or "<in-memory ActionAwareModel: save it and give its folder>",
            "k": self.k,
            "knowledge": list(self.knowledge_files),
            "extractor": None if self.extractor is None else self.extractor.spec(),
            "alpha": self.fusion.alpha,
            "normalize": self.fusion.normalize,
            "per_task_alpha": dict(self.fusion.per_task),
            "batch_size": self.batch_size,
        }
        return out if self.device is None else {**out, "device": self.device}

    def rerank(self, queries: Sequence[Query], rankings: Rankings, corpus: Corpus) -> Rankings:
        """Re-score every query's top :attr:`k` (module docstring); the rest keeps its first-stage order."""
        start = time.perf_counter()
        by_id = {q.id: q for q in queries}
        for qid, hits in rankings:  # modalities first: a wrong pool fails before any knowledge or model work
            for h in hits[: self.k]:
                if qid in by_id and h.id in corpus:
                    direction(by_id[qid], corpus[h.id])
        stats = RerankStats(extra={"images_loaded": 0, "images_encoded": 0, **dict.fromkeys(_COUNTERS, 0)})
        chat = getattr(self.extractor, "chat", None)
        out = apply_rerank(
            queries, rankings, corpus, self.k, self._score, fusion=self.fusion, stats=stats, spec=self.spec(),
            chat=chat if isinstance(chat, ChatModel) else None,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        stats.extra["seconds"] = round(seconds, 4)
        stats.extra["ms_per_query"] = round(1000 * seconds / max(1, len(rankings.query_ids)), 3)
        self.last_stats = stats
        return Rankings(out.query_ids, out.ids, out.scores, {**out.meta, "rerank": stats.to_dict()})

    # ---- knowledge ----
    def knowledge_for(
        self, texts: Mapping[str, tuple[str, Mapping[str, Any]]], stats: RerankStats
    ) -> dict[str, Entry]:
        """Knowledge of each normalised text (``key -> (text, item meta)``), extracting what is found nowhere."""
        out: dict[str, Entry] = {}
        missing = []
        for key, (_, meta) in texts.items():
            found = meta.get("knowledge")
            entry = _entry(found) if isinstance(found, Mapping) else self._lookup(key)
            if entry is None:
                missing.append(key)
            else:
                out[key] = entry
        stats.extra["knowledge_texts"] += len(texts)
        stats.extra["knowledge_cache_hits"] += len(out)
        if missing and self.extractor is None:
            raise self._missing(missing)
        if missing:
            assert self.extractor is not None
            found_now = self.extractor.extract([(f"text-{i}", texts[key][0]) for i, key in enumerate(missing)])
            for key, k in zip(missing, found_now, strict=True):
                entry = ([(str(t[0]), str(t[1]), str(t[2])) for t in k.triplets], list(k.states), bool(k.valid))
                self._extracted[key] = out[key] = entry
            stats.extra["knowledge_extracted"] += len(missing)
        stats.extra["knowledge_empty"] += sum(not e[0] for e in out.values())
        stats.extra["knowledge_invalid"] += sum(bool(e[0]) and not e[2] for e in out.values())
        return out

    def _lookup(self, key: str) -> Entry | None:
        record = self._store.by_text.get(key)
        return _entry(record) if record is not None else self._extracted.get(key)

    def _missing(self, missing: list[str]) -> MissingKnowledgeError:
        owner = self._owners.get(missing[0], "?")
        where = f"knowledge files {self.knowledge_files}" if self.knowledge_files else "no knowledge file"
        head = (
            f"{len(missing)} text(s) have no action knowledge (first: {owner}, text {missing[0]!r}; looked in {where})"
        )
        return with_cli_message(
            MissingKnowledgeError(
                f"{head}; pass knowledge= (a jsonl from KnowledgeExtractor.run / `lumir augment knowledge`) that "
                "covers these texts, or extractor= / llm= to extract them on the fly"
            ),
            f"{head}; write them with `lumir augment knowledge CAPTIONS -o FILE` and add knowledge=FILE to --rerank, "
            "or extract on the fly with llm=MODEL (--rerank action-aware:model=DIR,knowledge=FILE,llm=qwen-coder)",
        )

    # ---- scoring ----
    def _score(
        self, queries: list[Query], heads: list[list[Item]], _scores: list[np.ndarray], stats: RerankStats
    ) -> list[np.ndarray | None]:
        pairs: list[tuple[Item, str]] = []  # (the image to prompt, the text whose knowledge prompts it)
        texts: dict[str, tuple[str, Mapping[str, Any]]] = {}
        self._owners = {}
        for q, head in zip(queries, heads, strict=True):
            for c in head:
                t2i = direction(q, c) == "t2i"
                text_item, image_item = (q, c) if t2i else (c, q)
                text = text_item.text or ""
                key = normalize_text(text)
                texts.setdefault(key, (text, text_item.meta))
                self._owners.setdefault(key, f"query {q.id!r}" if t2i else f"candidate {c.id!r} of query {q.id!r}")
                pairs.append((image_item, text))
        knowledge = self.knowledge_for(texts, stats) if pairs else {}
        scores = np.zeros(len(pairs))
        enabled = len(pairs) >= 64 if self.progress is None else self.progress
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), progress(total=len(pairs), desc="rerank (action-aware)", unit="pair",
                                           enabled=enabled) as bar:  # fmt: skip
                for start in range(0, len(pairs), self.batch_size):
                    chunk = pairs[start : start + self.batch_size]
                    scores[start : start + len(chunk)] = self._pair_scores(chunk, knowledge, stats)
                    bar.update(len(chunk))
        finally:
            self.model.train(was_training)
        stats.prompts += len(pairs)
        stats.extra["images_encoded"] += len(pairs)
        out: list[np.ndarray | None] = []
        start = 0
        for head in heads:
            out.append(scores[start : start + len(head)].copy())
            start += len(head)
        return out

    def _pair_scores(self, chunk: list[tuple[Item, str]], knowledge: Mapping[str, Entry], stats: RerankStats) -> Any:
        """``cos(z_img(image | knowledge(text)), z_txt(text))`` of each pair (each image decoded once per chunk)."""
        device = next(self.model.parameters()).device
        images = {item.id: item for item, _ in chunk}
        img_pos = {iid: i for i, iid in enumerate(images)}
        photos = [_photo(item) for item in images.values()]
        stats.extra["images_loaded"] += len(photos)
        pixels = {name: v.to(device) for name, v in self.model.images(photos).items()}
        uniq = list(dict.fromkeys(text for _, text in chunk))
        txt_pos = {t: i for i, t in enumerate(uniq)}
        kb = self.model.knowledge([knowledge[normalize_text(t)][:2] for t in uniq]).to(device)
        z_txt = self.model.caption_embeddings(uniq).to(device)
        ii = torch.tensor([img_pos[item.id] for item, _ in chunk], device=device)
        tt = torch.tensor([txt_pos[text] for _, text in chunk], device=device)
        z = self.model.encode({name: v[ii] for name, v in pixels.items()}, kb.index(tt))
        return (z * z_txt[tt]).sum(-1).float().cpu().numpy()


def direction(query: Query, candidate: Item) -> str:
    """``"t2i"`` (text query, image candidate) or ``"i2t"`` (image query, text candidate).

    Raises:
        ModalityError: any other pair (LAMP prompts an image with a text's knowledge, §3.5).
    """
    if query.modality is Modality.TEXT and candidate.modality is Modality.IMAGE:
        return "t2i"
    if query.modality is Modality.IMAGE and candidate.modality is Modality.TEXT:
        return "i2t"
    raise ModalityError(
        f"action-aware re-scoring takes text->image or image->text pairs; query {query.id!r} is "
        f"{query.modality.value} and its candidate {candidate.id!r} is {candidate.modality.value} (restrict the "
        "first stage's candidates to the other modality, e.g. candidate_modality=image)"
    )


def _photo(item: Item) -> Any:
    if item.image is None:  # direction() lets only items with images here
        raise ModalityError(f"item {item.id!r} has no image to prompt")
    return load_image(item.image, item.id)
