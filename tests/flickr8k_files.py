"""A tiny Flickr8k-layout folder of real photos (scikit-image samples cropped into distinct views), for tests."""

from __future__ import annotations

from pathlib import Path

import skimage.data as skimage_data
from PIL import Image

_PHOTOS = {
    "cat": ("chelsea", ["a cat", "a tabby cat lies down", "an orange cat", "a cat looking sideways", "a kitten"]),
    "coffee": ("coffee", ["a cup of coffee", "coffee on a saucer", "an espresso", "a red cup", "a hot drink"]),
    "astronaut": ("astronaut", ["an astronaut", "a woman in a space suit", "a smiling astronaut", "nasa", "a flag"]),
    "rocket": ("rocket", ["a rocket", "a rocket on the launch pad", "a space launch", "a tower", "a shuttle"]),
}


def write_tiny_flickr8k(root: Path, crops_per_photo: int = 3) -> Path:
    """``root/flickr8k`` with ``4 * crops_per_photo`` images; splits ``train_tiny`` (all) and ``test_1k``."""
    folder = root / "flickr8k"
    (folder / "images").mkdir(parents=True)
    names, lines = [], []
    for key, (func, captions) in _PHOTOS.items():
        photo = Image.fromarray(getattr(skimage_data, func)()).convert("RGB")
        w, h = photo.size
        for c in range(crops_per_photo):
            name = f"{key}_{c}.jpg"
            box = (c * w // 10, 0, w - (crops_per_photo - 1 - c) * w // 10, h)
            photo.crop(box).resize((96, 96)).save(folder / "images" / name)
            names.append(name)
            lines.extend(f"{name}#{n}\t{text} {c}" for n, text in enumerate(captions))
    (folder / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (folder / "train_tiny.txt").write_text("\n".join(names) + "\n")
    (folder / "test_1k.txt").write_text("\n".join(names[:2]) + "\n")
    return folder
