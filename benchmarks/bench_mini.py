"""lumir-mini speed on this machine: frozen-tower feature throughput and end-to-end embedder throughput.

1. EfficientNet-Lite0 pooled features (the 2,064-d head + stage vector) on real Flickr8k photos: images/s by batch
   size, eager vs TorchScript-frozen channels-last (what :class:`ImageFeatureExtractor` uses on CPU).
2. all-MiniLM-L6-v2 caption features: captions/s by batch size.
3. ``MiniEmbedder.embed`` (decode + preprocess + both views + heads): images/s and captions/s.

Usage:
    python benchmarks/bench_mini.py --output benchmarks/results/mini_speed.md
    python benchmarks/bench_mini.py --n-images 64 --n-captions 500      # quick run
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from lumir.config import versions
from lumir.data.flickr8k import load_flickr8k
from lumir.embed import load_embedder
from lumir.eval.tasks import default_data_root
from lumir.models.mini import ImageFeatureExtractor
from lumir.models.text import SentenceTransformerModel, minilm_path
from lumir.train.features import text_features


def _rate(n: int, fn) -> float:  # type: ignore[no-untyped-def]
    fn(2)  # warm-up
    t0 = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder holding flickr8k/")
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--n-captions", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    images, captions = load_flickr8k(default_data_root(args.data) / "flickr8k", "train_4k")
    photos = [it.image.load() for it in images[: args.n_images]]  # type: ignore[union-attr]
    texts = [str(c.text) for c in captions[: args.n_captions]]
    rows = [f"torch threads: {torch.get_num_threads()}; versions: {versions()}", ""]
    rows += ["| stage | setting | throughput |", "|:---|:---|---:|"]
    for optimize in (False, True):
        net = ImageFeatureExtractor(optimize=optimize)
        pixels = net.pixels(photos)
        for bs in (1, 8, 32):

            def run(n: int, bs: int = bs, net: ImageFeatureExtractor = net, pixels: torch.Tensor = pixels) -> None:
                for i in range(0, n, bs):
                    net.from_pixels(pixels[i % len(photos) : i % len(photos) + bs])

            label = "TorchScript-frozen, channels-last" if optimize else "eager"
            rows.append(f"| image features (1 view) | {label}, batch {bs} | {_rate(len(photos), run):.1f} images/s |")
    model = SentenceTransformerModel.from_folder(minilm_path())
    for bs in (32, 128):
        rate = _rate(len(texts), lambda n, bs=bs: text_features(model, texts[:n], batch_size=bs))
        rows.append(f"| caption features | batch {bs}, longest-first | {rate:.0f} captions/s |")
    mini = load_embedder("mini", show_progress=False)
    t0 = time.perf_counter()
    mini.embed(images[: args.n_images], role="candidate")
    img_rate = args.n_images / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    mini.embed(captions[: args.n_captions], role="query", batch_size=128)
    txt_rate = args.n_captions / (time.perf_counter() - t0)
    rows.append(f"| MiniEmbedder.embed | photos from disk, image + mirror view | {img_rate:.1f} images/s |")
    rows.append(f"| MiniEmbedder.embed | captions, batch 128 | {txt_rate:.0f} captions/s |")
    table = "\n".join(rows)
    print(table)
    if args.output:
        args.output.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
