"""lumir-mini on a union pool: instructed text→image and image→text training over one pool of photos and captions.

MM-Embed §4.1 in miniature (Lin et al. 2024, https://arxiv.org/abs/2411.02571). The mini recipe normally trains
captions → photos only; with ``data.union: true`` (:func:`lumir.train.mini.train_mini`) the training split becomes
the union task of :func:`lumir.data.flickr8k.union_image_text_tasks`:

- **text→image** queries: every caption with the t2i instruction prepended exactly as
  :class:`~lumir.embed.mini.MiniEmbedder` applies it (:func:`lumir.embed.instructions.apply_instruction`), through
  the text head; positive: its photo;
- **image→text** queries: every photo with the i2t instruction, i.e. an image+text query (normalised image-head
  embedding + normalised text-head embedding of the instruction), once per caption of the photo; positive: that
  caption;
- **candidates**: the photos (image head) and the plain captions (text head) in one index space — photos first,
  then captions (``ContrastiveData.candidate_texts``).

Batches never hold two queries about the same photo (``groups``), so in-batch negatives are random negatives
(MM-Embed's ``M^rand``). ``data.hard_negatives`` names a jsonl of mined negatives (:mod:`lumir.train.mining`; query
ids are caption ids for t2i and photo ids for i2t, as in the union tasks); each query then carries them
(``M^hard``). :func:`union_recall` scores a (holdout) union pool from cached features: R@1/5/10 and M.A.@1 both ways,
each query's own item excluded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lumir.data.flickr8k import UNION_INSTRUCTIONS
from lumir.embed.instructions import apply_instruction
from lumir.models.mini import MiniHeads
from lumir.train.contrastive import ContrastiveData
from lumir.train.features import cache_text_features
from lumir.types import Item

__all__ = ["UnionFeatures", "build_union_data", "instructed_features", "union_embeddings", "union_recall"]


def instructed_features(
    captions: Sequence[Item], cache_dir: Path, name: str, instructions: Mapping[str, str] = UNION_INSTRUCTIONS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached MiniLM features of the t2i-instructed captions ``(n, d)`` and of the i2t instruction alone ``(1, d)``
    (an image query's text part), each text exactly as :class:`~lumir.embed.mini.MiniEmbedder` would see it."""
    texts = [apply_instruction(c.text, instructions["t2i"]) for c in captions]
    digest = hashlib.sha256("\n".join([instructions["t2i"], instructions["i2t"]]).encode()).hexdigest()[:10]
    t2i = cache_text_features(
        [Item(c.id, text=t) for c, t in zip(captions, texts, strict=True)], cache_dir / f"{name}-inst-{digest}"
    )
    i2t = cache_text_features(
        [Item("i2t", text=apply_instruction(None, instructions["i2t"]))], cache_dir / f"instruction-i2t-{digest}"
    )
    return torch.from_numpy(np.array(t2i.features[:, 0])), torch.from_numpy(np.array(i2t.features[:, 0]))


@dataclass
class UnionFeatures:
    """Cached features of one union pool (photos, captions) and its instructed queries.

    Attributes:
        images: ``(n_photos, views, d_i)`` photo features.
        captions: ``(n_captions, d_t)`` plain caption features (candidates).
        instructed: ``(n_captions, d_t)`` t2i-instructed caption features (queries).
        instruction: ``(1, d_t)`` features of the i2t instruction (the text part of photo queries).
        photo_of: ``(n_captions,)`` photo index of each caption.
        photo_ids, caption_ids: item ids (for mined negatives).
    """

    images: torch.Tensor
    captions: torch.Tensor
    instructed: torch.Tensor
    instruction: torch.Tensor
    photo_of: torch.Tensor
    photo_ids: list[str]
    caption_ids: list[str]

    def subset(self, n_photos: int, *, first: bool = True) -> UnionFeatures:
        """The first (or, ``first=False``, all but the first) ``n_photos`` photos with their captions."""
        keep = self.photo_of < n_photos if first else self.photo_of >= n_photos
        photos = slice(0, n_photos) if first else slice(n_photos, None)
        offset = 0 if first else n_photos
        rows = keep.nonzero().squeeze(1).tolist()
        return UnionFeatures(
            self.images[photos],
            self.captions[keep],
            self.instructed[keep],
            self.instruction,
            self.photo_of[keep] - offset,
            self.photo_ids[photos],
            [self.caption_ids[i] for i in rows],
        )


