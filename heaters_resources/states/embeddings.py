"""Embedding transitions (approved -> embedding -> embedded) and storing vectors, with or without
a state change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    func,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from heaters_resources.db.engine import Database
from heaters_resources.errors import (
    AlreadyExistsError,
)
from heaters_resources.states.core import (
    EMBEDDINGS,
    apply_transition,
    attempts_counter,
    lock_rows,
    single_transition,
    start_many,
)
from heaters_resources.states.table import (
    TransitionResult,
)


def start_embedding(db: Database, clip_id: int, *, overwrite: bool = False) -> TransitionResult:
    return single_transition(
        db, "clip", "start_embedding", clip_id, overwrite=overwrite, **attempts_counter()
    )


def start_embedding_many(db: Database, clip_ids: Sequence[int], *, overwrite: bool = False) -> int:
    return start_many(db, "start_embedding", clip_ids, overwrite)


def _embedding_rows(
    items: Mapping[int, Sequence[float]], model_name: str, strategy: str
) -> list[dict[str, Any]]:
    rows = []
    for cid, vector in items.items():
        values = [float(x) for x in vector]
        if not values:
            raise ValueError(f"empty embedding for clip {cid}")
        rows.append(
            {
                "clip_id": cid,
                "model_name": model_name,
                "generation_strategy": strategy,
                "dimension": len(values),
                "embedding": values,
            }
        )
    return rows


def _upsert_embeddings(session: Session, rows: list[dict[str, Any]], overwrite: bool) -> None:
    stmt = pg_insert(EMBEDDINGS)
    if overwrite:
        stmt = stmt.on_conflict_do_update(
            constraint="uq_clip_embeddings_clip_model_strategy",
            set_={
                "embedding": stmt.excluded.embedding,
                "dimension": stmt.excluded.dimension,
                "created_at": func.now(),
            },
        )
    try:
        with session.begin_nested():
            session.execute(stmt, rows)
    except IntegrityError as exc:
        raise AlreadyExistsError(f"embedding already stored: {exc.orig}") from exc


def store_embedding(
    db: Database,
    clip_id: int,
    vector: Sequence[float],
    *,
    model_name: str,
    generation_strategy: str,
    overwrite: bool = False,
) -> None:
    """Store an embedding without a state change (e.g. "similar clips" during review)."""
    store_embeddings(
        db,
        {clip_id: vector},
        model_name=model_name,
        generation_strategy=generation_strategy,
        overwrite=overwrite,
    )


def store_embeddings(
    db: Database,
    vectors: Mapping[int, Sequence[float]],
    *,
    model_name: str,
    generation_strategy: str,
    overwrite: bool = False,
) -> int:
    """`store_embedding` for many clips in one transaction (all or none)."""
    rows = _embedding_rows(vectors, model_name, generation_strategy)
    if not rows:
        return 0

    def work(session: Session) -> int:
        lock_rows(session, "clip", list(vectors))
        _upsert_embeddings(session, rows, overwrite)
        return len(rows)

    return db.run(work)


def complete_embedding_many(
    db: Database,
    vectors: Mapping[int, Sequence[float]],
    *,
    model_name: str,
    generation_strategy: str,
) -> int:
    """embedding -> embedded; one row per (clip, model, strategy), replaced on a re-run."""
    rows = _embedding_rows(vectors, model_name, generation_strategy)

    def work(session: Session) -> int:
        apply_transition(session, "clip", "complete_embedding", list(vectors), error=None)
        _upsert_embeddings(session, rows, overwrite=True)
        return len(rows)

    return db.run(work)


def complete_embedding(
    db: Database,
    clip_id: int,
    vector: Sequence[float],
    *,
    model_name: str,
    generation_strategy: str,
) -> int:
    return complete_embedding_many(
        db, {clip_id: vector}, model_name=model_name, generation_strategy=generation_strategy
    )
