"""``kind: prompt_tuning`` recipes: LAMP on lumir-mini over Flickr8k (lumir's adaptation), cached and resumable.

A recipe (``recipes/prompt_tuning/*.yaml``) names the model spec
(:class:`~lumir.models.action_model.ActionAwareModel`), the data (a Flickr8k train split, the knowledge jsonl
files, a holdout of photos at the split's end) and the training settings
(:class:`~lumir.train.prompt_tuning.PromptTuningConfig`). Only captions with a knowledge record train
(``lumir augment knowledge`` writes them; training never calls an LLM); ``data.knowledge: rules`` uses the
rule-based triplets instead (Table 2's LLM-free ablation).

Inputs are cached under ``features.cache_dir``: the backbone inputs of each photo (``tokens`` in float16 and
lumir-mini's ``base`` embedding), in shards written atomically, so an interrupted caching job resumes. The first
stage's scores are ``z^txt @ base.T`` (exactly lumir-mini's retrieval scores), and :func:`rescored_recall`
re-scores its top-k (§3.5) for the holdout report after every epoch and for the benchmark.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lumir.config import atomic_path, atomic_write_text, versions
from lumir.data.flickr8k import load_flickr8k
from lumir.data.knowledge import KnowledgeStore
from lumir.eval.tasks import default_data_root
from lumir.models.action_model import ActionAwareModel, Knowledge
from lumir.train.prompt_tuning import PromptTuningConfig, PromptTuningData, PromptTuningTrainer
from lumir.types import Item

__all__ = ["cache_image_inputs", "cache_name", "rescored_recall", "run_prompt_tuning_recipe", "select_captions"]


def cache_image_inputs(
    model: ActionAwareModel, images: Sequence[Item], folder: str | Path, *, shard: int = 250, progress: bool = True
) -> dict[str, torch.Tensor]:
    """Backbone inputs of every photo, cached in shards under ``folder`` (resumable): float16 patch tokens (mini:
    49 x 512, 50 KB a photo) or preprocessed pixels (CLIP: 3 x 224 x 224, 0.3 MB a photo: Flickr30K's 29k photos
    take 8.7 GB; a COCO-sized set needs on-the-fly loading, which is not built)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [it.id for it in images]
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
    parts: list[dict[str, torch.Tensor]] = []
    bar = tqdm(total=len(images), desc="image inputs", unit="photo", disable=not progress)
    for start in range(0, len(images), shard):
        path = folder / f"inputs-{digest}-{start:06d}.pt"
        if path.is_file():
            part = torch.load(path, weights_only=True)
        else:
            chunk = images[start : start + shard]
            out: dict[str, list[torch.Tensor]] = {}
            for b in range(0, len(chunk), 16):
                photos = [it.image.load() for it in chunk[b : b + 16] if it.image is not None]
                for k, v in model.images(photos).items():
                    out.setdefault(k, []).append(v if k == "base" else v.half())
            part = {k: torch.cat(v) for k, v in out.items()}
            with atomic_path(path) as tmp:
                torch.save(part, tmp)
        parts.append(part)
        bar.update(min(shard, len(images) - start))
    bar.close()
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def select_captions(
    captions: Sequence[Item], store: KnowledgeStore | None, *, per_image: int | None = None
) -> tuple[list[Item], list[Knowledge]]:
    """Captions that have knowledge (all captions with rule-based triplets when ``store`` is None), at most
    ``per_image`` per photo, with their ``(triplets, states)``."""
    kept: list[Item] = []
    knowledge: list[Knowledge] = []
    count: dict[str, int] = {}
    for c in captions:
        image = str(c.meta["image"])
        if per_image is not None and count.get(image, 0) >= per_image:
            continue
        if store is None:
            from lumir.augment.knowledge import rule_triplets

            k: Knowledge = (list(rule_triplets(c.text or "")), [])
        else:
            record = store.record(id=c.id, text=c.text)
            if record is None:
                continue
            k = store.knowledge(record)
        kept.append(c)
        knowledge.append(k)
        count[image] = count.get(image, 0) + 1
    return kept, knowledge


def cache_name(model: ActionAwareModel, split: str) -> str:
    """Cache folder of a split's backbone inputs: the inputs depend on the frozen towers (and lumir-mini's ``base``
    on its heads), so the backbone spec is part of the name."""
    backbone = {k: v for k, v in model.spec_data["backbone"].items() if k in ("kind", "heads", "path")}
    digest = hashlib.sha256(json.dumps(backbone, sort_keys=True).encode()).hexdigest()[:8]
    return f"{split}-{backbone.get('kind')}-{digest}"


