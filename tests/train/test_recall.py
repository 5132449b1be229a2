"""image_text_recall (the trainer's validation metric) against a brute-force reference of the standard protocol."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lumir.train.mini import image_text_recall


def _reference(img: torch.Tensor, txt: torch.Tensor, owner: list[int], k: int) -> tuple[float, float]:
    sim = (txt @ img.T).tolist()
    t2i = 0
    for t, row in enumerate(sim):
        ranked = sorted(range(len(row)), key=lambda i: -row[i])
        t2i += owner[t] in ranked[:k]
    i2t = 0
    for i in range(img.shape[0]):
        column = [sim[t][i] for t in range(len(sim))]
        ranked = sorted(range(len(column)), key=lambda t: -column[t])
        i2t += any(owner[t] == i for t in ranked[:k])
    return 100 * t2i / len(sim), 100 * i2t / img.shape[0]


def test_matches_brute_force_reference() -> None:
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(30, 8, generator=g), dim=-1)
    owner = [i for i in range(30) for _ in range(5)]
    txt = F.normalize(img[owner] + 0.9 * torch.randn(150, 8, generator=g), dim=-1)
    got = image_text_recall(img, txt, torch.tensor(owner))
    for k in (1, 5, 10):
        t2i, i2t = _reference(img, txt, owner, k)
        assert abs(got[f"t2i_R@{k}"] - t2i) < 0.006 and abs(got[f"i2t_R@{k}"] - i2t) < 0.006  # rounded to 0.01
    assert 0 < got["t2i_R@1"] < got["i2t_R@1"] < 100  # the "any of 5 captions" rule makes i2t easier
    assert abs(got["rsum"] - sum(v for key, v in got.items() if key != "rsum")) < 0.006