def _hard_negative_matrix(
    records: Sequence[Mapping[str, Any]], feats: UnionFeatures, query_ids: Sequence[str], n_photos: int, seed: int
) -> torch.Tensor:
    """``(n_queries, n)`` candidate indices of each query's mined negatives; a query with fewer repeats its own, one
    with none gets random candidates of the wanted modality that are not its positives (seeded)."""
    index = {pid: i for i, pid in enumerate(feats.photo_ids)}
    index.update({cid: n_photos + j for j, cid in enumerate(feats.caption_ids)})
    by_query = {str(r["query_id"]): [index[str(n["id"])] for n in r["negatives"] if str(n["id"]) in index]
                for r in records}  # fmt: skip
    width = max((len(v) for v in by_query.values()), default=0)
    if width == 0:
        raise ValueError("the mined negatives name none of the training candidates (another split or pool?)")
    g = torch.Generator().manual_seed(seed)
    n_captions = len(feats.caption_ids)
    rows = []
    for qid in query_ids:
        own = by_query.get(qid, [])
        if not own:
            if qid in index and index[qid] >= n_photos:  # a caption asking for a photo: a random other photo
                photo = int(feats.photo_of[index[qid] - n_photos])
                own = [int((photo + 1 + torch.randint(n_photos - 1, (1,), generator=g)) % n_photos)]
            else:  # a photo asking for a caption: a random caption of another photo
                j = int(torch.randint(n_captions, (1,), generator=g))
                while qid in index and int(feats.photo_of[j]) == index[qid]:
                    j = int(torch.randint(n_captions, (1,), generator=g))
                own = [n_photos + j]
        rows.append([own[i % len(own)] for i in range(width)])
    return torch.tensor(rows, dtype=torch.long)


def build_union_data(feats: UnionFeatures, records: Sequence[Mapping[str, Any]] | None = None, *, seed: int = 0
                     ) -> ContrastiveData:  # fmt: skip
    """The union training data (see the module docstring), with mined negatives from ``records`` if given."""
    n_photos, n_captions = feats.images.shape[0], feats.captions.shape[0]
    captions = torch.arange(n_captions)
    photo = feats.photo_of
    # t2i rows (one per caption), then i2t rows (one per caption: its photo asks for it)
    queries = torch.cat([feats.instructed, feats.instruction.expand(n_captions, -1)])
    positives = torch.cat([photo, n_photos + captions])
    query_image = torch.cat([torch.full((n_captions,), -1), photo])
    groups = torch.cat([photo, photo])
    query_labels = torch.cat([photo, n_photos + photo])  # t2i: its photo; i2t: any caption of its photo
    candidate_labels = torch.cat([torch.arange(n_photos), n_photos + photo])
    hard = None
    if records is not None:
        query_ids = list(feats.caption_ids) + [feats.photo_ids[int(p)] for p in photo]
        hard = _hard_negative_matrix(records, feats, query_ids, n_photos, seed)
    return ContrastiveData(
        queries,
        feats.images,
        positives,
        hard_negatives=hard,
        candidate_texts=feats.captions,
        query_image=query_image,
        groups=groups,
        relevance=(query_labels, candidate_labels),
    )


def union_embeddings(
    heads: MiniHeads, feats: UnionFeatures, mirror_view: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised ``(pool, t2i queries, i2t queries)`` embeddings, computed as :class:`MiniEmbedder` does; the pool
    is photos then captions."""
    with torch.no_grad():
        img = F.normalize(heads.image_head(feats.images[:, 0]), dim=-1)
        if heads.mirror and mirror_view is not None:
            img = F.normalize(img + F.normalize(heads.image_head(feats.images[:, mirror_view]), dim=-1), dim=-1)
        cap = F.normalize(heads.text_head(feats.captions), dim=-1)
        t2i = F.normalize(heads.text_head(feats.instructed), dim=-1)
        inst = F.normalize(heads.text_head(feats.instruction), dim=-1)
        i2t = F.normalize(img + inst, dim=-1)
    return torch.cat([img, cap]), t2i, i2t


def union_recall(
    heads: MiniHeads, feats: UnionFeatures, mirror_view: int | None, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Union-pool R@K (percent; i2t: any caption of the photo) and M.A.@1 both ways, own items excluded.

    Ties are broken in the positive's favour (as :func:`lumir.train.mini.image_text_recall`).
    """
    pool, t2i, i2t = union_embeddings(heads, feats, mirror_view)
    n_photos, n_captions = feats.images.shape[0], feats.captions.shape[0]
    out: dict[str, float] = {}
    rows = torch.arange(n_captions)
    sim = t2i @ pool.T  # (captions, pool)
    sim[rows, n_photos + rows] = float("-inf")  # the query's own caption
    rank = (sim > sim[rows, feats.photo_of][:, None]).sum(dim=1)
    top_is_image = sim.argmax(dim=1) < n_photos
    for k in ks:
        out[f"t2i_R@{k}"] = round(float((rank < k).float().mean()) * 100, 2)
    out["t2i_M.A.@1"] = round(float(top_is_image.float().mean()) * 100, 2)
    sim = i2t @ pool.T  # (photos, pool)
    photos = torch.arange(n_photos)
    sim[photos, photos] = float("-inf")  # the query photo itself
    caption_scores = sim[:, n_photos:]
    own = feats.photo_of[None, :] == photos[:, None]
    best = caption_scores.masked_fill(~own, float("-inf")).max(dim=1).values
    rank = (sim > best[:, None]).sum(dim=1)
    for k in ks:
        out[f"i2t_R@{k}"] = round(float((rank < k).float().mean()) * 100, 2)
    out["i2t_M.A.@1"] = round(float((sim.argmax(dim=1) >= n_photos).float().mean()) * 100, 2)
    return out
