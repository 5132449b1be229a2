"""lumir-mini open vocabulary (ConSE) on ``lumir demo``: before/after, the covered queries by setting, speed.

- ``demo``: top-1 of every ``lumir demo`` query with lumir-mini heads only (``mini``, before) and with its
  open-vocabulary part (``mini:open_vocab=1``, after), on the sample photos only and with the 1,000 Flickr8k test
  photos (``run_demo``, exactly what ``lumir demo`` runs).
- ``demo-sweep``: how many of the demo queries an ImageNet class covers (:data:`COVERED`: 5 text, 4 photo, 2
  composed) find their known answer first, for every ConSE setting of the holdout sweep and a range of ``w``,
  computed from the parts (heads vectors of the ``demo`` run's heads-only indexes, ImageNet probabilities, MiniLM
  embeddings). It is a diagnosis of the trade-off, not a selection: the settings come from the training holdout
  (``mini_open_vocab.py sweep``).
- ``speed``: embedding throughput, heads only vs open vocabulary (alternating runs, after a warm-up), and the
  one-off cost of embedding the 1,000 class names.

Usage (after ``python benchmarks/mini_open_vocab.py sweep``, which caches the class-name vectors):
    python benchmarks/mini_open_vocab_demo.py demo           # ~5 min
    python benchmarks/mini_open_vocab_demo.py demo-sweep     # ~2 min (needs the demo step's indexes)
    python benchmarks/mini_open_vocab_demo.py speed          # ~3 min
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from mini_open_vocab import TEMPLATE_SETS, WORK, _class_vectors, _data_root, _write
from PIL import Image

from lumir.config import versions
from lumir.data.flickr8k import load_flickr8k
from lumir.demo import run_demo
from lumir.demo.run import COMPOSED_QUERIES, IMAGE_QUERIES, TEXT_QUERIES
from lumir.embed import load_embedder
from lumir.index import open_index
from lumir.models.conse import center_vectors, conse_vectors, mean_probabilities
from lumir.models.mini import ImageFeatureExtractor
from lumir.models.text import SentenceTransformerModel, minilm_path
from lumir.train.features import cache_image_features
from lumir.types import Item, Role

DEMO_EMBEDDERS = {"before": "mini", "after": "mini:open_vocab=1"}
COVERED_TEXT = ("a cat", "a cup of coffee", "a rocket on a launch pad", "a red motorcycle", "an old woman in uniform")
COVERED_COMPOSED = (("astronaut", "an old woman in a navy uniform"), ("chelsea", "a flower"))
COVERED = len(COVERED_TEXT) + len(IMAGE_QUERIES) + len(COVERED_COMPOSED)
"""Demo queries whose known answer shows something an ImageNet class names (tabby cat, espresso, missile, moped,
military uniform, daisy); the galaxies of the Hubble deep field have none."""
WEIGHTS = (1.0, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.5)


def demo(args: argparse.Namespace) -> None:
    root = _data_root(args.data)
    out: dict[str, Any] = {"command": "python benchmarks/mini_open_vocab_demo.py demo", "runs": {}}
    for setting, flickr in (("sample photos", False), ("with Flickr8k test_1k", True)):
        for when, spec in DEMO_EMBEDDERS.items():
            folder = WORK / "demo" / f"{when}-{'flickr' if flickr else 'samples'}"
            t0 = time.perf_counter()
            result = run_demo(folder, data=root if flickr else None, flickr=flickr, embedder=spec, show_progress=False)
            top1 = [
                {"section": t.section, "query": t.query, "hit": t.hit, "score": round(t.score, 4),
                 "known_rank": t.known_rank, "has_known": t.has_known}
                for t in result.top1
            ]  # fmt: skip
            seconds = round(time.perf_counter() - t0, 1)
            out["runs"][f"{setting} / {when}"] = {"embedder": spec, "seconds": seconds, "top1": top1}
            good = sum(t.correct is True for t in result.top1)
            print(f"{setting} / {when}: {good}/{sum(t.has_known for t in result.top1)} known answers at rank 1")
    out["versions"] = versions()
    _write("mini_open_vocab_demo.json", out)


def _demo_pool(root: Path) -> dict[str, Any]:
    """The heads-only demo indexes (photos, captions) with each photo's ImageNet logits (photo, mirror image)."""
    folder = WORK / "demo" / "before-flickr"
    photos, captions = open_index(folder / "index" / "photos"), open_index(folder / "index" / "captions")
    images, _ = load_flickr8k(root / "flickr8k", "test_1k")
    test = cache_image_features(
        images, WORK / "features" / "flickr8k-test_1k-images-original+mirror", views=["original", "mirror"]
    )
    row = {name: i for i, name in enumerate(test.ids)}
    extractor = ImageFeatureExtractor()
    feats = []
    for pid in photos.ids:
        if pid in row:
            feats.append(torch.from_numpy(np.array(test.features[row[pid]])))
        else:  # a sample photo, saved by the demo
            pixels = extractor.pixels([Image.open(folder / "photos" / f"{pid}.jpg").convert("RGB")])
            feats.append(torch.cat([extractor.from_pixels(pixels), extractor.from_pixels(pixels, mirror=True)]))
    stacked = torch.stack(feats)
    logits = [extractor.class_logits(stacked[:, v]) for v in (0, 1)]
    return {"photos": photos, "captions": captions, "logits": logits}


