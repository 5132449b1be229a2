"""lumir-mini open vocabulary with a confidence gate: holdout sweep, rule 3, Flickr8k test row, demo before/after.

A photo's ConSE part is scaled by ``g = clip((c - low) / (high - low), 0, 1) ** power`` before its row is
normalised (:func:`lumir.models.conse.fuse_gated`), ``c`` EfficientNet-Lite0's confidence in its ImageNet classes
(``top1`` probability, ``topk`` mass of the setting's T classes, or ``entropy`` = 1 - normalised entropy). Texts
keep their ConSE part. Against a text ``[sqrt(w) h', sqrt(1 - w) o']`` a photo scores
``(w <h, h'> + (1 - w) g <o, o'>) / sqrt(w + (1 - w) g^2)``: photos of people (spread probabilities) rely on the
heads, a tabby cat or an espresso brings its ConSE part in.

``sweep`` reuses the two holdouts of ``mini_open_vocab.py sweep`` and its caches (features in ``runs/mini/features``,
the holdout heads ``heads-h1000`` (in domain) and ``heads-h1000-unseen`` (unseen concepts), class-name vectors in
``runs/mini_open_vocab``); run that first. Grid (written before the sweep was run):

- ConSE settings: the two earlier picks, "a photo of a {}." with T = 10, the photo's own probabilities, centred
  (rule 2, ``mini:open_vocab=1``) and T = 3, photo + mirror, not centred (rule 1);
- gate: none (g = 1, the fixed-w fusion, for reference and eligible) or measure in {top1, topk, entropy} x
  (low, high) in {0, 0.1, ..., 1} with low < high and power 1, plus (0, 1) with power 0.5, 2 and 3 (58 gates);
- w in {0.3, 0.35, ..., 0.95}; w = 1 is the heads-only baseline.

**Rule 3** (written here before the gated sweep was run; the demo's sample photos and the test split play no part):
among all rows with w < 1 whose in-domain holdout Rsum is at least the heads-only in-domain Rsum plus
:data:`MARGIN` (= 3.0), take the one with the highest unseen-concept Rsum; ties (within 0.01) go to the higher
in-domain Rsum, then to the larger w. If no row qualifies the result is negative and nothing is scored on test.
Why the margin: the two earlier Flickr8k test scorings of fixed-w fusions came out 3.4 and 4.0 Rsum below their
in-domain holdout gains (rule 1: +1.5 on the holdout, -1.9 on test; rule 2: -0.9, -4.9), because the shipped heads
(4,000 photos) gain less from ConSE than the 3,000-photo holdout heads; the issue allows -1 on test, so the
in-domain gain must cover the larger drop minus the allowance, 4.0 - 1.0 = 3.0. This reads the test numbers already
published for those two earlier picks, never a score of a gated setting.

``test`` scores the Flickr8k 1K test once for the rule-3 pick (``load_embedder(spec)`` + ``DenseRetriever`` +
``compute_metrics``); ``demo`` runs ``lumir demo`` (sample photos only, and with the 1,000 Flickr8k test photos)
with heads only, the ungated ``mini:open_vocab=1`` and the pick. Results: ``benchmarks/results/mini_open_vocab_gate*``.

Usage:
    python benchmarks/mini_open_vocab_gate.py sweep      # ~15 min
    python benchmarks/mini_open_vocab_gate.py test       # ~1 min
    python benchmarks/mini_open_vocab_gate.py demo       # ~5 min
    python benchmarks/mini_open_vocab_gate.py markdown
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from mini_open_vocab import (
    CONCEPTS,
    FEATURES,
    HOLDOUT,
    REPO,
    RESULTS,
    VIEWS,
    WORK,
    _class_vectors,
    _data_root,
    _Memo,
    _write,
    recall_from_sim,
)

from lumir.config import versions
from lumir.data.flickr8k import flickr8k_tasks, load_flickr8k
from lumir.demo import run_demo
from lumir.embed import load_embedder
from lumir.eval.metrics import compute_metrics, rsum
from lumir.models.conse import confidence, conse_vectors, gate_values, mean_probabilities
from lumir.models.efficientnet import load_efficientnet_lite0
from lumir.models.mini import IMAGE_FEATURE_SPANS, TEXT_FEATURE_SPANS, load_mini_heads
from lumir.models.text import SentenceTransformerModel, minilm_path
from lumir.train.features import cache_image_features, cache_text_features
from lumir.train.mini import embed_cached_features

MARGIN = 3.0
RULE2 = {"weight": 0.8, "top": 10, "templates": ["a photo of a {}."], "center": True, "mirror": False}
"""The ungated ConSE settings of rule 2 (``mini_open_vocab.py``), the ``mini:open_vocab=1`` of before this sweep."""
SETTINGS: dict[str, dict[str, Any]] = {  # the ConSE settings of the two earlier picks
    "rule2": {"templates": "photo", "top": 10, "views": "photo", "center": True},
    "rule1": {"templates": "photo", "top": 3, "views": "photo+mirror", "center": False},
}
GATES: list[tuple[float, float, float]] = [
    *((lo / 10, hi / 10, 1.0) for lo in range(10) for hi in range(lo + 1, 11)),
    *((0.0, 1.0, p) for p in (0.5, 2.0, 3.0)),
]
MEASURES = ("top1", "topk", "entropy")
WEIGHTS = tuple(round(0.05 * i, 2) for i in range(6, 20))
COLUMNS = ["setting", "measure", "low", "high", "power", "w", "mean_gate", "rsum", "unseen_rsum"]


def _holdout(args: argparse.Namespace) -> dict[str, Any]:
    """The two holdouts of ``mini_open_vocab.py sweep`` from its caches: heads similarities (clean, unseen, shipped),
    class probabilities, MiniLM sentence embeddings, positives and the unseen-concept masks."""
    root = _data_root(args.data)
    images, captions = load_flickr8k(root / "flickr8k", "train_4k")
    img_cache = cache_image_features(images, FEATURES / f"flickr8k-train_4k-images-{'+'.join(VIEWS)}", views=VIEWS)
    txt_cache = cache_text_features(captions, FEATURES / "flickr8k-train_4k-captions")
    position = {name: i for i, name in enumerate(img_cache.ids)}
    positives = torch.tensor([position[c.meta["image"]] for c in captions])
    n_train = len(images) - HOLDOUT
    concept = re.compile("|".join(CONCEPTS.values()), re.IGNORECASE)
    caption_hit = torch.tensor([bool(concept.search(c.text or "")) for c in captions])
    photo_hit = torch.zeros(len(images), dtype=torch.bool)
    photo_hit[positives[caption_hit]] = True
    val = positives >= n_train
    img = torch.from_numpy(np.array(img_cache.features[n_train:, :2]))  # (1000, 2, 3856): photo, mirror
    txt = torch.from_numpy(np.array(txt_cache.features[:, 0]))[val]
    net = load_efficientnet_lite0()
    start, stop = IMAGE_FEATURE_SPANS["head"]
    with torch.no_grad():
        logits = [net._fc(img[:, v, start:stop]).float() for v in (0, 1)]
    heads = {
        "clean": load_mini_heads(WORK / "heads-h1000" / "model"),
        "unseen": load_mini_heads(WORK / "heads-h1000-unseen" / "model"),
        "shipped": load_mini_heads(REPO / "src" / "lumir" / "assets" / "mini"),
    }
    sims = {}
    for name, h in heads.items():
        img_h, txt_h = embed_cached_features(h, img, txt, mirror_view=1)
        sims[name] = txt_h @ img_h.T
    return {
        "sims": sims,
        "probs": {"photo": logits[0].softmax(dim=-1), "photo+mirror": mean_probabilities(*logits)},
        "sentence": txt[:, slice(*TEXT_FEATURE_SPANS["sentence"])],
        "positives": positives[val] - n_train,
        "unseen_texts": caption_hit[val],
        "unseen_images": photo_hit[n_train:],
    }


def _gated_sim(heads: torch.Tensor, conse: torch.Tensor, w: float, g: torch.Tensor) -> torch.Tensor:
    """Text-by-photo scores of ungated text vectors against gated photo vectors (``fuse_gated``'s formula)."""
    return (w * heads + (1 - w) * conse * g[None, :]) / torch.sqrt(w + (1 - w) * g**2)[None, :]


def select_v3(rows: list[dict[str, Any]], base: float) -> dict[str, Any] | None:
    """Rule 3 (see the module docstring)."""
    ok = [r for r in rows if r["w"] < 1.0 and r["rsum"] >= base + MARGIN - 1e-9]
    if not ok:
        return None
    return max(ok, key=lambda r: (round(r["unseen_rsum"], 2), round(r["rsum"], 2), r["w"]))


def sweep(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    h = _holdout(args)
    pos, ut, ui = h["positives"], h["unseen_texts"], h["unseen_images"]
    print(f"holdouts ready in {time.perf_counter() - t0:.0f} s", flush=True)
    model = SentenceTransformerModel.from_folder(minilm_path())
    base_clean = recall_from_sim(h["sims"]["clean"], pos)["rsum"]
    base_unseen = recall_from_sim(h["sims"]["unseen"], pos, texts=ut, images=ui)["rsum"]
    rows: list[dict[str, Any]] = []
    for sname, s in SETTINGS.items():
        cv, _ = _class_vectors(s["templates"], model)
        mu = cv.mean(dim=0) if s["center"] else torch.zeros(cv.shape[1])
        probs = h["probs"][s["views"]]
        conse_sim = (
            F.normalize(h["sentence"] - mu, dim=-1) @ F.normalize(conse_vectors(probs, cv, s["top"]) - mu, dim=-1).T
        )
        gates: list[tuple[str, float, float, float, torch.Tensor]] = [("none", 0.0, 1.0, 1.0, torch.ones(len(probs)))]
        for measure in MEASURES:
            c = confidence(probs, measure, s["top"])
            gates += [(measure, lo, hi, p, gate_values(c, lo, hi, p)) for lo, hi, p in GATES]
        for measure, lo, hi, p, g in gates:
            for w in WEIGHTS:
                clean = recall_from_sim(_gated_sim(h["sims"]["clean"], conse_sim, w, g), pos)["rsum"]
                unseen = recall_from_sim(_gated_sim(h["sims"]["unseen"], conse_sim, w, g), pos, texts=ut, images=ui)
                key = {"setting": sname, "measure": measure, "low": lo, "high": hi, "power": p, "w": w}
                rows.append(
                    {**key, "mean_gate": round(float(g.mean()), 3), "rsum": clean, "unseen_rsum": unseen["rsum"]}
                )
        print(f"setting {sname}: {len(rows)} rows, {time.perf_counter() - t0:.0f} s", flush=True)
    chosen = select_v3(rows, base_clean)
    shipped = None
    if chosen is not None:
        s = SETTINGS[chosen["setting"]]
        cv, _ = _class_vectors(s["templates"], model)
        mu = cv.mean(dim=0) if s["center"] else torch.zeros(cv.shape[1])
        probs = h["probs"][s["views"]]
        conse_sim = (
            F.normalize(h["sentence"] - mu, dim=-1) @ F.normalize(conse_vectors(probs, cv, s["top"]) - mu, dim=-1).T
        )
        g = torch.ones(len(probs))
        if chosen["measure"] != "none":
            conf = confidence(probs, chosen["measure"], s["top"])
            g = gate_values(conf, chosen["low"], chosen["high"], chosen["power"])
        shipped = recall_from_sim(_gated_sim(h["sims"]["shipped"], conse_sim, chosen["w"], g), pos)["rsum"]
    print(json.dumps({"base": base_clean, "base_unseen": base_unseen, "chosen": chosen}, indent=1), flush=True)
    _write(
        "mini_open_vocab_gate_sweep.json",
        {
            "what": "confidence-gated ConSE fusion on the two holdouts of mini_open_vocab.py sweep; rsum = in-domain "
            "holdout (heads on train_4k photos 1-3,000, scored on 3,001-4,000), unseen_rsum = unseen-concept holdout",
            "command": "python benchmarks/mini_open_vocab_gate.py sweep",
            "rule": select_v3.__doc__,
            "margin": MARGIN,
            "settings": SETTINGS,
            "base_rsum": base_clean,
            "base_unseen_rsum": base_unseen,
            "selection": {
                "rule": "v3",
                "chosen": chosen,
                "shipped_heads_seen_photos_rsum": shipped,
                "shipped_heads_seen_photos_base": recall_from_sim(h["sims"]["shipped"], pos)["rsum"],
            },
            "columns": COLUMNS,
            "rows": [[r[c] for c in COLUMNS] for r in rows],
            "versions": versions(),
        },
    )


def pick_spec() -> dict[str, Any]:
    """The embedder spec of the rule-3 pick, from the sweep's JSON."""
    s = json.loads((RESULTS / "mini_open_vocab_gate_sweep.json").read_text())
    chosen = s["selection"]["chosen"]
    if chosen is None:
        raise SystemExit("rule 3 picked nothing: no row met the in-domain margin; nothing to score")
    setting = SETTINGS[chosen["setting"]]
    ov: dict[str, Any] = {"weight": chosen["w"], "top": setting["top"], "templates": ["a photo of a {}."],
                          "center": setting["center"], "mirror": setting["views"] == "photo+mirror"}  # fmt: skip
    if chosen["measure"] != "none":
        ov["gate"] = {"measure": chosen["measure"], "low": chosen["low"], "high": chosen["high"],
                      "power": chosen["power"]}  # fmt: skip
    return {"type": "mini", "open_vocab": ov}


def test(args: argparse.Namespace) -> None:
    root = _data_root(args.data)
    spec = pick_spec()
    t0 = time.perf_counter()
    embedder = _Memo(load_embedder(spec, show_progress=False))
    metrics: dict[str, dict[str, float]] = {}
    for task in flickr8k_tasks(root / "flickr8k", "test_1k"):
        from lumir.retrieve import DenseRetriever

        rankings = DenseRetriever.from_corpus(task.corpus, embedder).retrieve(task.queries, k=10)
        metrics[task.name] = {
            k: round(100 * v, 2) for k, v in compute_metrics(rankings, task.qrels, ["R@1", "R@5", "R@10"]).items()
        }
    row = {"spec": embedder.spec(), "dim": embedder.dim, "metrics": metrics,
           "rsum": round(rsum(metrics["flickr8k/t2i"], metrics["flickr8k/i2t"]), 2),
           "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    print(json.dumps(row), flush=True)
    _write("mini_open_vocab_gate_test.json", {"command": "python benchmarks/mini_open_vocab_gate.py test",
                                               "row": row, "versions": versions()})  # fmt: skip


def demo(args: argparse.Namespace) -> None:
    root = _data_root(args.data)
    embedders: dict[str, Any] = {
        "heads only": "mini:open_vocab=0",
        "ungated (rule 2)": {"type": "mini", "open_vocab": RULE2},
        "gated pick (rule 3)": pick_spec(),
    }
    out: dict[str, Any] = {"command": "python benchmarks/mini_open_vocab_gate.py demo", "runs": {}}
    for setting, flickr in (("sample photos", False), ("with Flickr8k test_1k", True)):
        for name, spec in embedders.items():
            folder = WORK / "demo-gate" / f"{re.sub(r'[^a-z0-9]+', '-', name)}-{'flickr' if flickr else 'samples'}"
            emb = load_embedder(spec, show_progress=False)
            result = run_demo(folder, data=root if flickr else None, flickr=flickr, embedder=emb, show_progress=False)
            top1 = [
                {"section": t.section, "query": t.query, "hit": t.hit, "score": round(t.score, 4),
                 "known_rank": t.known_rank, "has_known": t.has_known}
                for t in result.top1
            ]  # fmt: skip
            out["runs"][f"{setting} / {name}"] = {"embedder": spec, "top1": top1}
            good = sum(t.correct is True for t in result.top1)
            print(f"{setting} / {name}: {good}/{sum(t.has_known for t in result.top1)} known answers at rank 1")
    out["versions"] = versions()
    _write("mini_open_vocab_gate_demo.json", out)


def markdown(args: argparse.Namespace) -> None:
    s = json.loads((RESULTS / "mini_open_vocab_gate_sweep.json").read_text())
    rows = [dict(zip(s["columns"], r, strict=True)) for r in s["rows"]]
    base = s["base_rsum"]
    print(f"heads only: in-domain {base}, unseen {s['base_unseen_rsum']}; margin {s['margin']}\n")
    print("| setting | gate | w | mean g | in-domain Rsum | unseen-concept Rsum |\n|:---|:---|---:|---:|---:|---:|")
    ok = sorted((r for r in rows if r["rsum"] >= base + s["margin"] - 1e-9), key=lambda r: -r["unseen_rsum"])
    for r in ok[: args.top]:
        print(
            f"| {r['setting']} | {_gate(r)} | {r['w']} | {r['mean_gate']} | {r['rsum']:.1f} | {r['unseen_rsum']:.1f} |"
        )
    print("\nbest unseen-concept Rsum per gate family, in-domain Rsum >= base + margin / >= base:\n")
    for fam in ("none", *MEASURES):
        for floor in (base + s["margin"], base):
            cand = [r for r in rows if r["measure"] == fam and r["rsum"] >= floor - 1e-9]
            if cand:
                r = max(cand, key=lambda r: r["unseen_rsum"])
                at = f"{r['setting']} {_gate(r)} w={r['w']}"
                print(f"{fam} (>= {floor:.2f}): {at} in-domain {r['rsum']} unseen {r['unseen_rsum']}")
    print("\nselection:", json.dumps(s["selection"]))
    for name in ("gate_test", "gate_demo"):
        path = RESULTS / f"mini_open_vocab_{name}.json"
        if path.is_file():
            print(f"\n{name}:", path.read_text()[:4000])


def _gate(r: dict[str, Any]) -> str:
    if r["measure"] == "none":
        return "none"
    return f"{r['measure']} {r['low']:g}–{r['high']:g}" + ("" if r["power"] == 1 else f" ^{r['power']:g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["sweep", "test", "demo", "markdown"])
    parser.add_argument("--data", type=Path, default=None, help="folder holding flickr8k/")
    parser.add_argument("--top", type=int, default=15, help="markdown: rows of the table")
    args = parser.parse_args()
    {"sweep": sweep, "test": test, "demo": demo, "markdown": markdown}[args.step](args)


if __name__ == "__main__":
    main()