@torch.no_grad()
def rescored_recall(
    model: ActionAwareModel,
    images: Mapping[str, torch.Tensor],
    knowledge: Any,
    texts: torch.Tensor,
    image_of: torch.Tensor,
    *,
    k: int = 20,
    directions: Sequence[str] = ("t2i", "i2t"),
    ks: Sequence[int] = (1, 5, 10),
    first_stage_only: bool = False,
    chunk: int = 320,
) -> dict[str, float]:
    """R@K (percent) of the first stage and after action-aware re-scoring of its top-``k`` (§3.5), both directions.

    Text→image: every caption is a query over all photos. Image→text: every photo is a query over the given
    captions (a hit if any of its captions is ranked within K). The first stage is ``texts @ images["base"].T``
    (lumir-mini); candidates below ``k`` keep their first-stage order.
    """
    device = model.prompter.visual_prompts.device
    images = {n: v.to(device) for n, v in images.items()}
    texts, image_of = texts.to(device), image_of.to(device)
    knowledge = knowledge.to(device) if knowledge is not None else None
    first = texts @ images["base"].float().T  # (captions, photos)
    out: dict[str, float] = {}
    for direction in directions:
        scores = first if direction == "t2i" else first.T
        top = scores.topk(min(k, scores.shape[1]), dim=1).indices
        final = top.clone()
        if not first_stage_only:
            n_q, depth = top.shape
            queries = torch.arange(n_q, device=device).repeat_interleave(depth)
            cands = top.flatten()
            text_rows, image_rows = (queries, cands) if direction == "t2i" else (cands, queries)
            new = torch.empty(n_q * depth, device=device)
            for s in range(0, n_q * depth, chunk):
                t, i = text_rows[s : s + chunk], image_rows[s : s + chunk]
                kb = knowledge.index(t) if knowledge is not None else None
                z = model.encode({n: v[i].float() for n, v in images.items()}, kb)
                new[s : s + len(t)] = (z * texts[t]).sum(-1)
            order = new.view(n_q, depth).argsort(dim=1, descending=True)
            final = top.gather(1, order)
        for kk in ks:
            if direction == "t2i":
                hit = (final[:, :kk] == image_of[:, None]).any(dim=1)
            else:
                hit = (image_of[final[:, :kk]] == torch.arange(scores.shape[0], device=device)[:, None]).any(dim=1)
            out[f"{direction}_R@{kk}"] = round(100.0 * hit.float().mean().item(), 2)
    return out


def _data_for(
    model: ActionAwareModel, images: list[Item], captions: list[Item], knowledge: list[Knowledge],
    inputs: dict[str, torch.Tensor], positions: dict[str, int],
) -> PromptTuningData:  # fmt: skip
    local = sorted({positions[str(c.meta["image"])] for c in captions})
    remap = {p: i for i, p in enumerate(local)}
    image_of = torch.tensor([remap[positions[str(c.meta["image"])]] for c in captions])
    texts = torch.cat([model.caption_embeddings([c.text or "" for c in captions[s : s + 256]])
                       for s in range(0, len(captions), 256)])  # fmt: skip
    return PromptTuningData(
        images={k: v[local] for k, v in inputs.items()},
        knowledge=model.knowledge(knowledge),
        texts=texts,
        image_of=image_of,
        meta={"photos": len(local), "captions": len(captions)},
    )


