"""The query side as one object: rewrite -> retrieve -> rerank, built in code or from a spec.

- :class:`Pipeline` / :class:`PipelineOutput` (:mod:`lumir.pipeline.core`): per-stage Rankings and timings;
- :class:`PipelineSpec` / :func:`build_pipeline` (:mod:`lumir.pipeline.spec`): a YAML/JSON pipeline file, used by
  ``lumir search``, ``lumir eval``, the benchmarks and :func:`lumir.eval.evaluate`.
"""

from __future__ import annotations

from lumir.pipeline.core import FIRST_STAGE, RERANKED, REWRITE, Pipeline, PipelineOutput
from lumir.pipeline.spec import PipelineSpec, Stages, build_pipeline, load_stages

__all__ = [
    "FIRST_STAGE",
    "RERANKED",
    "REWRITE",
    "Pipeline",
    "PipelineOutput",
    "PipelineSpec",
    "Stages",
    "build_pipeline",
    "load_stages",
]
