"""LLM data augmentation before training: sheared extra captions and action knowledge.

- :mod:`lumir.augment.shearing` — text shearing (MLLM-augmented captions §3.4 and §7.1);
- :mod:`lumir.augment.decoding` — the paper's per-model decoding settings (Table 10) and fixed 30-token cap (§4.1);
- :mod:`lumir.augment.caption` — :class:`MultiViewCaptioner` (vision models caption images) and
  :class:`CaptionParaphraser` (a text LLM paraphrases raw captions), with provenance, plus augmented sets;
- :mod:`lumir.augment.knowledge` — action triplets and action-state descriptions (action-aware prompt tuning §3.2).
"""

from __future__ import annotations

from lumir.augment.caption import CaptionParaphraser, MultiViewCaptioner, augmented_captions, scaled_epochs
from lumir.augment.knowledge import ActionKnowledge, KnowledgeExtractor
from lumir.augment.shearing import (
    CAPTION_QUESTION,
    ShearResult,
    first_clause,
    first_period_substring,
    shear,
    shearing_budget,
)

__all__ = [
    "CAPTION_QUESTION",
    "ActionKnowledge",
    "CaptionParaphraser",
    "KnowledgeExtractor",
    "MultiViewCaptioner",
    "ShearResult",
    "augmented_captions",
    "first_clause",
    "first_period_substring",
    "scaled_epochs",
    "shear",
    "shearing_budget",
]
