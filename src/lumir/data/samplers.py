"""Batch samplers for contrastive training: no duplicates in a batch, task-homogeneous batches, source mixing.

In-batch negatives are only negatives if no two examples of a batch share an item, so every sampler here fills
batches greedily from a shuffled stream, putting each example in the first open batch that holds none of its items
(sentence-transformers' ``NoDuplicatesBatchSampler``). On top of that:

- ``homogeneous=True``: each batch holds examples of one group (task) only, as UniIR and LamRA train on M-BEIR
  (in-batch negatives of another task are trivially easy, e.g. a caption when the query asks for an image);
- ``weights``: a mixture over groups (sources). Each slot of the epoch's stream first picks a group with these
  weights, then the group's next example (a group that runs out is reshuffled and reused), so ``{"mbeir": 1,
  "text": 1}`` samples multimodal and text triplets uniformly — MM-Embed's continual text-to-text fine-tuning
  (Lin et al. 2024, §4.1.2). Without weights every example appears exactly once per epoch.

Every epoch's order is a pure function of ``(seed, epoch)``: call :meth:`set_epoch` (``transformers.Trainer`` does)
and a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch

__all__ = ["ExampleBatchSampler", "fill_batches"]


def fill_batches(order: Sequence[int], keys: Sequence[frozenset[str]], batch_size: int) -> list[list[int]]:
    """Greedy no-duplicates batching of ``order``: each index joins the first open batch sharing none of its keys.

    Example:
        >>> keys = [frozenset({"a"}), frozenset({"a"}), frozenset({"b"}), frozenset({"c"})]
        >>> fill_batches([0, 1, 2, 3], keys, 2)
        [[0, 2], [1, 3]]
    """
    open_batches: list[tuple[list[int], set[str]]] = []
    done: list[list[int]] = []
    for i in order:
        target = next((b for b in open_batches if b[1].isdisjoint(keys[i])), None)
        if target is None:
            target = ([], set())
            open_batches.append(target)
        target[0].append(i)
        target[1].update(keys[i])
        if len(target[0]) == batch_size:
            open_batches.remove(target)
            done.append(target[0])
    done.extend(members for members, _ in open_batches)
    return done


class ExampleBatchSampler:
    """Yields lists of example indices (a ``batch_sampler`` for ``torch.utils.data.DataLoader``).

    Args:
        keys: per example, the ids of its items (:meth:`lumir.data.examples.TrainingExample.item_ids`).
        batch_size: examples per batch.
        groups: per example, its group (task or source); needed by ``homogeneous`` and ``weights``.
        homogeneous: every batch from one group.
        weights: sampling weight per group (the mixture described in the module docstring); ``"uniform"`` gives
            every group the same weight.
        drop_last: drop batches that are not full (a few small batches have few negatives).
        seed: the epoch order is drawn from ``seed + epoch``.
    """

    def __init__(
        self,
        keys: Sequence[frozenset[str]],
        batch_size: int,
        *,
        groups: Sequence[str] | None = None,
        homogeneous: bool = False,
        weights: Mapping[str, float] | str | None = None,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not keys:
            raise ValueError("no training examples")
        if groups is not None and len(groups) != len(keys):
            raise ValueError(f"{len(groups)} groups for {len(keys)} examples")
        if (homogeneous or weights is not None) and groups is None:
            raise ValueError("homogeneous batches and weights need the examples' groups")
        self.keys = list(keys)
        self.batch_size = batch_size
        self.groups = list(groups) if groups is not None else ["default"] * len(keys)
        self.members: dict[str, list[int]] = {}
        for i, g in enumerate(self.groups):
            self.members.setdefault(g, []).append(i)
        self.weights: dict[str, float] | None = None
        if weights == "uniform":
            self.weights = dict.fromkeys(self.members, 1.0)
        elif isinstance(weights, str):
            raise ValueError(f"weights must be a mapping or 'uniform', got {weights!r}")
        elif weights is not None:
            unknown = sorted(set(weights) - set(self.members))
            missing = sorted(set(self.members) - set(weights))
            if unknown or missing:
                raise ValueError(f"weights must name every group exactly: unknown {unknown}, missing {missing}")
            if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise ValueError(f"weights must be non-negative with a positive sum, got {dict(weights)}")
            self.weights = {g: float(w) for g, w in weights.items()}
        self.homogeneous = homogeneous
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self._plan: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields."""
        self.epoch = int(epoch)

    def _stream(self, gen: torch.Generator) -> list[int]:
        if self.weights is None:
            return torch.randperm(len(self.keys), generator=gen).tolist()
        names = sorted(self.members)
        probs = torch.tensor([self.weights[g] for g in names], dtype=torch.float64)
        picks = torch.multinomial(probs, len(self.keys), replacement=True, generator=gen).tolist()
        queues: dict[str, list[int]] = {g: [] for g in names}
        stream = []
        for p in picks:
            g = names[p]
            if not queues[g]:
                members = self.members[g]
                queues[g] = [members[i] for i in torch.randperm(len(members), generator=gen).tolist()]
            stream.append(queues[g].pop())
        return stream

    def plan(self) -> list[list[int]]:
        """The batches of the current epoch (computed once per epoch)."""
        if self._plan is not None and self._plan[0] == self.epoch:
            return self._plan[1]
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        stream = self._stream(gen)
        if self.homogeneous:
            per_group: dict[str, list[int]] = {}
            for i in stream:
                per_group.setdefault(self.groups[i], []).append(i)
            batches = [b for g in sorted(per_group) for b in fill_batches(per_group[g], self.keys, self.batch_size)]
            batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
        else:
            batches = fill_batches(stream, self.keys, self.batch_size)
        if self.drop_last and any(len(b) == self.batch_size for b in batches):
            batches = [b for b in batches if len(b) == self.batch_size]
        self._plan = (self.epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.plan()

    def __len__(self) -> int:
        return len(self.plan())
