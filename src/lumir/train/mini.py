"""The lumir-mini recipe: cache frozen-tower features of a captioned photo set, train the heads, save the model.

Recipe blocks (see ``recipes/mini/flickr8k.yaml``)::

    kind: mini
    data:     {dataset: flickr8k, root: null, split: train_4k, holdout: 0,
               augmented: [runs/aug/paraphrase.jsonl], require_complete: true, scale_epochs: true,
               rewrites: {path: runs/rewriter/train_rewrites.jsonl, p: 0.6}}
    features: {cache_dir: runs/mini/features, views: [original, mirror, zoom, zoom_mirror]}
    model:    {dim: 256, mirror: true,
               image_head: {kind: linear, parts: [head, stage4, stage5, stage6], input_dropout: 0.7},
               text_head:  {kind: linear, input_dropout: 0.2}}
    train:    {...}              # lumir.train.contrastive.ContrastiveConfig
    output_dir: runs/mini/flickr8k

Queries are captions, candidates are photos; each training step sees one random cached view of each photo
(:data:`lumir.models.mini.IMAGE_VIEWS`; inference averages the original and mirror views). ``holdout`` keeps the
last N photos of the split out of training and reports validation recall on them after every epoch; it is how the
recipe's settings were chosen without looking at the test split, which a recipe may not train on.

``augmented`` adds extra captions of the training photos from :mod:`lumir.augment.caption` jsonl files (MLLM
captions or LLM paraphrases, one record per (caption or photo, model)): each usable record becomes one more
training pair with its photo (MLLM-augmented captions §3.4), and with ``scale_epochs`` the epoch count is scaled
by 1/k, k = all pairs / raw pairs, so training costs what the raw baseline costs (:func:`scaled_epochs`).
Validation on the holdout always uses raw captions only.

``rewrites`` is MGQRe §3.5: the captions' rewrites, made once by a frozen rewriter (``lumir rewrite``) and cached as
features; every step each caption is replaced by its rewrite with probability ``p`` (paper: 0.6).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from lumir.augment.caption import augmented_captions, scaled_epochs
from lumir.config import atomic_write_text
from lumir.data.flickr8k import load_flickr8k
from lumir.errors import DataFormatError
from lumir.eval.tasks import default_data_root
from lumir.models.heads import ProjectionHead
from lumir.models.mini import IMAGE_FEATURE_DIM, TEXT_FEATURE_DIM, MiniHeads, feature_spans
from lumir.train.contrastive import ContrastiveConfig, ContrastiveData, ContrastiveTrainer, TrainSummary
from lumir.train.features import cache_image_features, cache_text_features
from lumir.train.mini_union import UnionFeatures, build_union_data, instructed_features, union_recall
from lumir.types import Item

__all__ = [
    "MiniTrainResult",
    "build_mini_heads",
    "embed_cached_features",
    "image_text_recall",
    "load_augmented_captions",
    "train_mini",
]


@dataclass
class MiniTrainResult:
    """Where the trained model went, and how training went."""

    model_dir: Path
    summary: TrainSummary
    validation: dict[str, float]


def _head(in_dim: int, dim: int, cfg: Mapping[str, Any], *, image: bool) -> ProjectionHead:
    cfg = dict(cfg)
    parts = cfg.pop("parts", None)
    select = feature_spans(parts, text=not image) if parts else None
    known = {"kind", "hidden", "input_dropout", "dropout"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"unknown head option(s) {unknown}; accepted: {sorted(known | {'parts'})}")
    return ProjectionHead(in_dim, dim, select=select, **cfg)


def build_mini_heads(model_cfg: Mapping[str, Any]) -> MiniHeads:
    """Untrained :class:`MiniHeads` from a recipe's ``model`` block."""
    dim = int(model_cfg.get("dim", 256))
    return MiniHeads(
        _head(IMAGE_FEATURE_DIM, dim, model_cfg.get("image_head", {}), image=True),
        _head(TEXT_FEATURE_DIM, dim, model_cfg.get("text_head", {}), image=False),
        mirror=bool(model_cfg.get("mirror", True)),
    )


