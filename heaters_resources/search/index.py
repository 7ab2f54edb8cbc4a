"""Nearest-neighbour search over clip embeddings by cosine distance (pgvector `<=>`).

HNSW indexes need a fixed dimension, while `clip_embeddings.embedding` holds vectors of every
model. So each model gets a partial expression index on `embedding::vector(<dim>)` restricted to
its `model_name` (two defaults in the initial migration, others via `ensure_hnsw_index`), and the
query casts the column the same way so the planner can use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import cast, select, text
from sqlalchemy.orm import Session

from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipEmbedding

_MODEL = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")
# Per database URL: whether its pgvector has `hnsw.iterative_scan` (0.8.0 and later).
_ITERATIVE_SCAN: dict[str, bool] = {}


@dataclass(frozen=True)
class SimilarClip:
    clip_id: int
    identifier: str
    source_video_id: int
    state: str
    distance: float

    @property
    def similarity(self) -> float:
        return 1.0 - self.distance

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "similarity": round(self.similarity, 6)}


def index_name(model_name: str) -> str:
    return "ix_clip_embeddings_hnsw_" + re.sub(r"[^a-z0-9]", "_", model_name.lower())[:36]


def ensure_hnsw_index(db: Database, model_name: str, dimension: int) -> str:
    """Create the partial HNSW cosine index for one model if missing; returns its name."""
    if not _MODEL.match(model_name) or not 0 < dimension <= 2000:
        raise ValueError(f"invalid model name or dimension: {model_name!r}, {dimension}")
    name = index_name(model_name)
    with db.session() as session:
        session.execute(
            text(
                f"CREATE INDEX IF NOT EXISTS {name} ON clip_embeddings USING hnsw "
                f"((embedding::vector({dimension})) vector_cosine_ops) "
                f"WHERE model_name = '{model_name}'"
            )
        )
    return name


def ef_search(session: Session, k: int) -> None:
    """HNSW returns at most ef_search candidates before filters. 100 rather than pgvector's 40:
    a margin for filtered queries and hard (uniform) data, for ~3 ms more at 100k vectors
    (benchmarks/bench_pgvector.py)."""
    session.execute(text(f"SET LOCAL hnsw.ef_search = {max(100, min(1000, 4 * int(k)))}"))


def _pgvector_version(raw: str | None) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", raw or "")[:3])


def iterative_scan(session: Session, url: str) -> bool:
    """Let an HNSW scan go on past ef_search candidates until the query's filters leave `limit`
    rows (pgvector >= 0.8; returns whether it was enabled).

    Without it, a filtered query (by state, strategy, excluding a video or superseded clips) gets
    only the filtered share of the first ef_search candidates: fewer than asked whenever the
    nearest ones are mostly filtered out, e.g. a long video's own clips when excluding it.
    `relaxed_order` is the faster mode; it can emit neighbours slightly out of order, so the
    caller re-sorts. An older pgvector (an external server) has no such setting, and naming it
    there can abort the transaction, hence the version check (once per URL)."""
    supported = _ITERATIVE_SCAN.get(url)
    if supported is None:
        version = session.execute(
            text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        ).scalar()
        supported = _ITERATIVE_SCAN[url] = _pgvector_version(version) >= (0, 8, 0)
    if supported:
        session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    return supported


def nearest_clips(
    db: Database,
    query: Sequence[float],
    *,
    model_name: str,
    generation_strategy: str | None = None,
    limit: int = 10,
    states: Sequence[str] | None = None,
    exclude_clip_ids: Sequence[int] = (),
    exclude_video: int | None = None,
) -> list[SimilarClip]:
    """Live clips (never superseded ones) ordered by cosine distance to `query`, closest first,
    within one model (and strategy, when given). The one nearest-neighbour query of the
    platform: similar clips and text search go through it (near-duplicates over the whole space
    use one batch k-NN pass instead: `search.duplicates`)."""
    vector = [float(x) for x in query]
    column = cast(ClipEmbedding.embedding, Vector(len(vector)))
    distance = column.cosine_distance(vector).label("distance")
    stmt = (
        select(Clip.id, Clip.identifier, Clip.source_video_id, Clip.state, distance)
        .join(Clip, Clip.id == ClipEmbedding.clip_id)
        .where(
            ClipEmbedding.model_name == model_name,
            ClipEmbedding.dimension == len(vector),
            Clip.superseded_at.is_(None),
        )
        .order_by(distance)
        .limit(limit)
    )
    if generation_strategy is not None:
        stmt = stmt.where(ClipEmbedding.generation_strategy == generation_strategy)
    if states:
        stmt = stmt.where(Clip.state.in_(list(states)))
    if exclude_clip_ids:
        stmt = stmt.where(Clip.id.not_in(list(exclude_clip_ids)))
    if exclude_video is not None:
        stmt = stmt.where(Clip.source_video_id != exclude_video)
    with db.session() as session:
        ef_search(session, limit)
        iterative_scan(session, db.url)
        found = [
            SimilarClip(int(r.id), r.identifier, int(r.source_video_id), r.state, float(r.distance))
            for r in session.execute(stmt)
        ]
    return sorted(found, key=lambda clip: clip.distance)
