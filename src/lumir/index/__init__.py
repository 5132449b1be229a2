"""Vector indexes behind one ``Index`` protocol, and self-describing index directories.

- :class:`FlatIndex`: exact chunked inner-product top-k (torch); the default.
- :class:`FaissIndex`: faiss factory indexes (IVF, HNSW, PQ); needs the ``faiss`` extra.
- :func:`build_index` / :func:`open_index` / :class:`VectorStore`: an index directory that records its embedder,
  so it reloads without code and embeds its own queries.
"""

from __future__ import annotations

from lumir.index.build import build_index
from lumir.index.faiss_backend import FaissIndex
from lumir.index.flat import FlatIndex
from lumir.index.store import FORMAT_VERSION, VectorStore, open_index

__all__ = ["FORMAT_VERSION", "FaissIndex", "FlatIndex", "VectorStore", "build_index", "open_index"]
