"""MGQRe §3.1: build low → high-quality query pairs by letting an (M)LLM probe a retriever's weaknesses.

Every training query is ranked by the retriever and split by the rank of its ground-truth candidate
(``rank <= high_rank`` is high quality; the paper's split rule is not given, top-1 is the default).

- **Low-quality query** (``strategy="challenge"``, the paper's method): (1) candidate recall, (2) the wrong top
  candidates and the ground truth go to the model, (3) it analyses by chain of thought which concepts the
  retriever missed and rewrites the query, (4) the rewrite is re-ranked; up to ``max_turns`` turns, each told how
  the previous rewrite ranked, until ``target_rewrites`` rewrites are high quality.
- **High-quality query**: the model blurs it; the vaguer variant is kept only when the retriever ranks the
  ground truth lower with it, giving the pair (blurred → original).
- Table 2's other strategies: ``"feedback"`` (no negatives, only the previous rewrite's rank as feedback) and
  ``"direct"`` (one rewrite from the query and the photo, accepted whatever its rank).

Every rewrite passes :func:`lumir.rewrite.validate.refusal_reason`, a text-similarity filter against the low
query (an embedder such as all-MiniLM-L6-v2, ``min_similarity``) and a copy filter against the ground truth's
reference descriptions (:func:`~lumir.rewrite.validate.copied_share`). Images reach the model natively when it is
vision-capable, or as their captions in the explicitly named caption-proxy mode (``image_mode="caption"``; the
ground truth is then described by its *other* captions, never the query itself).

Records (one jsonl line per query, appended as they finish, so a run resumes) keep the model, prompt version,
every attempt with its turn, rank and score before/after, similarity and copied share.
:func:`export_datasets` turns them into ``sft.jsonl`` (D_SFT: low → best high) and ``pro.jsonl`` (D_PRO: low →
up to k rewrites ranked by the retriever's score of the ground truth) plus ``stats.json``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lumir.collections import Corpus
from lumir.errors import DataFormatError, ModalityError
from lumir.protocols import ChatModel, Conversation, Embedder, Retriever
from lumir.rewrite.prompts import BLUR, CHALLENGE, DIRECT, FEEDBACK, RewritePrompt
from lumir.rewrite.validate import copied_share, parse_rewrite, refusal_reason
from lumir.types import Item, Query, Role

__all__ = ["STRATEGIES", "ConstructionConfig", "PairBuilder", "export_datasets", "summarize_records"]

STRATEGIES = ("challenge", "feedback", "direct")
_PROMPTS: dict[str, RewritePrompt] = {"challenge": CHALLENGE, "feedback": FEEDBACK, "direct": DIRECT}
_GT, _NEG = "\x00GT\x00", "\x00NEG\x00"


@dataclass
class ConstructionConfig:
    """Settings of the pair builder (lumir's defaults; the paper gives no numbers for them).

    Attributes:
        strategy: ``"challenge"`` (§3.1), ``"feedback"`` or ``"direct"`` (Table 2's alternatives).
        high_rank: a query is high quality when its ground truth ranks at or above this.
        max_turns: rewriting turns per low-quality query (``direct`` always uses one).
        target_rewrites: stop a low-quality query once it has this many high-quality rewrites.
        negatives: wrong top candidates shown to the model (``challenge``).
        blur: also make low-quality variants of high-quality queries.
        image_mode: ``"native"`` (image parts; needs a vision-language model) or ``"caption"`` (caption-proxy).
        proxy_captions: captions joined to describe a photo in caption-proxy mode.
        max_words: longest acceptable rewrite.
        min_similarity: low/high pairs below this text similarity are refused (needs a similarity embedder).
        max_copied_share: rewrites copying this share of reference n-grams or more are refused.
        max_new_tokens: generation cap per call (room for the analysis).
        retry_temperature: sampling temperature of every call after a query's first (0: greedy throughout).
            Small agents answer the same greedy text turn after turn; sampling the retries makes them explore.
        blur_attempts: calls made to blur a high-quality query until a variant ranks worse.
        depth: ranking depth; None ranks the whole pool (exact ranks).
    """

    strategy: str = "challenge"
    high_rank: int = 1
    max_turns: int = 3
    target_rewrites: int = 3
    negatives: int = 3
    blur: bool = True
    image_mode: str = "native"
    proxy_captions: int = 2
    max_words: int = 30
    min_similarity: float = 0.5
    max_copied_share: float = 0.5
    max_new_tokens: int = 120
    retry_temperature: float = 0.8
    blur_attempts: int = 2
    depth: int | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; use one of {STRATEGIES}")
        if self.image_mode not in ("native", "caption"):
            raise ValueError(f"unknown image_mode {self.image_mode!r}; use 'native' or 'caption' (caption-proxy)")
        if self.high_rank < 1 or self.max_turns < 1 or self.target_rewrites < 1:
            raise ValueError("high_rank, max_turns and target_rewrites must be >= 1")


class PairBuilder:
    """Builds challenge–response records for queries with one ground-truth candidate each.

    Args:
        retriever: any retriever over the candidate pool (its ranking decides quality).
        chat: any ChatModel (the "MLLM agent"); a text-only model needs ``image_mode="caption"``.
        corpus: the candidate pool, to show the model the wrong candidates and the ground truth.
        config: the construction settings.
        similarity: a text embedder for the low/high similarity filter (None: the filter is off and records say so).
        captions: candidate id -> its captions, for caption-proxy mode.
    """

    def __init__(
        self,
        retriever: Retriever,
        chat: ChatModel,
        corpus: Corpus,
        config: ConstructionConfig | None = None,
        *,
        similarity: Embedder | None = None,
        captions: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.retriever, self.chat, self.corpus = retriever, chat, corpus
        self.config = config or ConstructionConfig()
        self.similarity = similarity
        self.captions = {k: list(v) for k, v in (captions or {}).items()}
        if self.config.image_mode == "native" and not chat.supports_images:
            raise ModalityError(
                f"the {chat.backend} model reads text only; use a vision-language model or image_mode='caption' "
                "(caption-proxy mode: photos are described by their captions)"
            )
        self.calls = 0

    # -- retriever -------------------------------------------------------------------------------------------------
    def rank(self, texts: Sequence[str], target: str) -> list[tuple[int, float, list[str]]]:
        """For each text: (rank of ``target`` (1-based; depth+1 when absent), its score, the ids above it)."""
        depth = self.config.depth or len(self.corpus)
        queries = [Query(f"t{i}", text=t) for i, t in enumerate(texts)]
        rankings = self.retriever.retrieve(queries, k=depth)
        out = []
        for q in queries:
            hits = rankings.for_query(q.id)
            ids = [h.id for h in hits]
            if target in ids:
                pos = ids.index(target)
                out.append((pos + 1, float(hits[pos].score), ids[:pos]))
            else:
                out.append((depth + 1, float("-inf"), ids))
        return out

    def _similarities(self, low: str, texts: Sequence[str]) -> list[float | None]:
        if self.similarity is None or not texts:
            return [None] * len(texts)
        vecs = self.similarity.embed(
            [Item("low", text=low), *(Item(f"r{i}", text=t) for i, t in enumerate(texts))], role=Role.CANDIDATE
        )
        vecs = vecs / vecs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return [float(v) for v in (vecs[1:] @ vecs[0])]

    # -- prompts ---------------------------------------------------------------------------------------------------
    def references(self, target: str, query_text: str) -> list[str]:
        """The ground truth's reference descriptions: its captions other than the query itself."""
        return [c for c in self.captions.get(target, []) if c.strip() != query_text.strip()]

    def _describe(self, item_id: str, exclude: str) -> list[dict[str, Any]]:
        if self.config.image_mode == "native":
            item = self.corpus.get(item_id)
            if item is None or item.image is None:
                raise DataFormatError(f"candidate {item_id!r} has no image for native mode")
            return [{"type": "image", "image": item.image}]
        caps = [c for c in self.captions.get(item_id, []) if c.strip() != exclude.strip()]
        if not caps:
            raise ModalityError(f"caption-proxy mode needs captions for candidate {item_id!r}; pass captions=")
        return [{"type": "text", "text": "Image description: " + "; ".join(caps[: self.config.proxy_captions])}]

    def conversation(self, prompt: RewritePrompt, query: str, target: str, **fields: Any) -> Conversation:
        """The chat for one call: ``{ground_truth}`` and ``{negatives}`` become image or caption-proxy parts."""
        text = prompt.render(query=query, ground_truth=_GT, negatives=_NEG, max_words=self.config.max_words, **fields)
        parts: list[dict[str, Any]] = []
        for chunk in _split_keep(text, (_GT, _NEG)):
            if chunk == _GT:
                parts += self._describe(target, query)
            elif chunk == _NEG:
                for n, neg in enumerate(fields.get("negative_ids", []), start=1):
                    parts.append({"type": "text", "text": f"{n}. "})
                    parts += self._describe(neg, query)
                    parts.append({"type": "text", "text": "\n"})
            elif chunk:
                parts.append({"type": "text", "text": chunk})
        return [
            {"role": "system", "content": [{"type": "text", "text": prompt.system}]},
            {"role": "user", "content": _merge_text(parts)},
        ]

    def _ask(self, conversation: Conversation, turn: int = 1) -> str:
        self.calls += 1
        gen: dict[str, Any] = {"max_new_tokens": self.config.max_new_tokens, "stop": ["\nAnalysis:"]}
        # (a second "Analysis:" means the model started repeating the format: nothing useful follows)
        if turn > 1 and self.config.retry_temperature > 0:
            gen.update(temperature=self.config.retry_temperature, seed=turn)
        return self.chat.generate([conversation], **gen)[0]

    # -- one query -------------------------------------------------------------------------------------------------
    def _attempt(self, query: str, target: str, rank0: int, output: str, turn: int) -> dict[str, Any]:
        cfg = self.config
        text = parse_rewrite(output, fallback="none")
        record: dict[str, Any] = {"turn": turn, "output": output, "text": text}
        analysis = output.split("Query:", 1)[0].replace("Analysis:", "").strip() if "Query:" in output else ""
        if analysis:
            record["analysis"] = analysis
        (sim,) = self._similarities(query, [text]) if text.strip() else (None,)
        # with a similarity model, topicality is its job ("similarity"); without one, shared content words
        reason = refusal_reason(query, text, max_words=cfg.max_words, similarity=sim, min_similarity=-1.0)
        if reason is None:
            record["similarity"] = sim
            share = copied_share(text, query, self.references(target, query))
            record["copied_share"] = round(share, 4)
            if sim is not None and sim < cfg.min_similarity:
                reason = "similarity"
            elif share >= cfg.max_copied_share:
                reason = "copy"
        if reason is not None:
            record["status"] = f"refused:{reason}"
            return record
        ((rank, score, _),) = self.rank([text], target)
        record.update(rank_before=rank0, rank=rank, score=score)
        return record

    def build_one(self, query: Query, target: str) -> dict[str, Any]:
        """The record of one query: its rank, quality, and every attempt."""
        cfg = self.config
        start, calls0 = time.perf_counter(), self.calls
        text = query.text or ""
        ((rank0, score0, above),) = self.rank([text], target)
        quality = "high" if rank0 <= cfg.high_rank else "low"
        rec: dict[str, Any] = {
            "id": query.id,
            "query": text,
            "target": target,
            "rank": rank0,
            "score": score0,
            "quality": quality,
            "strategy": cfg.strategy,
            "model": self.chat.spec(),
            "image_mode": cfg.image_mode,
            "attempts": [],
        }
        if quality == "high":
            rec["prompt_version"] = BLUR.version
            for turn in range(1, cfg.blur_attempts + 1 if cfg.blur else 1):
                att = self._attempt(text, target, rank0, self._ask(self.conversation(BLUR, text, target), turn), turn)
                if "rank" in att:
                    att["status"] = "low" if att["rank"] > rank0 else "not_worse"
                rec["attempts"].append(att)
                if att.get("status") == "low":
                    break
        else:
            prompt = _PROMPTS[cfg.strategy]
            rec["prompt_version"] = prompt.version
            turns = 1 if cfg.strategy == "direct" else cfg.max_turns
            negatives = [i for i in above if i != target][: cfg.negatives]
            for turn in range(1, turns + 1):
                conv = self.conversation(
                    prompt, text, target, rank=rank0, negative_ids=negatives, feedback=self._feedback(rec["attempts"])
                )
                att = self._attempt(text, target, rank0, self._ask(conv, turn), turn)
                if "rank" in att and any(a.get("text") == att["text"] for a in rec["attempts"]):
                    att["status"] = "duplicate"
                elif "rank" in att:
                    high = cfg.strategy == "direct" or att["rank"] <= cfg.high_rank
                    att["status"] = "high" if high else "not_high"
                rec["attempts"].append(att)
                if sum(a.get("status") == "high" for a in rec["attempts"]) >= cfg.target_rewrites:
                    break
        rec["calls"] = self.calls - calls0
        rec["seconds"] = round(time.perf_counter() - start, 3)
        return rec

    @staticmethod
    def _feedback(attempts: Sequence[Mapping[str, Any]]) -> str:
        lines = []
        for a in attempts:
            if "rank" in a:
                lines.append(f'Your earlier rewrite "{a["text"]}" ranked the correct photo at position {a["rank"]}.')
            elif a.get("text"):
                lines.append(f'Your earlier rewrite "{a["text"]}" was refused ({a["status"].split(":")[-1]}).')
            else:
                lines.append("Your earlier answer had no 'Query:' line.")
        if not lines:
            return ""
        return "\n".join(lines) + "\nWrite a different rewrite that does better.\n"

    def run(
        self, queries: Sequence[Query], targets: Mapping[str, str], output: str | Path, *, progress: bool = True
    ) -> dict[str, int]:
        """Build a record for every query not yet in ``output`` (jsonl, appended per query; resumable).

        Args:
            targets: query id -> its one ground-truth candidate id.

        Returns counts: ``done`` (this run) and ``skipped`` (already in the file).

        Raises:
            OutputLockedError: another job writes ``output``; nothing is written.
            DataFormatError: ``output`` holds a line that is not a record (it names the line).
        """
        from lumir.io.lock import output_lock
        from lumir.progress import progress as progress_bar

        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        missing = [q.id for q in queries if q.id not in targets]
        if missing:
            raise ValueError(f"{len(missing)} queries have no ground-truth candidate (first: {missing[0]!r})")
        with output_lock(path), path.open("a", encoding="utf-8") as fh:
            seen = {r["id"] for r in read_records(path)}
            todo = [q for q in queries if q.id not in seen]
            with progress_bar(
                total=len(todo), desc=f"pairs ({self.config.strategy})", unit="query", enabled=progress
            ) as bar:
                for q in todo:
                    fh.write(json.dumps(self.build_one(q, targets[q.id]), ensure_ascii=False) + "\n")
                    fh.flush()
                    bar.update(1)
        return {"done": len(todo), "skipped": len(queries) - len(todo)}


def _split_keep(text: str, marks: Sequence[str]) -> list[str]:
    out = [text]
    for m in marks:
        out = [piece for chunk in out for piece in _interleave(chunk.split(m), m)] if m in text else out
    return out


def _interleave(pieces: list[str], mark: str) -> list[str]:
    out: list[str] = []
    for i, p in enumerate(pieces):
        if i:
            out.append(mark)
        out.append(p)
    return out


def _merge_text(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in parts:
        if p["type"] == "text" and out and out[-1]["type"] == "text":
            out[-1] = {"type": "text", "text": out[-1]["text"] + p["text"]}
        else:
            out.append(dict(p))
    return out


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a pair-builder jsonl (an absent file has none); a bad line raises naming it."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            rec["id"], rec["attempts"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataFormatError(f"not a pair-builder record ({err}); move the file away", path=path, line=n) from err
        out.append(rec)
    return out


def summarize_records(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Statistics: queries, low/high split, turns, share of low queries made high quality, refusals, calls, time."""
    low = [r for r in records if r["quality"] == "low"]
    high = [r for r in records if r["quality"] == "high"]
    statuses = Counter(a.get("status", "?") for r in records for a in r["attempts"])
    made_high = sum(any(a.get("status") == "high" for a in r["attempts"]) for r in low)
    return {
        "queries": len(records),
        "low_quality": len(low),
        "high_quality": len(high),
        "turns": sum(len(r["attempts"]) for r in low),
        "low_made_high": made_high,
        "low_made_high_share": round(made_high / len(low), 4) if low else None,
        "blurred_kept": sum(any(a.get("status") == "low" for a in r["attempts"]) for r in high),
        "attempt_status": dict(sorted(statuses.items())),
        "llm_calls": sum(int(r.get("calls", 0)) for r in records),
        "seconds": round(sum(float(r.get("seconds", 0.0)) for r in records), 1),
    }


def _provenance(rec: Mapping[str, Any], att: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "model": rec["model"],
        "prompt_version": rec.get("prompt_version"),
        "strategy": rec["strategy"],
        "image_mode": rec["image_mode"],
        "turn": att["turn"],
        "similarity": att.get("similarity"),
        "copied_share": att.get("copied_share"),
    }


def export_datasets(
    records: Sequence[Mapping[str, Any]] | str | Path,
    out_dir: str | Path,
    *,
    k: int = 5,
    include_original: bool = True,
) -> dict[str, Any]:
    """Write ``sft.jsonl``, ``pro.jsonl`` and ``stats.json`` under ``out_dir`` from pair-builder records.

    D_SFT (eq. 1): one ``{"prompt": low, "completion": high}`` per pair — a low query and its best accepted
    rewrite (highest ground-truth score), or a kept blurred variant and its original. D_PRO (eq. 3): one
    ``{"prompt": low, "rewrites": [...], "scores": [...]}`` per low query with an accepted rewrite: up to ``k``
    distinct valid texts (rewrites, and the original query itself when ``include_original``) sorted by the
    retriever's score of the ground truth, best first.
    """
    recs = read_records(records) if isinstance(records, (str, Path)) else list(records)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sft, pro = [], []
    for rec in recs:
        scored = [a for a in rec["attempts"] if "rank" in a]
        if rec["quality"] == "high":
            for a in scored:
                if a["status"] == "low":
                    sft.append(
                        {
                            "id": rec["id"],
                            "prompt": a["text"],
                            "completion": rec["query"],
                            "source": "blur",
                            "rank_low": a["rank"],
                            "rank_high": rec["rank"],
                            "score_low": a["score"],
                            "score_high": rec["score"],
                            **_provenance(rec, a),
                        }
                    )
                    pro.append(
                        {
                            "id": rec["id"],
                            "prompt": a["text"],
                            "rewrites": [rec["query"], a["text"]],
                            "scores": [rec["score"], a["score"]],
                            "ranks": [rec["rank"], a["rank"]],
                        }
                    )
            continue
        accepted = [a for a in scored if a["status"] == "high"]
        if not accepted:
            continue
        best = max(accepted, key=lambda a: a["score"])
        sft.append(
            {
                "id": rec["id"],
                "prompt": rec["query"],
                "completion": best["text"],
                "source": "rewrite",
                "rank_low": rec["rank"],
                "rank_high": best["rank"],
                "score_low": rec["score"],
                "score_high": best["score"],
                **_provenance(rec, best),
            }
        )
        pool: dict[str, tuple[float, int]] = {}
        for a in scored:
            pool.setdefault(a["text"], (a["score"], a["rank"]))
        if include_original:
            pool.setdefault(rec["query"], (rec["score"], rec["rank"]))
        ranked = sorted(pool.items(), key=lambda kv: -kv[1][0])[:k]
        if len(ranked) >= 2:
            pro.append(
                {
                    "id": rec["id"],
                    "prompt": rec["query"],
                    "rewrites": [t for t, _ in ranked],
                    "scores": [s for _, (s, _) in ranked],
                    "ranks": [r for _, (_, r) in ranked],
                }
            )
    for name, rows in (("sft.jsonl", sft), ("pro.jsonl", pro)):
        with (out / name).open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    stats = {**summarize_records(recs), "sft_pairs": len(sft), "pro_lists": len(pro), "k": k}
    if recs:
        stats["model"] = recs[0]["model"]
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


def config_dict(config: ConstructionConfig) -> dict[str, Any]:
    """The config as plain data (for run manifests)."""
    return asdict(config)
