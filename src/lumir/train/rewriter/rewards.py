"""Rewards for reinforcement learning of the rewriter (MGQRe §3.4), computed by any lumir :class:`Embedder`.

Both rewards score a rewrite ``y`` of a query ``x`` against ``x``'s ground-truth candidate ``v_x`` in a candidate
pool, with ``s`` the embedder's cosine between the query text (role QUERY) and a candidate (role CANDIDATE):

- :class:`SimilarityDeltaReward`, eq. 4: ``r(x, y) = scale * (s(y, v_x) - s(x, v_x))`` with ``scale = 20``. The
  paper's reward, with CLIP ViT-B/32 as ``s``; lumir uses whatever embedder the recipe names (lumir-mini by default).
- :class:`RankReward`: the ground truth's rank among itself and ``negatives`` other candidates of the pool
  (sampled once per query, seeded, the same set for the query and all its rewrites). The default ``mode`` is the
  reciprocal-rank gain ``scale * (1/rank(y) - 1/rank(x))``: bounded, zero when the rank does not move, and
  weighted towards the top of the list the way R@1/R@5 and MRR are (moving 2 -> 1 earns 0.5, 30 -> 25 earns 0.007).
  ``mode="delta"`` is ``scale * (rank(x) - rank(y)) / negatives``, linear in positions gained.

Why a rank reward: a similarity delta can be raised without telling the ground truth apart from anything, by words
that pull the query towards *every* image ("a photo of", colour lists, ...): the reward-hacking failure that GRAPE
reports for similarity rewards. A rank is invariant to such a uniform shift; only discrimination against other
candidates earns it. Both rewards report :attr:`RewardOutput.score_inflation`, the rewrites' mean similarity to the
sampled non-ground-truth candidates minus the originals' (per query, averaged), so a run can see the hacking: a
similarity reward that rises together with score inflation is not a better retriever input.

Conventions: an empty rewrite has no embedding; it scores 0 against every candidate. Ranks break ties
pessimistically (a negative scoring *equal* to the ground truth is counted above it), so a degenerate rewrite can
never rank first by a tie. Candidate vectors are embedded once (on first use, cached by id; :func:`build_reward`
can keep them in a file), and each original query's scores are cached, so a batch of G rewrites per query costs one
embedding call for the rewrites.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from lumir.collections import Corpus
from lumir.protocols import Embedder
from lumir.types import Item, Role

__all__ = [
    "CandidateVectors",
    "RankReward",
    "RewardFunction",
    "RewardOutput",
    "SimilarityDeltaReward",
    "build_reward",
    "load_candidates",
]

_VECTORS_FORMAT = "lumir-candidate-vectors/1"


@dataclass
class RewardOutput:
    """What a reward returns for ``n`` (query, rewrite, target) triples.

    Attributes:
        rewards: float32 tensor ``(n,)``, the reward of each rewrite.
        score_inflation: mean over the triples of (mean similarity of the rewrite to the sampled non-ground-truth
            candidates) minus (the same for the original query); positive means the rewrites got closer to
            everything, not just to the ground truth.
        extras: diagnostics averaged over the triples: ``score_before``/``score_after`` (similarity to the ground
            truth), ``rank_before``/``rank_after`` (among the ground truth and the sampled negatives), ``top1``
            (share of rewrites ranking it first) and ``empty`` (share of empty rewrites).
    """

    rewards: torch.Tensor
    score_inflation: float
    extras: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class RewardFunction(Protocol):
    """``reward(queries, rewrites, targets) -> RewardOutput``: targets are ground-truth candidate ids."""

    def __call__(self, queries: Sequence[str], rewrites: Sequence[str], targets: Sequence[str]) -> RewardOutput: ...

    def spec(self) -> dict[str, Any]: ...


class CandidateVectors:
    """Unit vectors of a candidate pool (role CANDIDATE), each embedded at most once and cached by id.

    Args:
        vectors: precomputed vectors aligned with ``candidates`` (e.g. read back from a cache file).
    """

    def __init__(
        self,
        embedder: Embedder,
        candidates: Corpus,
        *,
        batch_size: int = 32,
        vectors: torch.Tensor | None = None,
    ) -> None:
        if vectors is not None and tuple(vectors.shape) != (len(candidates), embedder.dim):
            raise ValueError(
                f"precomputed vectors have shape {tuple(vectors.shape)}, expected {(len(candidates), embedder.dim)}"
            )
        self.embedder, self.candidates, self.batch_size = embedder, candidates, batch_size
        self._cache: dict[str, torch.Tensor] = {}
        if vectors is not None:
            unit = _unit(vectors.float())
            self._cache = {item.id: unit[i] for i, item in enumerate(candidates)}

    def get(self, ids: Sequence[str]) -> torch.Tensor:
        """``(len(ids), dim)`` unit vectors; unknown ids raise KeyError naming the first."""
        missing = list(dict.fromkeys(i for i in ids if i not in self._cache))
        if missing:
            items: list[Item] = [self.candidates[i] for i in missing]
            vecs = _unit(self.embedder.embed(items, role=Role.CANDIDATE, batch_size=self.batch_size).float())
            self._cache.update(zip(missing, vecs, strict=True))
        if not ids:
            return torch.empty(0, self.embedder.dim)
        return torch.stack([self._cache[i] for i in ids])

    def all(self) -> torch.Tensor:
        """Every candidate's vector, in corpus order (embeds what is not cached yet)."""
        return self.get([item.id for item in self.candidates])


