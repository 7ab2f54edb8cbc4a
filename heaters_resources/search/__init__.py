"""Embedding search: the embedding space and its defaults (`space`), per-model HNSW indexes and
the one nearest-neighbour query (`index`), and what the CLI and review page ask of it
(`similarity`: similar clips, text search, near-duplicates)."""

from __future__ import annotations

from heaters_resources.search.index import ensure_hnsw_index, index_name, nearest_clips

__all__ = ["ensure_hnsw_index", "index_name", "nearest_clips"]
