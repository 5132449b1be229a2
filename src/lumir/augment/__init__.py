"""LLM data augmentation before training: text shearing of generated captions (more to come).

See :mod:`lumir.augment.shearing` (MLLM-augmented captions §3.4).
"""

from __future__ import annotations

from lumir.augment.shearing import CAPTION_QUESTION, ShearResult, first_clause, shear, shearing_budget

__all__ = ["CAPTION_QUESTION", "ShearResult", "first_clause", "shear", "shearing_budget"]
