"""Union-pool training: mixed candidates and image+text queries in the contrastive trainer, lumir-mini union data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lumir.models.heads import ProjectionHead
from lumir.models.mini import MiniHeads
from lumir.train.contrastive import ContrastiveConfig, ContrastiveData, ContrastiveTrainer
from lumir.train.mini_union import UnionFeatures, build_union_data, union_recall

D_T, D_I = 6, 10


def _features(n_photos: int = 24, per: int = 3, seed: int = 0) -> UnionFeatures:
    """Photos and captions generated from shared latents; the instruction shifts t2i captions."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n_photos, 4, generator=g)
    to_img, to_txt = torch.randn(4, D_I, generator=g), torch.randn(4, D_T, generator=g)
    images = (latent @ to_img)[:, None, :].repeat(1, 2, 1) + 0.05 * torch.randn(n_photos, 2, D_I, generator=g)
    photo_of = torch.arange(n_photos).repeat_interleave(per)
    captions = latent[photo_of] @ to_txt + 0.3 * torch.randn(len(photo_of), D_T, generator=g)
    shift = torch.randn(D_T, generator=g)
    return UnionFeatures(
        images=images,
        captions=captions,
        instructed=captions + shift,
        instruction=shift[None, :],
        photo_of=photo_of,
        photo_ids=[f"p{i}" for i in range(n_photos)],
        caption_ids=[f"p{int(p)}#{j % per}" for j, p in enumerate(photo_of)],
    )


def _heads(dim: int = 8) -> MiniHeads:
    torch.manual_seed(0)
    return MiniHeads(ProjectionHead(D_I, dim), ProjectionHead(D_T, dim), mirror=True)


def _config(**overrides: object) -> ContrastiveConfig:
    values: dict[str, object] = {"epochs": 8, "batch_size": 16, "lr": 0.02, "warmup_steps": 2, "log_every": 1}
    values.update(overrides)
    return ContrastiveConfig.from_dict(values)


def test_union_data_layout() -> None:
    feats = _features(n_photos=4, per=2)
    data = build_union_data(feats)
    assert data.queries.shape == (16, D_T) and data.n_candidates == 4 + 8
    assert data.positives.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, *range(4, 12)]  # t2i: photo; i2t: caption
    assert data.query_image.tolist() == [-1] * 8 + [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(data.queries[8], feats.instruction[0])
    assert data.groups.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] * 2
    query_labels, candidate_labels = data.relevance
    assert candidate_labels.tolist() == [0, 1, 2, 3, 4, 4, 5, 5, 6, 6, 7, 7]
    assert query_labels[9] == candidate_labels[4] == candidate_labels[5]  # photo 0 asks for either caption


def test_encoders_match_the_inference_embeddings(tmp_path: Path) -> None:
    feats = _features(n_photos=4, per=2)
    heads = _heads()
    heads.eval()
    data = build_union_data(feats)
    trainer = ContrastiveTrainer(heads.text_head, heads.image_head, data, _config(view_sampling="first"), tmp_path)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        index = torch.tensor([5, 0, 11, 3])  # caption, photo, caption, photo: order must be kept
        got = F.normalize(trainer.encode_candidates(index, g), dim=-1)
        photos = F.normalize(heads.image_head(feats.images[:, 0]), dim=-1)
        caps = F.normalize(heads.text_head(feats.captions), dim=-1)
        assert torch.allclose(got, torch.stack([caps[1], photos[0], caps[7], photos[3]]), atol=1e-6)
        q = F.normalize(trainer.encode_queries(torch.tensor([0, 9]), g), dim=-1)
        inst = F.normalize(heads.text_head(feats.instruction), dim=-1)[0]
        assert torch.allclose(q[0], F.normalize(heads.text_head(feats.instructed[:1]), dim=-1)[0], atol=1e-6)
        assert torch.allclose(q[1], F.normalize(photos[0] + inst, dim=0), atol=1e-6)


def test_batches_never_mix_queries_about_one_photo(tmp_path: Path) -> None:
    data = build_union_data(_features())
    trainer = ContrastiveTrainer(_heads().text_head, _heads().image_head, data, _config(), tmp_path)
    for b in trainer._batches(0):
        groups = data.groups[b].tolist()
        assert len(groups) == len(set(groups))


