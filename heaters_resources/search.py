"""Nearest-neighbour search over clip embeddings by cosine distance (pgvector `<=>`).

HNSW indexes need a fixed dimension, while `clip_embeddings.embedding` holds vectors of every
model. So each model gets a partial expression index on `embedding::vector(<dim>)` restricted to
its `model_name` (two defaults in the initial migration, others via `ensure_hnsw_index`), and the
query casts the column the same way so the planner can use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pgvector.sqlalchemy import Vector
from sqlalchemy import cast, select, text

from heaters_resources.db import Database
from heaters_resources.models import Clip, ClipEmbedding

_MODEL = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")


@dataclass(frozen=True)
class Neighbour:
    clip_id: int
    identifier: str
    distance: float


def index_name(model_name: str) -> str:
    return "ix_clip_embeddings_hnsw_" + re.sub(r"[^a-z0-9]", "_", model_name.lower())[:36]


def ensure_hnsw_index(db: Database, model_name: str, dimension: int) -> str:
    """Create the partial HNSW cosine index for one model if missing; returns its name."""
    if not _MODEL.match(model_name) or not 0 < dimension <= 2000:
        raise ValueError(f"invalid model name or dimension: {model_name!r}, {dimension}")
    name = index_name(model_name)
    with db.session() as session:
        session.execute(text(
            f"CREATE INDEX IF NOT EXISTS {name} ON clip_embeddings USING hnsw "
            f"((embedding::vector({dimension})) vector_cosine_ops) "
            f"WHERE model_name = '{model_name}'"))
    return name


def nearest_clips(db: Database, query: Sequence[float], *, model_name: str,
                  generation_strategy: str | None = None, limit: int = 10,
                  states: Sequence[str] | None = None,
                  exclude_clip_ids: Sequence[int] = ()) -> list[Neighbour]:
    """Clips ordered by cosine distance to `query` (closest first), for one model."""
    vector = [float(x) for x in query]
    column = cast(ClipEmbedding.embedding, Vector(len(vector)))
    distance = column.cosine_distance(vector).label("distance")
    stmt = (select(Clip.id, Clip.identifier, distance)
            .join(Clip, Clip.id == ClipEmbedding.clip_id)
            .where(ClipEmbedding.model_name == model_name,
                   ClipEmbedding.dimension == len(vector))
            .order_by(distance).limit(limit))
    if generation_strategy is not None:
        stmt = stmt.where(ClipEmbedding.generation_strategy == generation_strategy)
    if states:
        stmt = stmt.where(Clip.state.in_(list(states)))
    if exclude_clip_ids:
        stmt = stmt.where(Clip.id.not_in(list(exclude_clip_ids)))
    with db.session() as session:
        return [Neighbour(int(r.id), r.identifier, float(r.distance))
                for r in session.execute(stmt)]
