"""Nearest-neighbour search over clip embeddings by cosine distance (pgvector `<=>`).

HNSW indexes need a fixed dimension, while `clip_embeddings.embedding` holds vectors of every
model. So each model gets a partial expression index on `embedding::halfvec(<dim>)` (or
`::vector(<dim>)`, the kind of the initial migration's indexes) restricted to its `model_name`
(`ensure_hnsw_index`), and the query casts the column the same way so the planner can use it:
the kind of each model's index is read from the catalog (once per process and model).

Why halfvec for new indexes (HEATERS_VECTOR_INDEX, default ``halfvec``): the graph stores 2-byte
floats, so the index of a large library takes about half the memory and disk
(`benchmarks/bench_pgvector.py --index-kind both` measures size, latency and recall of both),
and dimensions up to 4,000 can be indexed (2,000 for ``vector``). The stored vectors stay
full 4-byte floats; only the ranking is done in half precision.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pgvector.sqlalchemy import HALFVEC, Vector
from sqlalchemy import Select, cast, select, text
from sqlalchemy.orm import Session

from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipEmbedding
from heaters_resources.settings import Settings

_MODEL = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")
#: Index kinds and the largest dimension pgvector's HNSW takes for each.
INDEX_KINDS = {"vector": 2000, "halfvec": 4000}
#: An HNSW index definition's element type and dimension (`...::halfvec(512)`).
INDEX_TYPE = re.compile(r"::(vector|halfvec)\((\d+)\)")
# Per (database URL, model): the kind of the model's HNSW index, once it has one.
_INDEX_KIND: dict[tuple[str, str], str] = {}
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


def ensure_hnsw_index(
    db: Database, model_name: str, dimension: int, kind: str | None = None
) -> str:
    """Create the partial HNSW cosine index for one model if missing; returns its name.

    ``kind``: ``halfvec`` or ``vector`` (default HEATERS_VECTOR_INDEX). A model that has an
    index keeps it, whatever its kind: queries follow the index (:func:`index_kind`)."""
    kind = _checked(model_name, dimension, kind or Settings.from_env().vector_index)
    name = index_name(model_name)
    with db.session() as session:
        session.execute(
            text(
                f"CREATE INDEX IF NOT EXISTS {name} ON clip_embeddings USING hnsw "
                f"((embedding::{kind}({dimension})) {kind}_cosine_ops) "
                f"WHERE model_name = '{model_name}'"
            )
        )
    _INDEX_KIND.pop((db.url, model_name), None)
    return name


def _checked(model_name: str, dimension: int, kind: str) -> str:
    """``kind`` when an index of that kind can be made for the model and dimension, else
    ValueError (the names go into DDL, so only safe ones pass)."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {', '.join(INDEX_KINDS)}, not {kind!r}")
    if not _MODEL.match(model_name) or not 0 < dimension <= INDEX_KINDS[kind]:
        raise ValueError(
            f"invalid model name or dimension for a {kind} index: {model_name!r}, {dimension}"
        )
    return kind


def rebuild_hnsw_index(db: Database, model_name: str, kind: str, dimension: int) -> str:
    """Drop ``model_name``'s HNSW index and build it again as ``kind`` (``heaters reindex``).
    Writes to clip_embeddings wait while it builds; searches of that model scan meanwhile."""
    _checked(model_name, dimension, kind)  # before the old index is dropped
    with db.session() as session:
        session.execute(text(f"DROP INDEX IF EXISTS {index_name(model_name)}"))
    _INDEX_KIND.pop((db.url, model_name), None)
    return ensure_hnsw_index(db, model_name, dimension, kind=kind)


def index_kind(db: Database, model_name: str) -> str:
    """The kind of ``model_name``'s HNSW index (``vector`` when it has none: any cast then
    scans, and the exact ``vector`` one ranks best). Cached once the model has an index."""
    key = (db.url, model_name)
    if key in _INDEX_KIND:
        return _INDEX_KIND[key]
    with db.session() as session:
        found = session.execute(
            text(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'clip_embeddings' "
                "AND indexname = :name"
            ),
            {"name": index_name(model_name)},
        ).scalar()
    match = INDEX_TYPE.search(found or "")
    if not match:
        return "vector"
    _INDEX_KIND[key] = match.group(1)
    return match.group(1)


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


def nearest_statement(
    db: Database,
    query: Sequence[float],
    *,
    model_name: str,
    generation_strategy: str | None = None,
    limit: int = 10,
    states: Sequence[str] | None = None,
    exclude_clip_ids: Sequence[int] = (),
    exclude_video: int | None = None,
) -> Select[Any]:
    """The nearest-neighbour query of :func:`nearest_clips`, its cast matching the model's
    index (a test EXPLAINs it: a cast that does not match is a silent sequential scan)."""
    vector = [float(x) for x in query]
    exact = cast(ClipEmbedding.embedding, Vector(len(vector))).cosine_distance(vector)
    if index_kind(db, model_name) == "halfvec":
        # Ranked through the index in half precision; the distance shown is the exact one
        # (nearest_clips re-sorts by it).
        order = cast(ClipEmbedding.embedding, HALFVEC(len(vector))).cosine_distance(vector)
    else:
        order = exact
    stmt = (
        select(Clip.id, Clip.identifier, Clip.source_video_id, Clip.state, exact.label("distance"))
        .join(Clip, Clip.id == ClipEmbedding.clip_id)
        .where(
            ClipEmbedding.model_name == model_name,
            ClipEmbedding.dimension == len(vector),
            Clip.superseded_at.is_(None),
        )
        .order_by(order)
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
    return stmt


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
    stmt = nearest_statement(
        db,
        query,
        model_name=model_name,
        generation_strategy=generation_strategy,
        limit=limit,
        states=states,
        exclude_clip_ids=exclude_clip_ids,
        exclude_video=exclude_video,
    )
    with db.session() as session:
        ef_search(session, limit)
        iterative_scan(session, db.url)
        found = [
            SimilarClip(int(r.id), r.identifier, int(r.source_video_id), r.state, float(r.distance))
            for r in session.execute(stmt)
        ]
    return sorted(found, key=lambda clip: clip.distance)


def forget_index_kinds() -> None:
    """Forget the cached index kinds (after dropping an index outside ``ensure_hnsw_index``)."""
    _INDEX_KIND.clear()