@pytest.mark.parametrize("scope", ["query", "batch"])
def test_union_training_learns_both_directions(tmp_path: Path, scope: str) -> None:
    world = _features(n_photos=36, seed=1)
    train, val = world.subset(24), world.subset(24, first=False)
    records = [{"query_id": cid, "negatives": [{"id": f"p{(int(cid[1:].split('#')[0]) + 1) % 24}"}]}
               for cid in train.caption_ids]  # fmt: skip
    data = build_union_data(train, records if scope == "batch" else None)
    heads = _heads()
    heads.image_head.fit_standardizer(train.images[:, 0])
    heads.text_head.fit_standardizer(train.captions)
    before = union_recall(heads.eval(), val, 1)
    config = _config(hard_negative_scope=scope)
    summary = ContrastiveTrainer(heads.text_head, heads.image_head, data, config, tmp_path).train(show_progress=False)
    after = union_recall(heads.eval(), val, 1)
    assert summary.history[-1]["epoch_loss"] < summary.history[0]["epoch_loss"]
    assert after["t2i_R@10"] > before["t2i_R@10"] and after["i2t_R@5"] > before["i2t_R@5"]
    assert set(after) == {f"{d}_{m}" for d in ("t2i", "i2t") for m in ("R@1", "R@5", "R@10", "M.A.@1")}


def test_mined_negatives_map_to_candidate_indices_and_fill_gaps() -> None:
    feats = _features(n_photos=4, per=2)
    records = [
        {"query_id": "p0#0", "negatives": [{"id": "p0#1"}, {"id": "p2"}]},  # t2i: a caption of its photo, a photo
        {"query_id": "p1", "negatives": [{"id": "p3"}]},  # i2t: a photo
        {"query_id": "p2#0", "negatives": [{"id": "elsewhere"}]},  # not in this pool: filled like no record
    ]
    data = build_union_data(feats, records)
    hard = data.hard_negatives
    assert hard.shape == (16, 2)
    assert hard[0].tolist() == [4 + 1, 2]  # p0#1 is caption row 1
    assert hard[8 + 2].tolist() == hard[8 + 3].tolist() == [3, 3]  # both i2t rows of photo p1; repeated to width
    filled = hard[4].tolist()  # p2#0: random photos that are not p2
    assert all(0 <= c < 4 and c != 2 for c in filled)
    for row in range(8, 16):  # i2t queries without records get captions of other photos
        photo = int(data.query_image[row])
        if row in (10, 11):
            continue
        assert all(c >= 4 and int(feats.photo_of[c - 4]) != photo for c in hard[row].tolist())
    with pytest.raises(ValueError, match="name none of the training candidates"):
        build_union_data(feats, [{"query_id": "p0#0", "negatives": [{"id": "x"}]}])


def test_batch_scope_masks_other_queries_relevant_negatives(tmp_path: Path) -> None:
    feats = _features(n_photos=4, per=2)
    # query p0#0's hard negative is photo p1 = the positive of p1's captions
    records = [{"query_id": c, "negatives": [{"id": "p1" if c == "p0#0" else "p3"}]} for c in feats.caption_ids]
    data = build_union_data(feats, records)
    trainer = ContrastiveTrainer(_heads().text_head, _heads().image_head, data, _config(hard_negative_scope="batch"),
                                 tmp_path)  # fmt: skip
    batch = torch.tensor([0, 2])  # p0#0 (photo 0) and p1#0 (photo 1)
    idx = trainer._hard_negative_index(batch, torch.Generator().manual_seed(0))
    mask = trainer._false_negatives(batch, idx)
    # columns: positives [p0, p1], hard negatives [p1 (of p0#0), p3 (of p1#0)]
    assert mask.tolist() == [[True, False, False, False], [False, True, True, False]]


def test_hard_negatives_per_step_draws_columns(tmp_path: Path) -> None:
    base = build_union_data(_features(n_photos=4, per=2))
    hard = torch.arange(16)[:, None].repeat(1, 3) % 12
    hard[:, 1] = (hard[:, 1] + 1) % 12
    hard[:, 2] = (hard[:, 2] + 2) % 12
    data = ContrastiveData(base.queries, base.candidates, base.positives, hard_negatives=hard,
                           candidate_texts=base.candidate_texts, query_image=base.query_image)  # fmt: skip
    trainer = ContrastiveTrainer(_heads().text_head, _heads().image_head, data,
                                 _config(hard_negatives_per_step=1), tmp_path)  # fmt: skip
    idx = trainer._hard_negative_index(torch.arange(16), torch.Generator().manual_seed(0))
    assert idx.shape == (16, 1)
    assert all(int(idx[i, 0]) in hard[i].tolist() for i in range(16))
    assert len({int(idx[i, 0] - hard[i, 0]) % 12 for i in range(16)}) > 1  # not always the same column