def demo_sweep(args: argparse.Namespace) -> None:
    pool = _demo_pool(_data_root(args.data))
    photos, captions = pool["photos"], pool["captions"]
    ids, cap_ids = list(photos.ids), list(captions.ids)
    heads_img, heads_cap = photos.index.vectors, captions.index.vectors  # heads only (256-d)
    mini = photos.embedder
    model = SentenceTransformerModel.from_folder(minilm_path())
    cap_text = [str(it.text) for it in captions.corpus]
    cap_sentence = torch.cat([model.encode(cap_text[i : i + 256]) for i in range(0, len(cap_text), 256)])
    texts = list(COVERED_TEXT) + [t for _, t in COVERED_COMPOSED]
    q_heads = mini.embed([Item(str(i), text=t) for i, t in enumerate(texts)], role=Role.QUERY)
    q_sentence = model.encode(texts)
    answers = dict(TEXT_QUERIES)
    composed_answer = {(r, t): g for r, t, g in COMPOSED_QUERIES}
    sample = torch.tensor([not p.endswith(".jpg") for p in ids])
    sample_cap = torch.tensor([not c.split("#")[0].endswith(".jpg") for c in cap_ids])
    rows = []
    for tname in TEMPLATE_SETS:
        cv, _ = _class_vectors(tname, model)
        for views in ("photo", "photo+mirror"):
            probs = mean_probabilities(*(pool["logits"] if views == "photo+mirror" else pool["logits"][:1]))
            for top in (3, 10):
                for center in (False, True):
                    mean = cv.mean(dim=0) if center else None
                    img_o, cap_o = (
                        center_vectors(conse_vectors(probs, cv, top), mean),
                        center_vectors(cap_sentence, mean),
                    )
                    q_o = center_vectors(q_sentence, mean)
                    for w in WEIGHTS:
                        found = {}
                        for setting, keep, keep_cap in (("samples", sample, sample_cap), ("flickr", None, None)):
                            found[setting] = _covered_at_1(
                                w, ids, cap_ids, heads_img, heads_cap, img_o, cap_o, q_heads, q_o, answers,
                                composed_answer, keep, keep_cap,
                            )  # fmt: skip
                        rows.append([tname, top, views, center, w, found["samples"], found["flickr"]])
        print(f"templates {tname} done", flush=True)
    _write(
        "mini_open_vocab_demo_sweep.json",
        {
            "command": "python benchmarks/mini_open_vocab_demo.py demo-sweep",
            "what": f"demo queries an ImageNet class covers ({COVERED}) with their known answer at rank 1, sample "
            "photos only and with the 1,000 Flickr8k test photos; shipped heads",
            "columns": ["templates", "top", "views", "center", "w", "covered_at_1_samples", "covered_at_1_flickr"],
            "rows": rows,
            "versions": versions(),
        },
    )