def image_text_recall(
    image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@K in percent both ways and Rsum, the standard Flickr/COCO protocol, from normalised embeddings.

    Text→image: a hit when the caption's own image ranks in the top K. Image→text: a hit when any of the image's
    captions ranks in the top K, i.e. when its best-scoring caption does. Ties are broken in the positive's favour.

    Example:
        >>> img = torch.eye(2)
        >>> txt = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
        >>> image_text_recall(img, txt, torch.tensor([0, 1, 0, 1]), ks=(1,))
        {'t2i_R@1': 50.0, 'i2t_R@1': 100.0, 'rsum': 150.0}
    """
    sim = text_emb @ image_emb.T  # (n_text, n_image)
    positive = sim[torch.arange(sim.shape[0]), text_to_image]  # each caption's score with its own image
    t2i_rank = (sim > positive[:, None]).sum(dim=1)
    best = torch.full((image_emb.shape[0],), float("-inf"), dtype=sim.dtype)
    best.scatter_reduce_(0, text_to_image, positive, reduce="amax")  # each image's best own-caption score
    i2t_rank = (sim > best[None, :]).sum(dim=0)
    out: dict[str, float] = {}
    for k in ks:
        out[f"t2i_R@{k}"] = round(float((t2i_rank < k).float().mean()) * 100, 2)
    for k in ks:
        out[f"i2t_R@{k}"] = round(float((i2t_rank < k).float().mean()) * 100, 2)
    out["rsum"] = round(sum(out.values()), 2)
    return out


def embed_cached_features(
    heads: MiniHeads, images: torch.Tensor, texts: torch.Tensor, mirror_view: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised embeddings of cached ``(n, views, d)`` image and ``(n, d)`` text features, computed exactly as
    :class:`lumir.embed.mini.MiniEmbedder` embeds photos and captions."""
    with torch.no_grad():
        img = F.normalize(heads.image_head(images[:, 0]), dim=-1)
        if heads.mirror and mirror_view is not None:
            img = F.normalize(img + F.normalize(heads.image_head(images[:, mirror_view]), dim=-1), dim=-1)
        return img, F.normalize(heads.text_head(texts), dim=-1)


def load_augmented_captions(
    files: str | Path | Sequence[str | Path], raw: Sequence[Item], *, require_complete: bool = True
) -> tuple[list[Item], dict[str, Any]]:
    """The extra caption items that augmentation jsonl ``files`` add to ``raw``, and a summary of what was used.

    Records come from :mod:`lumir.augment.caption`; one is usable when it has text, is complete (if
    ``require_complete``) and its source is a raw caption (``llm-paraphrase``) or a photo (``mllm-caption``) of
    ``raw``. Each extra item keeps the photo it describes in ``meta["image"]``.

    Raises:
        FileNotFoundError: a file is missing.
        DataFormatError: a line is not a JSON record with ``source_id``, ``model`` and ``kind`` (naming file and line).
        ValueError: no record of the files matches the training captions or photos.
    """
    paths = [Path(files)] if isinstance(files, (str, Path)) else [Path(f) for f in files]
    by_photo: dict[str, Item] = {}
    for c in raw:
        by_photo.setdefault(str(c.meta["image"]), c)
    records: list[dict[str, Any]] = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"augmented captions file not found: {path} (data.augmented)")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                kind, source_id = rec["kind"], str(rec["source_id"])
                rec["model"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DataFormatError(f"not an augmented-caption record ({err})", path=path, line=n) from err
            if kind == "mllm-caption" and source_id in by_photo:  # a photo's caption: pair it via that photo
                rec = {**rec, "source_id": by_photo[source_id].id}
            records.append(rec)
    seen: set[str] = set()
    items = []
    for it in augmented_captions(raw, records, require_complete=require_complete)[len(raw) :]:
        if it.id not in seen:  # the same (caption, model) record in two files counts once
            seen.add(it.id)
            items.append(it)
    by_model: dict[str, int] = {}
    for it in items:
        by_model[str(it.meta["model"])] = by_model.get(str(it.meta["model"]), 0) + 1
    if records and not items:
        raise ValueError(
            f"none of the {len(records)} records in {[str(p) for p in paths]} is a usable caption of this split "
            f"(require_complete={require_complete})"
        )
    summary = {
        "files": [str(p) for p in paths],
        "records": len(records),
        "used": len(items),
        "by_model": by_model,
        "kinds": sorted({str(it.meta["kind"]) for it in items}),
        "require_complete": require_complete,
    }
    return items, summary


_KEYS = {
    "recipe": {"kind", "data", "features", "model", "train", "output_dir", "source", "name", "description"},
    "data": {
        "dataset",
        "root",
        "split",
        "holdout",
        "augmented",
        "require_complete",
        "scale_epochs",
        "rewrites",
        "union",
        "hard_negatives",
    },
    "features": {"cache_dir", "views", "mirror"},
}


def load_rewrite_features(
    rewrites: Mapping[str, Any], captions: Sequence[Item], cache_dir: Path
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Features of cached caption rewrites (MGQRe §3.5): ``(features (n, d), has_rewrite (n,), summary)``.

    ``rewrites.path`` is a ``lumir rewrite`` output (jsonl ``{"id", "text", "original", ...}``) made once by the
    frozen rewriter; a caption has a rewrite when its id is there with a text that differs from the caption.

    Raises:
        DataFormatError: a line is not a rewrite record (naming the file and line).
    """
    from lumir.io.jsonl import iter_jsonl

    path = Path(rewrites["path"])
    by_id: dict[str, str] = {}
    for lineno, row in iter_jsonl(path):
        if not isinstance(row.get("id"), str) or not isinstance(row.get("text"), str):
            raise DataFormatError("a rewrite record needs string 'id' and 'text'", path=path, line=lineno)
        by_id[row["id"]] = row["text"]
    have = [c for c in captions if by_id.get(c.id, "").strip() and by_id[c.id] != c.text]
    features = torch.zeros(len(captions), TEXT_FEATURE_DIM)
    has = torch.zeros(len(captions), dtype=torch.bool)
    if have:
        items = [Item(c.id, text=by_id[c.id]) for c in have]
        digest = hashlib.sha256("\n".join(f"{it.id}\t{it.text}" for it in items).encode()).hexdigest()[:12]
        cache = cache_text_features(items, cache_dir / f"rewrites-{digest}")
        row = {c.id: i for i, c in enumerate(captions)}
        idx = torch.tensor([row[c.id] for c in have])
        features[idx] = torch.from_numpy(np.array(cache.features[:, 0]))
        has[idx] = True
    summary = {"path": str(path), "records": len(by_id), "captions_with_rewrite": int(has.sum())}
    return features, has, summary


def _union_setup(
    data_cfg: Mapping[str, Any],
    images: Sequence[Item],
    captions: Sequence[Item],
    img_feats: torch.Tensor,
    txt_feats: torch.Tensor,
    positives: torch.Tensor,
    cache_dir: Path,
    split: str,
    seed: int,
) -> tuple[UnionFeatures, list[dict[str, Any]] | None] | None:
    """``data.union``: the union-pool features (:mod:`lumir.train.mini_union`) and ``data.hard_negatives``'
    mined records; None for the plain caption → photo recipe.

    Raises:
        ValueError: union combined with rewrites or augmented captions, or hard negatives without union.
    """
    if not data_cfg.get("union"):
        if data_cfg.get("hard_negatives"):
            raise ValueError("data.hard_negatives needs data.union: true (mined on the union pool)")
        return None
    if data_cfg.get("rewrites") or data_cfg.get("augmented"):
        raise ValueError("data.union does not combine with data.rewrites or data.augmented")
    instructed, instruction = instructed_features(captions, cache_dir, f"flickr8k-{split}-captions")
    feats = UnionFeatures(img_feats, txt_feats, instructed, instruction, positives, [it.id for it in images],
                          [c.id for c in captions])  # fmt: skip
    records = None
    if data_cfg.get("hard_negatives"):
        from lumir.train.mining import read_mined

        path = Path(data_cfg["hard_negatives"])
        if not path.is_file():
            raise FileNotFoundError(f"mined negatives not found: {path} (data.hard_negatives; see `lumir mine`)")
        records = read_mined(path)[1]
    return feats, records


def _check_keys(recipe: Mapping[str, Any], data_cfg: Mapping[str, Any], feat_cfg: Mapping[str, Any]) -> None:
    """Unknown recipe keys are an error naming the block (a typo must not silently fall back to a default)."""
    for block, values in (("recipe", recipe), ("data", data_cfg), ("features", feat_cfg)):
        unknown = sorted(set(values) - _KEYS[block])
        if unknown:
            where = "top-level" if block == "recipe" else f"'{block}'"
            raise ValueError(f"unknown {where} recipe key(s) {unknown}; accepted: {sorted(_KEYS[block])}")


def train_mini(
    recipe: Mapping[str, Any],
    *,
    data: str | Path | None = None,
    output_dir: str | Path | None = None,
    resume: bool = True,
    show_progress: bool = True,
) -> MiniTrainResult:
    """Run a ``kind: mini`` recipe (see the module docstring); the model lands in ``<output_dir>/model``.

    Raises:
        ValueError: the recipe asks to train on a test split, or has unknown options.
        FileNotFoundError: the data folder is missing (the message says what to pass).
    """
    data_cfg = dict(recipe.get("data", {}))
    if data_cfg.get("dataset", "flickr8k") != "flickr8k":
        raise ValueError(f"the mini recipe trains on dataset 'flickr8k' only, got {data_cfg.get('dataset')!r}")
    split = str(data_cfg.get("split", "train_4k"))
    if split.startswith("test"):
        raise ValueError(f"refusing to train on the test split {split!r}; evaluate on it with `lumir eval` instead")
    root = Path(data_cfg["root"]) if data_cfg.get("root") else default_data_root(data) / "flickr8k"
    holdout = int(data_cfg.get("holdout", 0))
    feat_cfg = dict(recipe.get("features", {}))
    cache_dir = Path(feat_cfg.get("cache_dir", "runs/mini/features"))
    out = Path(output_dir or recipe.get("output_dir", "runs/mini/flickr8k"))
    config = ContrastiveConfig.from_dict(recipe.get("train", {}))
    _check_keys(recipe, data_cfg, feat_cfg)
    with torch.random.fork_rng():  # fail on bad head options now, not after minutes of feature extraction
        build_mini_heads(recipe.get("model", {}))

    images, captions = load_flickr8k(root, split)
    if not 0 <= holdout < len(images) // 2:
        raise ValueError(f"data.holdout must be in [0, {len(images) // 2}), got {holdout}")
    views = list(feat_cfg.get("views") or (["original", "mirror"] if feat_cfg.get("mirror", True) else ["original"]))
    image_cache = cache_image_features(images, cache_dir / f"flickr8k-{split}-images-{'+'.join(views)}", views=views)
    text_cache = cache_text_features(captions, cache_dir / f"flickr8k-{split}-captions")
    position = {name: i for i, name in enumerate(image_cache.ids)}
    positives = torch.tensor([position[c.meta["image"]] for c in captions])
    img_feats = torch.from_numpy(np.array(image_cache.features))
    txt_feats = torch.from_numpy(np.array(text_cache.features[:, 0]))

    n_train = len(images) - holdout
    in_train = positives < n_train
    union = _union_setup(data_cfg, images, captions, img_feats, txt_feats, positives, cache_dir, split, config.seed)
    train_txt, train_pos = txt_feats[in_train], positives[in_train]
    rewritten = has_rewrite = None
    rewriting: dict[str, Any] = {}
    if data_cfg.get("rewrites"):
        all_rw, all_has, rewriting = load_rewrite_features(data_cfg["rewrites"], captions, cache_dir)
        rewritten, has_rewrite = all_rw[in_train], all_has[in_train]
        config = replace(config, rewrite_p=float(data_cfg["rewrites"].get("p", 0.6)))
        rewriting["p"] = config.rewrite_p
    augmentation: dict[str, Any] = {}
    if data_cfg.get("augmented"):
        extra, augmentation = load_augmented_captions(
            data_cfg["augmented"], captions, require_complete=bool(data_cfg.get("require_complete", True))
        )
        extra_pos = torch.tensor([position[c.meta["image"]] for c in extra], dtype=torch.long)
        keep = extra_pos < n_train  # extra captions of holdout photos never reach training
        extra = [c for c, k in zip(extra, keep.tolist(), strict=True) if k]
        if extra:
            digest = hashlib.sha256("\n".join(c.id for c in extra).encode()).hexdigest()[:12]
            extra_cache = cache_text_features(extra, cache_dir / f"flickr8k-{split}-augmented-{digest}")
            train_txt = torch.cat([train_txt, torch.from_numpy(np.array(extra_cache.features[:, 0]))])
            train_pos = torch.cat([train_pos, extra_pos[keep]])
        raw_pairs, total_pairs = int(in_train.sum()), int(train_pos.shape[0])
        augmentation.update(raw_pairs=raw_pairs, pairs=total_pairs, k=round(total_pairs / raw_pairs, 4))
        if data_cfg.get("scale_epochs", True):
            scaled = scaled_epochs(config.epochs, raw_pairs, total_pairs)
            augmentation.update(epochs_raw=config.epochs, epochs=scaled)
            config = replace(config, epochs=scaled)
    if rewritten is not None and has_rewrite is not None and len(train_txt) > len(rewritten):  # augmented rows
        extra_rows = len(train_txt) - len(rewritten)
        rewritten = torch.cat([rewritten, torch.zeros(extra_rows, rewritten.shape[1])])
        has_rewrite = torch.cat([has_rewrite, torch.zeros(extra_rows, dtype=torch.bool)])
    train_data = (
        ContrastiveData(train_txt, img_feats[:n_train], train_pos, rewritten=rewritten, has_rewrite=has_rewrite)
        if union is None
        else build_union_data(union[0].subset(n_train), union[1], seed=config.seed)
    )

    torch.manual_seed(config.seed)
    heads = build_mini_heads(recipe.get("model", {}))
    heads.image_head.fit_standardizer(train_data.candidates[:, 0])
    texts = train_data.queries if train_data.candidate_texts is None else train_data.candidate_texts
    heads.text_head.fit_standardizer(texts)  # union: the plain captions, not the repeated instruction rows

    callback = None
    mirror_view = views.index("mirror") if "mirror" in views else None
    if holdout and union is not None:
        val_union = union[0].subset(n_train, first=False)

        def callback(trainer: ContrastiveTrainer, epoch: int) -> dict[str, float]:
            return {f"val_{k}": v for k, v in union_recall(heads, val_union, mirror_view).items()}

    elif holdout:
        val_imgs, val_txts = img_feats[n_train:], txt_feats[~in_train]
        val_pos = positives[~in_train] - n_train

        def callback(trainer: ContrastiveTrainer, epoch: int) -> dict[str, float]:
            img, txt = embed_cached_features(
                heads, val_imgs, val_txts, views.index("mirror") if "mirror" in views else None
            )
            return {f"val_{k}": v for k, v in image_text_recall(img, txt, val_pos).items()}

    trainer = ContrastiveTrainer(heads.text_head, heads.image_head, train_data, config, out, on_epoch_end=callback)
    summary = trainer.train(resume=resume, show_progress=show_progress)
    heads.eval()
    heads.logit_scale = float(trainer.temperature.logit_scale.detach())
    heads.meta = {
        "recipe": dict(recipe),
        "data": {
            "dataset": "flickr8k",
            "split": split,
            "images": n_train,
            "captions": int(in_train.sum()),
            **({} if union is None else {"union": True, "hard_negatives": data_cfg.get("hard_negatives")}),
        },
        "augmentation": augmentation,
        "rewriting": rewriting,
        "training": {
            "steps": summary.steps,
            "epochs": summary.epochs,
            "seconds": summary.seconds,
            "final_loss": summary.final_loss,
            "temperature": summary.temperature,
        },
        "feature_extraction": {
            "image_views": image_cache.views,
            "images": image_cache.manifest["throughput"],
            "captions": text_cache.manifest["throughput"],
        },
    }
    model_dir = heads.save(out / "model")
    atomic_write_text(out / "recipe.yaml", yaml.safe_dump(dict(recipe), sort_keys=False))
    validation = summary.history[-1] if holdout and summary.history else {}
    val = {k: float(v) for k, v in validation.items() if k.startswith("val_")}
    atomic_write_text(
        out / "result.json",
        json.dumps({"model_dir": str(model_dir), "summary": asdict(summary), "validation": val}, indent=1) + "\n",
    )
    return MiniTrainResult(model_dir, summary, val)
