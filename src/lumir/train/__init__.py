"""Training: contrastive losses (and, later, trainers) for lumir's embedders.

``lumir.train`` may import anything in lumir; nothing in lumir imports it.
"""

from __future__ import annotations

from lumir.train.losses import LearnableTemperature, info_nce

__all__ = ["LearnableTemperature", "info_nce"]
