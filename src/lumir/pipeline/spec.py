"""Pipelines from specs: one YAML/JSON file describes a whole query side, and :func:`build_pipeline` builds it.

The same spec drives ``lumir search``, ``lumir eval``, the benchmark scripts and :func:`lumir.eval.evaluate`::

    # pipeline.yaml
    index: runs/scifact              # an index directory (its recorded embedder embeds the queries), or
    embedder: minilm                 # an embedder spec, for corpora embedded on the fly (eval tasks)
    k: 100                           # first-stage depth (at least the reranker's budget)
    candidate_modality: auto         # text | image | image,text | auto (M-BEIR's desired modality)
    rewriter: {type: template, template: "a photo of {text}"}
    reranker: yes-no:llm=qwen-coder,k=20,alpha=0.5
    llm_cache: default               # default ($LUMIR_HOME/llm-cache.sqlite) | none | a path

Components are specs for :mod:`lumir.registry` (strings or mappings); see ``docs/pipelines.md``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lumir.collections import Corpus
from lumir.errors import DataFormatError
from lumir.pipeline.core import Pipeline
from lumir.protocols import Embedder, Reranker, Rewriter

__all__ = ["PipelineSpec", "build_pipeline", "load_stages"]

CANDIDATE_MODALITIES = ("text", "image", "image,text", "auto")


@dataclass(frozen=True)
class PipelineSpec:
    """A whole query side as data (see the module docstring).

    Attributes:
        index: an index directory written by ``lumir index``; its embedder spec embeds the queries.
        embedder: an embedder spec: embeds corpora given at build time (eval tasks); with ``index``, it replaces
            the index's recorded embedder for queries (it must give the same vectors, e.g. another device).
        k: first-stage depth.
        candidate_modality: restrict candidates to one modality, or ``"auto"`` (each query's ``cand_modality``).
        instructions: query instructions for the embedder: an M-BEIR ``query_instructions.tsv``, a mapping
            (``{task: prompt}`` or ``{"path": TSV, "choice": "random", "seed": 0}``), ``"auto"`` (each eval task's
            own table) or ``"none"``/None.
        rewriter, reranker: specs of the optional stages (:data:`lumir.registry.REWRITERS`, ``RERANKERS``).
        llm_cache: the on-disk LLM cache put in front of LLMs given by spec: ``"default"``, ``"none"`` or a path.
        batch_size: embedding batch size; device: where the embedder runs (``cpu``, ``cuda``, ``auto``).
        backend, factory: the index built for corpora embedded on the fly (``flat`` or ``faiss`` + factory string).
        index_cache: keep those indexes, resumable, as directories here (reruns skip corpus embedding).
        name: a label for reports.
    """

    index: str | None = None
    embedder: str | Mapping[str, Any] | None = None
    k: int = 100
    candidate_modality: str | None = None
    instructions: str | Mapping[str, Any] | None = None
    rewriter: str | Mapping[str, Any] | None = None
    reranker: str | Mapping[str, Any] | None = None
    llm_cache: str | None = "default"
    batch_size: int = 64
    device: str | None = None
    backend: str = "flat"
    factory: str | None = None
    index_cache: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"pipeline k must be a positive integer, got {self.k!r}")
        if self.batch_size < 1:
            raise ValueError(f"pipeline batch_size must be >= 1, got {self.batch_size}")
        if self.candidate_modality is not None and self.candidate_modality not in CANDIDATE_MODALITIES:
            from lumir.types import Modality

            object.__setattr__(self, "candidate_modality", Modality.parse(self.candidate_modality).value)
        if self.backend not in ("flat", "faiss"):
            raise ValueError(f"pipeline backend must be 'flat' or 'faiss', got {self.backend!r}")
        if self.factory is not None and self.backend != "faiss":
            raise ValueError(f"factory {self.factory!r} needs backend 'faiss'; the flat index is exact")

    # ------------------------------------------------------------------ reading and writing
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str | Path | None = None) -> PipelineSpec:
        """Build from a mapping, refusing unknown keys (a typo would otherwise be ignored).

        Raises:
            DataFormatError: unknown keys or bad values (naming ``where`` when given).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataFormatError(f"unknown pipeline key(s) {unknown}; known: {sorted(known)}", path=where)
        try:
            return cls(**dict(data))
        except (TypeError, ValueError) as err:
            raise DataFormatError(f"bad pipeline spec: {err}", path=where) from err

    @classmethod
    def from_file(cls, path: str | Path) -> PipelineSpec:
        """Read a pipeline spec from a YAML (or JSON) file.

        Raises:
            FileNotFoundError: no such file. DataFormatError: not a mapping, invalid YAML, unknown keys.
        """
        from lumir.config import read_yaml_mapping

        data = read_yaml_mapping(path, what="pipeline file")
        return cls.from_dict(data, where=path)

    @classmethod
    def coerce(cls, value: PipelineSpec | Mapping[str, Any] | str | Path) -> PipelineSpec:
        """A PipelineSpec from itself, a mapping, or the path of a pipeline file."""
        if isinstance(value, PipelineSpec):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        return cls.from_file(value)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-serialisable mapping (unset fields left out)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value != f.default:
                out[f.name] = dict(value) if isinstance(value, Mapping) else value
        out.setdefault("k", self.k)
        return out

    def save(self, path: str | Path) -> None:
        """Write the spec as YAML (``.yaml``/``.yml``) or JSON."""
        from lumir.config import atomic_write_text

        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def replace(self, **changes: Any) -> PipelineSpec:
        """A copy with ``changes`` applied; None values leave a field as it is (CLI options not given)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # ------------------------------------------------------------------ derived settings
    def llm_cache_path(self) -> Path | None:
        """The LLM cache file, or None when ``llm_cache`` is ``"none"``."""
        if self.llm_cache in (None, "none", "off", ""):
            return None
        if self.llm_cache == "default":
            from lumir.models.chat.cache import default_llm_cache

            return default_llm_cache()
        return Path(self.llm_cache)

    def instructions_for(self, tasks_instructions: str | None = None) -> Any:
        """What to pass as the embedder's ``instructions`` (``"auto"`` takes the eval tasks' own table)."""
        if self.instructions in (None, "none"):
            return None
        if self.instructions == "auto":
            return tasks_instructions
        return self.instructions


def _llm_stage(kind: str, spec: str | Mapping[str, Any], cache: Path | None) -> Any:
    """Build a rewriter/reranker, putting the LLM cache in front of an LLM given by spec (unless it names one)."""
    from lumir.registry import REGISTRIES

    registry = REGISTRIES[kind]
    options = registry.normalize(spec)
    if cache is not None and "llm_cache" not in options:
        if "llm" in options:
            llm = options["llm"]
            if not (isinstance(llm, Mapping) and llm.get("type") == "cached"):
                options["llm_cache"] = str(cache)
        elif _takes_llm_cache(registry.load(options["type"])):  # a stage that owns its model (trained rewriter)
            options["llm_cache"] = str(cache)
    return registry.build(options)


def _takes_llm_cache(factory: Any) -> bool:
    """Whether a component factory names an ``llm_cache`` parameter."""
    import inspect

    try:
        return "llm_cache" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


@dataclass
class Stages:
    """The components of a pipeline spec, loaded once (and shared by every task of an evaluation)."""

    embedder: Embedder | None
    rewriter: Rewriter | None
    reranker: Reranker | None


def load_stages(spec: PipelineSpec, *, instructions: Any = None) -> Stages:
    """Load the embedder (when the spec names one), the rewriter and the reranker of ``spec``.

    Raises:
        KeyError: an unknown type (listing the known ones). ImportError: a missing extra (named).
    """
    from lumir.embed import load_embedder

    embedder = None
    if spec.embedder is not None:
        overrides: dict[str, Any] = {}
        if spec.device:
            overrides["device"] = spec.device
        chosen = spec.instructions_for(instructions)
        if chosen is not None:
            overrides["instructions"] = chosen
        embedder = load_embedder(spec.embedder, **overrides)
    cache = spec.llm_cache_path()
    rewriter = None if spec.rewriter is None else _llm_stage("rewriter", spec.rewriter, cache)
    reranker = None if spec.reranker is None else _llm_stage("reranker", spec.reranker, cache)
    return Stages(embedder, rewriter, reranker)


def build_pipeline(
    spec: PipelineSpec | Mapping[str, Any] | str | Path,
    *,
    corpus: Corpus | None = None,
    stages: Stages | None = None,
    cache_name: str = "corpus",
) -> Pipeline:
    """Build the pipeline a spec describes.

    Args:
        spec: a :class:`PipelineSpec`, a mapping, or the path of a pipeline file.
        corpus: candidates to embed now (eval tasks); else the spec's ``index`` directory is opened.
        stages: components already loaded with :func:`load_stages` (evaluations share them across tasks).
        cache_name: the corpus's folder name under ``index_cache`` (evaluations use the task name).

    Raises:
        ValueError: neither a corpus nor an index; a corpus without an embedder.
        FileNotFoundError / IncompatibleIndexError: a missing or damaged index directory.

    Example:
        >>> from lumir.testing.toy import toy_corpus
        >>> p = build_pipeline({"embedder": "color", "k": 5}, corpus=toy_corpus())
        >>> p.search("blue")[0].id in {"img-blue", "txt-blue"}
        True
    """
    from lumir.retrieve import DenseRetriever

    spec = PipelineSpec.coerce(spec)
    stages = stages or load_stages(spec)
    modality = spec.candidate_modality
    if corpus is not None:
        if stages.embedder is None:
            raise ValueError("a pipeline over a corpus needs an embedder: set embedder: in the spec (or --embedder)")
        retriever = _corpus_retriever(spec, corpus, stages.embedder, cache_name)
    elif spec.index is not None:
        from lumir.index import open_index

        store = open_index(spec.index, embedder=stages.embedder)
        embedder = stages.embedder
        if embedder is None:  # the index's own embedder, on the spec's device when one is named
            from lumir.embed import load_embedder

            runtime = {"device": spec.device} if spec.device else {}
            embedder = load_embedder(store.config["embedder"], **runtime)
        retriever = DenseRetriever(
            embedder, store.index, store.corpus, candidate_modality=modality, batch_size=spec.batch_size
        )
    else:
        raise ValueError("a pipeline needs an index directory (index: DIR) or a corpus to embed (with embedder:)")
    k = spec.k if stages.reranker is None else max(spec.k, stages.reranker.k)
    return Pipeline(retriever, rewriter=stages.rewriter, reranker=stages.reranker, k=k, spec=spec)


def slug(name: str) -> str:
    """A file-name-safe form of a task or corpus name (``toy/t2i`` -> ``toy_t2i``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _corpus_retriever(spec: PipelineSpec, corpus: Corpus, embedder: Embedder, name: str) -> Any:
    """A retriever over ``corpus``: in memory (flat), or through a cached, resumable index directory."""
    from lumir.retrieve import DenseRetriever

    modality = spec.candidate_modality
    if spec.index_cache is None and spec.backend == "flat":
        return DenseRetriever.from_corpus(corpus, embedder, batch_size=spec.batch_size, candidate_modality=modality)
    from lumir.index import build_index, open_index

    path = Path(spec.index_cache or ".lumir-cache") / slug(name)
    store = None
    if (path / "lumir.json").is_file():
        store = open_index(path, embedder=embedder)
        if store.config.get("embedder") != embedder.spec() or store.corpus.ids != corpus.ids:
            store = None
    if store is None:
        store = build_index(
            corpus,
            embedder,
            path,
            backend=spec.backend,
            factory=spec.factory,
            batch_size=spec.batch_size,
            overwrite=True,
        )
    return DenseRetriever(embedder, store.index, corpus, batch_size=spec.batch_size, candidate_modality=modality)
