"""Garbage collection of objects: scheduled deletions and orphans.

- `purge_scheduled_deletions`: delete the objects that overwrites recorded in
  `pending_object_deletions`, skipping any key a row references again (a re-run that reused it).
- `find_orphan_objects` / `remove_orphan_objects`: objects under the managed prefixes
  (`source_videos/`, `clips/`) that no row references, e.g. uploads whose row update never
  committed because the process crashed. A grace period (`min_age`) protects uploads whose
  transaction is still in flight.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, union
from sqlalchemy.orm import Session

from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact, PendingObjectDeletion, SourceVideo
from heaters_resources.store.keys import MANAGED_PREFIXES
from heaters_resources.store.objects import DeleteResult, ObjectStore


def _referenced_query() -> Any:
    cols = [
        SourceVideo.original_key,
        SourceVideo.normalized_key,
        Clip.storage_key,
        ClipArtifact.storage_key,
        ClipArtifact.sidecar_key,
    ]
    return union(*(select(c.label("k")).where(c.is_not(None)) for c in cols))


def referenced_keys(session: Session, among: Iterable[str] | None = None) -> set[str]:
    """Every object key a row points at (optionally only those in `among`)."""
    query = _referenced_query().subquery()
    stmt = select(query.c.k)
    if among is not None:
        stmt = stmt.where(query.c.k.in_(list(among)))
    return set(session.execute(stmt).scalars())


def find_orphan_objects(
    db: Database,
    store: ObjectStore,
    *,
    min_age: timedelta = timedelta(hours=1),
    now: datetime | None = None,
) -> list[str]:
    """Managed objects older than `min_age` that no row references."""
    cutoff = (now or datetime.now(tz=UTC)) - min_age
    candidates = [
        info.key
        for prefix in MANAGED_PREFIXES
        for info in store.list(prefix)
        if info.last_modified <= cutoff
    ]
    if not candidates:
        return []
    with db.session() as session:
        used = referenced_keys(session)
    return sorted(k for k in candidates if k not in used)


def remove_orphan_objects(
    db: Database, store: ObjectStore, *, min_age: timedelta = timedelta(hours=1)
) -> DeleteResult:
    return store.delete_many(find_orphan_objects(db, store, min_age=min_age))


def purge_scheduled_deletions(
    db: Database, store: ObjectStore, *, limit: int = 10_000
) -> DeleteResult:
    """Delete scheduled objects; rows for keys that were deleted (or are referenced again, and so
    must be kept) are removed, failed keys stay scheduled for the next purge."""
    with db.session() as session:
        scheduled = list(
            session.execute(
                select(PendingObjectDeletion.storage_key)
                .order_by(PendingObjectDeletion.id)
                .limit(limit)
            ).scalars()
        )
        in_use = referenced_keys(session, scheduled)
    result = store.delete_many(k for k in scheduled if k not in in_use)
    done = [*result.deleted, *in_use]
    if done:
        with db.session() as session:
            session.execute(
                delete(PendingObjectDeletion).where(PendingObjectDeletion.storage_key.in_(done))
            )
    return result