def _covered_at_1(
    w: float,
    ids: list[str],
    cap_ids: list[str],
    heads_img: torch.Tensor,
    heads_cap: torch.Tensor,
    img_o: torch.Tensor,
    cap_o: torch.Tensor,
    q_heads: torch.Tensor,
    q_o: torch.Tensor,
    answers: dict[str, str],
    composed_answer: dict[tuple[str, str], str],
    keep: torch.Tensor | None,
    keep_cap: torch.Tensor | None,
) -> int:
    """Covered demo queries whose known answer scores highest under ``w * heads + (1 - w) * ConSE``."""

    def first(scores: torch.Tensor, target: int, mask: torch.Tensor | None, drop: int | None = None) -> int:
        scores = scores.clone() if mask is None else scores.masked_fill(~mask, -9.0)
        if drop is not None:
            scores[drop] = -9.0
        return int((scores > scores[target]).sum() == 0)

    ok = 0
    for i, text in enumerate(COVERED_TEXT):
        s = w * heads_img @ q_heads[i] + (1 - w) * img_o @ q_o[i]
        ok += first(s, ids.index(answers[text]), keep)
    for pid in IMAGE_QUERIES:
        j = ids.index(pid)
        s = w * heads_cap @ heads_img[j] + (1 - w) * cap_o @ img_o[j]
        ok += first(s, cap_ids.index(f"{pid}#0"), keep_cap)
    for n, (ref, text) in enumerate(COVERED_COMPOSED):
        i, j = len(COVERED_TEXT) + n, ids.index(ref)
        hq, oq = F.normalize(heads_img[j] + q_heads[i], dim=-1), F.normalize(img_o[j] + q_o[i], dim=-1)
        ok += first(w * heads_img @ hq + (1 - w) * img_o @ oq, ids.index(composed_answer[(ref, text)]), keep, j)
    return ok


def speed(args: argparse.Namespace) -> None:
    import lumir.embed.mini as mini_module

    images, captions = load_flickr8k(_data_root(args.data) / "flickr8k", "test_1k")
    photos, texts = images[: args.n_images], captions[: args.n_captions]
    out: dict[str, Any] = {"command": "python benchmarks/mini_open_vocab_demo.py speed",
                           "torch_threads": torch.get_num_threads(), "n_images": len(photos),
                           "n_captions": len(texts), "rounds": []}  # fmt: skip
    embedders = {when: load_embedder(spec, show_progress=False) for when, spec in DEMO_EMBEDDERS.items()}
    out["dims"] = {when: emb.dim for when, emb in embedders.items()}
    mini_module._CLASS_VECTORS.clear()
    t0 = time.perf_counter()
    embedders["after"].class_vectors()  # type: ignore[attr-defined]
    out["class_vector_seconds"] = round(time.perf_counter() - t0, 2)
    for emb in embedders.values():  # warm-up: decode caches, TorchScript's first calls
        emb.embed(photos[:16], role=Role.CANDIDATE)
    for rnd in range(args.rounds):
        for when, emb in embedders.items():
            t0 = time.perf_counter()
            emb.embed(photos, role=Role.CANDIDATE)
            img_rate = len(photos) / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            emb.embed(texts, role=Role.QUERY, batch_size=128)
            txt_rate = len(texts) / (time.perf_counter() - t0)
            out["rounds"].append({"round": rnd, "embedder": when, "images_per_s": round(img_rate, 1),
                                  "captions_per_s": round(txt_rate, 1)})  # fmt: skip
            print(out["rounds"][-1], flush=True)
    out["versions"] = versions()
    _write("mini_open_vocab_speed.json", out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["demo", "demo-sweep", "speed"])
    parser.add_argument("--data", type=Path, default=None, help="folder holding flickr8k/")
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--n-captions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    {"demo": demo, "demo-sweep": demo_sweep, "speed": speed}[args.step](args)


if __name__ == "__main__":
    main()