def run_prompt_tuning_recipe(
    recipe: Mapping[str, Any],
    *,
    data: str | Path | None = None,
    output_dir: str | Path | None = None,
    show_progress: bool = True,
    **_: Any,
) -> dict[str, Any]:
    """Run a ``kind: prompt_tuning`` recipe; the model lands in ``<output_dir>/model``. Returns the summary that is
    also written to ``<output_dir>/result.json``.

    Raises:
        ValueError: a test split, a bad holdout or unknown options. FileNotFoundError: data or knowledge missing.
    """
    unknown = set(recipe) - {"kind", "model", "data", "features", "train", "output_dir", "eval", "profiles", "source"}
    if unknown:
        raise ValueError(f"unknown prompt_tuning recipe keys: {sorted(unknown)}")
    data_cfg = dict(recipe.get("data") or {})
    dataset = data_cfg.get("dataset", "flickr8k")
    split = str(data_cfg.get("split", "train_4k")) if dataset == "flickr8k" else Path(data_cfg["annotations"]).stem
    if "test" in split:
        raise ValueError(f"refusing to train on the test split {split!r}")
    out = Path(output_dir or recipe.get("output_dir", "runs/lamp/mini"))
    config = PromptTuningConfig(**dict(recipe.get("train") or {}))
    model_spec = dict(recipe.get("model") or {})
    device = str(model_spec.pop("device", "cpu"))
    model = ActionAwareModel.build(model_spec, seed=config.seed, device=device)

    if dataset == "flickr8k":
        root = Path(data_cfg["root"]) if data_cfg.get("root") else default_data_root(data) / "flickr8k"
        images, captions = load_flickr8k(root, split)
    elif dataset == "karpathy":  # Flickr30K / COCO train files in the ALBEF/BLIP format, with an image folder
        from lumir.data.karpathy import load_karpathy

        images, captions = load_karpathy(data_cfg["annotations"], data_cfg["images"])
    else:
        raise ValueError(f"data.dataset must be 'flickr8k' or 'karpathy', got {dataset!r}")
    if data_cfg.get("photo_range"):  # e.g. the photos a first-stage model never saw: [2100, 4000]
        start, stop = (int(x) for x in data_cfg["photo_range"])
        keep = {it.id for it in images[start:stop]}
        if not keep:
            raise ValueError(f"data.photo_range {data_cfg['photo_range']} selects no photo of {len(images)}")
        images = images[start:stop]
        captions = [c for c in captions if c.meta["image"] in keep]
    holdout = int(data_cfg.get("holdout", 0))
    if not 0 <= holdout < len(images):
        raise ValueError(f"data.holdout must be in [0, {len(images)}), got {holdout}")
    source = data_cfg.get("knowledge")
    store = None if source == "rules" else KnowledgeStore(source or [])
    if store is not None and not len(store):
        raise ValueError("data.knowledge names no knowledge records (give jsonl files, or 'rules')")
    per_image = data_cfg.get("captions_per_image")
    chosen, knowledge = select_captions(captions, store, per_image=per_image)
    if not chosen:
        raise ValueError(f"no caption of split {split!r} has a knowledge record in {source}")
    cache = Path((recipe.get("features") or {}).get("cache_dir", "runs/lamp/cache")) / cache_name(model, split)
    inputs = cache_image_inputs(model, images, cache, progress=show_progress)
    positions = {it.id: i for i, it in enumerate(images)}
    held = {it.id for it in images[len(images) - holdout :]} if holdout else set()
    train_idx = [i for i, c in enumerate(chosen) if c.meta["image"] not in held]
    val_idx = [i for i, c in enumerate(chosen) if c.meta["image"] in held]
    train = _data_for(model, images, [chosen[i] for i in train_idx], [knowledge[i] for i in train_idx], inputs,
                      positions)  # fmt: skip
    on_epoch = None
    val_first: dict[str, float] = {}
    if val_idx:
        val = _data_for(model, images, [chosen[i] for i in val_idx], [knowledge[i] for i in val_idx], inputs,
                        positions)  # fmt: skip
        k = int((recipe.get("eval") or {}).get("k", 20))
        kb = val.knowledge if model.config.uses_knowledge else None
        val_first = rescored_recall(model, val.images, kb, val.texts, val.image_of, k=k, first_stage_only=True)

        def on_epoch(m: ActionAwareModel, stage: str, epoch: int) -> dict[str, float]:
            r = rescored_recall(m, val.images, kb, val.texts, val.image_of, k=k)
            return {"val_" + key: v for key, v in r.items()}

    t0 = time.perf_counter()
    summary = PromptTuningTrainer(model, train, config, out, on_epoch=on_epoch, progress=show_progress).train()
    model.meta = {"recipe": dict(recipe), "train_photos": train.meta["photos"], "train_captions": len(train_idx),
                  "holdout_photos": holdout, "split": split}  # fmt: skip
    model.save(out / "model")
    result = {
        "model": str(out / "model"),
        "train_photos": train.meta["photos"],
        "train_captions": len(train_idx),
        "holdout_captions": len(val_idx),
        "holdout_first_stage": {"val_" + k: v for k, v in val_first.items()},
        "epochs": summary.epochs,
        "seconds": round(time.perf_counter() - t0, 1),
        "steps": summary.steps,
        "recipe": dict(recipe),
        "versions": versions(),
    }
    atomic_write_text(out / "result.json", json.dumps(result, indent=2) + "\n")
    return result