def test_union_data_checks() -> None:
    base = build_union_data(_features(n_photos=4, per=2))
    with pytest.raises(ValueError, match="hard_negatives index candidates out of range"):
        ContrastiveData(base.queries, base.candidates, base.positives, hard_negatives=torch.full((16, 1), 12),
                        candidate_texts=base.candidate_texts)  # fmt: skip
    with pytest.raises(ValueError, match="query_image"):
        ContrastiveData(base.queries, base.candidates, base.positives, candidate_texts=base.candidate_texts,
                        query_image=torch.full((16,), 4))  # fmt: skip
    with pytest.raises(ValueError, match="hard_negative_scope"):
        ContrastiveConfig(hard_negative_scope="all")


def test_union_recipe_trains_mines_and_retrains(tiny_flickr8k: Path, tmp_path: Path) -> None:
    """The mini recipe with data.union, the miner over the trained model, and data.hard_negatives end to end."""
    from lumir.embed import load_embedder
    from lumir.eval import evaluate
    from lumir.eval.tasks import load_tasks
    from lumir.train.mining import MiningConfig, compute_rankings, mine_hard_negatives
    from lumir.train.recipe import apply_overrides, load_recipe, run_recipe

    recipe = apply_overrides(
        load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "mini" / "flickr8k.yaml"),
        ["data.split=train_tiny", "data.union=true", "data.holdout=4", f"features.cache_dir={tmp_path / 'f'}",
         "model.dim=16", "train.epochs=2", "train.batch_size=4", "train.warmup_steps=1"],
    )  # fmt: skip
    rand = run_recipe({**recipe, "output_dir": str(tmp_path / "b")}, data=tiny_flickr8k, show_progress=False)
    assert {"val_t2i_R@1", "val_t2i_M.A.@1", "val_i2t_R@5", "val_i2t_M.A.@1"} <= set(rand.validation)
    embedder = load_embedder(f"mini:{rand.model_dir}")
    t2i, i2t = load_tasks(f"flickr8k-union:{tiny_flickr8k / 'flickr8k'}:train_tiny")
    queries = [*t2i.queries, *i2t.queries]
    rankings, scores = compute_rankings(embedder, queries, t2i.corpus, k=20, exclude={**t2i.exclude, **i2t.exclude},
                                        qrels={**t2i.qrels, **i2t.qrels})  # fmt: skip
    desired = {q.id: "image" for q in t2i.queries} | {q.id: "text" for q in i2t.queries}
    out = tmp_path / "neg.jsonl"
    records = mine_hard_negatives(rankings, {**t2i.qrels, **i2t.qrels}, {it.id: it.modality for it in t2i.corpus},
                                  desired, MiningConfig(depth=20, k_prime=10, n=2), output=out,
                                  exclude={**t2i.exclude, **i2t.exclude}, positive_scores=scores)  # fmt: skip
    assert len(records) == 60 + 12 and any(r["negatives"] for r in records)
    hard = run_recipe(
        apply_overrides(recipe, [f"data.hard_negatives={out}", f"output_dir={tmp_path / 'c'}",
                                 "train.hard_negative_scope=batch", "train.hard_negatives_per_step=1"]),
        data=tiny_flickr8k, show_progress=False,
    )  # fmt: skip
    assert hard.summary.steps > 0 and "val_t2i_M.A.@1" in hard.validation
    result = evaluate(
        f"mini:{hard.model_dir}", load_tasks(f"flickr8k-union:{tiny_flickr8k / 'flickr8k'}:test_1k"), k=10
    )
    assert 0.0 <= result.score("flickr8k-union/t2i", "M.A.@1") <= 1.0
    with pytest.raises(ValueError, match="data.hard_negatives needs data.union"):
        run_recipe(apply_overrides(recipe, ["data.union=false", f"data.hard_negatives={out}"]), data=tiny_flickr8k)