@dataclass
class _Scores:
    gt_before: torch.Tensor  # (n,)
    gt_after: torch.Tensor  # (n,)
    neg_before: torch.Tensor  # (n, k)
    neg_after: torch.Tensor  # (n, k)
    empty: torch.Tensor  # (n,) bool


class _EmbedderReward:
    """Shared machinery: candidate vectors, seeded negatives per query, cached query scores, diagnostics."""

    kind = ""

    def __init__(
        self,
        embedder: Embedder,
        candidates: Corpus,
        *,
        scale: float,
        negatives: int = 31,
        seed: int = 0,
        batch_size: int = 32,
        vectors: torch.Tensor | None = None,
    ) -> None:
        if len(candidates) < 2:
            raise ValueError(f"the candidate pool needs at least 2 items, got {len(candidates)}")
        if negatives < 1:
            raise ValueError(f"negatives must be >= 1, got {negatives}")
        self.embedder = embedder
        self.pool = CandidateVectors(embedder, candidates, batch_size=batch_size, vectors=vectors)
        self.scale, self.seed, self.batch_size = float(scale), int(seed), int(batch_size)
        self.negatives = min(int(negatives), len(candidates) - 1)
        self._ids = [item.id for item in candidates]
        self._before: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._neg_ids: dict[tuple[str, str], list[str]] = {}

    def negative_ids(self, query: str, target: str) -> list[str]:
        """The ``negatives`` candidates sampled for (query, target): seeded by both, never the target."""
        key = (query, target)
        if key not in self._neg_ids:
            rng = random.Random(f"{self.seed}\x00{query}\x00{target}")
            picks = rng.sample(range(len(self._ids)), self.negatives + 1)
            self._neg_ids[key] = [self._ids[p] for p in picks if self._ids[p] != target][: self.negatives]
        return self._neg_ids[key]

    def _embed_texts(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit query vectors (zero rows for empty texts) and the empty mask, one embedding call for distinct texts."""
        empty = torch.tensor([not t.strip() for t in texts], dtype=torch.bool)
        distinct = list(dict.fromkeys(t for t in texts if t.strip()))
        out = torch.zeros(len(texts), self.embedder.dim)
        if distinct:
            items = [Item(f"q{i}", text=t) for i, t in enumerate(distinct)]
            vecs = _unit(self.embedder.embed(items, role=Role.QUERY, batch_size=self.batch_size).float())
            row = {t: vecs[i] for i, t in enumerate(distinct)}
            for i, t in enumerate(texts):
                if t.strip():
                    out[i] = row[t]
        return out, empty

    def _query_scores(self, queries: Sequence[str], targets: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        new = [k for k in dict.fromkeys(zip(queries, targets, strict=True)) if k not in self._before]
        if new:
            qv, _ = self._embed_texts([q for q, _ in new])
            for (q, t), v in zip(new, qv, strict=True):
                gt = self.pool.get([t])[0]
                neg = self.pool.get(self.negative_ids(q, t))
                self._before[(q, t)] = (v @ gt, neg @ v)
        pairs = [self._before[k] for k in zip(queries, targets, strict=True)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def scores(self, queries: Sequence[str], rewrites: Sequence[str], targets: Sequence[str]) -> _Scores:
        if not len(queries) == len(rewrites) == len(targets):
            raise ValueError(f"got {len(queries)} queries, {len(rewrites)} rewrites and {len(targets)} targets")
        unknown = [t for t in targets if t not in self.pool.candidates]
        if unknown:
            raise KeyError(f"target {unknown[0]!r} is not in the candidate pool ({len(unknown)} unknown targets)")
        gt_before, neg_before = self._query_scores(queries, targets)
        rv, empty = self._embed_texts(rewrites)
        gt = self.pool.get(list(targets))
        neg = torch.stack([self.pool.get(self.negative_ids(q, t)) for q, t in zip(queries, targets, strict=True)])
        gt_after = (rv * gt).sum(-1)
        neg_after = torch.einsum("nkd,nd->nk", neg, rv)
        return _Scores(gt_before, gt_after, neg_before, neg_after, empty)

    def reward_from(self, s: _Scores) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, queries: Sequence[str], rewrites: Sequence[str], targets: Sequence[str]) -> RewardOutput:
        if not queries:
            return RewardOutput(torch.empty(0), 0.0, {})
        s = self.scores(queries, rewrites, targets)
        rank_before, rank_after = ranks(s.gt_before, s.neg_before), ranks(s.gt_after, s.neg_after)
        inflation = (s.neg_after.mean(-1) - s.neg_before.mean(-1)).mean()
        extras = {
            "score_before": float(s.gt_before.mean()),
            "score_after": float(s.gt_after.mean()),
            "rank_before": float(rank_before.float().mean()),
            "rank_after": float(rank_after.float().mean()),
            "top1": float((rank_after == 1).float().mean()),
            "empty": float(s.empty.float().mean()),
        }
        return RewardOutput(self.reward_from(s).float(), float(inflation), extras)

    def spec(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "embedder": self.embedder.spec(),
            "candidates": self.pool.candidates.source,
            "scale": self.scale,
            "negatives": self.negatives,
            "seed": self.seed,
        }


class SimilarityDeltaReward(_EmbedderReward):
    """Eq. 4: ``scale * (s(y, v_x) - s(x, v_x))``, the gain in the ground truth's similarity (see the module doc).

    Example:
        >>> from lumir.testing.fakes import ColorEmbedder
        >>> pool = Corpus([Item("r", text="red"), Item("b", text="blue")])
        >>> reward = SimilarityDeltaReward(ColorEmbedder(), pool, negatives=1)
        >>> out = reward(["blue"], ["red"], ["r"])
        >>> out.rewards.item() > 0, out.extras["rank_before"], out.extras["rank_after"]
        (True, 2.0, 1.0)
    """

    kind = "similarity"

    def __init__(self, embedder: Embedder, candidates: Corpus, scale: float = 20.0, **options: Any) -> None:
        super().__init__(embedder, candidates, scale=scale, **options)

    def reward_from(self, s: _Scores) -> torch.Tensor:
        return self.scale * (s.gt_after - s.gt_before)


class RankReward(_EmbedderReward):
    """The ground truth's rank gain among itself and ``negatives`` sampled candidates (see the module doc).

    Args:
        mode: ``"reciprocal"`` (``scale * (1/rank_after - 1/rank_before)``, the default) or ``"delta"``
            (``scale * (rank_before - rank_after) / negatives``).
    """

    kind = "rank"
    MODES = ("reciprocal", "delta")

    def __init__(
        self, embedder: Embedder, candidates: Corpus, scale: float = 1.0, *, mode: str = "reciprocal", **options: Any
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"unknown rank reward mode {mode!r}; choose one of {self.MODES}")
        super().__init__(embedder, candidates, scale=scale, **options)
        self.mode = mode

    def reward_from(self, s: _Scores) -> torch.Tensor:
        before, after = ranks(s.gt_before, s.neg_before).float(), ranks(s.gt_after, s.neg_after).float()
        if self.mode == "reciprocal":
            return self.scale * (1.0 / after - 1.0 / before)
        return self.scale * (before - after) / self.negatives

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "mode": self.mode}


def ranks(gt: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """1-based rank of each ground-truth score ``(n,)`` among its negatives' ``(n, k)``, ties counted against it.

    Example:
        >>> ranks(torch.tensor([0.5, 0.5]), torch.tensor([[0.9, 0.1], [0.5, 0.1]])).tolist()
        [2, 2]
    """
    return 1 + (negatives >= gt.unsqueeze(-1)).sum(-1)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# recipes ------------------------------------------------------------------------------------------------------------


def load_candidates(spec: str | Path | Mapping[str, Any]) -> Corpus:
    """The candidate pool a reward scores against, from a data-source spec (:data:`lumir.registry.SOURCES`).

    ``spec`` is a path (any layout :func:`lumir.data.sources.load_corpus` detects) or a mapping
    ``{type: flickr8k|jsonl|folder|beir|mbeir, path: ..., split: ..., limit: N}``; ``limit`` keeps the first
    ``N`` items (MGQRe's pool: ``{type: flickr8k, split: train_4k, limit: 3500}``, the 3,500 construction photos);
    a Flickr8k spec without ``path`` reads ``<data root>/flickr8k``. ``cache`` is ignored here (see
    :func:`build_reward`).

    Raises:
        ValueError: a test split (rewards never see test candidates), or no ``type``.
    """
    from lumir.data.sources import load_corpus
    from lumir.registry import SOURCES

    if isinstance(spec, (str, Path)):
        return load_corpus(spec)
    options = {k: v for k, v in spec.items() if k not in ("limit", "cache")}
    if "type" not in options:
        raise ValueError(f"reward.candidates needs a 'type' (one of {SOURCES.names()}), got {dict(spec)}")
    split = options.get("split")
    if split is not None and str(split).startswith("test"):
        raise ValueError(f"refusing to train a rewriter against the test split {split!r}")
    if str(options["type"]).startswith("flickr8k") and not options.get("path"):
        from lumir.eval.tasks import default_data_root

        options["path"] = str(default_data_root() / "flickr8k")
    corpus: Corpus = SOURCES.build(options)
    limit = spec.get("limit")
    if limit is not None:
        corpus = Corpus(list(corpus)[: int(limit)], source={**(corpus.source or options), "limit": int(limit)})
    return corpus


REWARD_TYPES: dict[str, type[SimilarityDeltaReward] | type[RankReward]] = {
    "similarity": SimilarityDeltaReward,
    "rank": RankReward,
}


def build_reward(block: Mapping[str, Any]) -> SimilarityDeltaReward | RankReward:
    """The reward of a recipe's ``reward:`` block.

    Keys: ``type`` (``similarity`` | ``rank``), ``embedder`` (any embedder spec, e.g. ``mini``), ``candidates``
    (see :func:`load_candidates`; with ``cache: FILE.pt`` the pool's vectors are embedded once and kept in that
    file, reused while the embedder spec and the candidate ids match), ``scale``, ``negatives``, ``seed``,
    ``batch_size`` and, for ``rank``, ``mode``.
    """
    from lumir.embed.factories import load_embedder

    options = dict(block)
    kind = str(options.pop("type", "similarity"))
    if kind not in REWARD_TYPES:
        raise ValueError(f"unknown reward type {kind!r}; choose one of {sorted(REWARD_TYPES)}")
    if "embedder" not in options or "candidates" not in options:
        raise ValueError("the reward block needs an 'embedder' and 'candidates'")
    known = {"scale", "negatives", "seed", "batch_size"} | ({"mode"} if kind == "rank" else set())
    unknown = sorted(set(options) - known - {"embedder", "candidates"})
    if unknown:
        raise ValueError(
            f"unknown {kind} reward option(s) {unknown}; known: {sorted(known | {'embedder', 'candidates'})}"
        )
    embedder = load_embedder(options.pop("embedder"))
    cand_spec = options.pop("candidates")
    candidates = load_candidates(cand_spec)
    cache = cand_spec.get("cache") if isinstance(cand_spec, Mapping) else None
    vectors = _cached_vectors(Path(cache), embedder, candidates, int(options.get("batch_size", 32))) if cache else None
    return REWARD_TYPES[kind](embedder, candidates, vectors=vectors, **options)


def _cached_vectors(path: Path, embedder: Embedder, candidates: Corpus, batch_size: int) -> torch.Tensor:
    ids = [item.id for item in candidates]
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved.get("format") == _VECTORS_FORMAT and saved["ids"] == ids and saved["embedder"] == embedder.spec():
            vectors: torch.Tensor = saved["vectors"]
            return vectors
    vectors = CandidateVectors(embedder, candidates, batch_size=batch_size).all()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save({"format": _VECTORS_FORMAT, "ids": ids, "embedder": embedder.spec(), "vectors": vectors}, tmp)
    tmp.replace(path)
    return vectors
