"""`heaters doctor`: what a crash, a lost disk or a hand-edited bucket can leave inconsistent,
found in one pass and, with ``repair``, put right.

- orphan objects: stored under a managed prefix, older than ``min_age``, no row references
  them (a step killed after uploading; repair deletes them);
- dangling keys: rows pointing at objects that are not in the store (repair cannot recreate
  them; the report names the videos to re-materialize with ``overwrite``);
- stuck rows: in an in-progress state, held by a dead worker (repair: interrupted, retryable);
- stale scratch: folders of killed steps on this host (repair removes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact, SourceVideo
from heaters_resources.states import leases
from heaters_resources.steps.common import sweep_stale_scratch
from heaters_resources.store.cleanup import find_orphan_objects, referenced_keys
from heaters_resources.store.keys import MANAGED_PREFIXES
from heaters_resources.store.objects import ObjectStore


@dataclass
class DoctorReport:
    orphan_objects: list[str] = field(default_factory=list)
    dangling_keys: list[str] = field(default_factory=list)
    videos_to_redo: list[int] = field(default_factory=list)
    stuck_rows: list[str] = field(default_factory=list)
    stale_scratch: list[str] = field(default_factory=list)
    repaired: bool = False

    @property
    def healthy(self) -> bool:
        return not (
            self.orphan_objects or self.dangling_keys or self.stuck_rows or self.stale_scratch
        )


def _videos_of_keys(db: Database, missing: set[str]) -> list[int]:
    """The videos whose rows reference the missing keys (what to re-materialize)."""
    with db.session() as s:
        found: set[int] = set()
        for column in (SourceVideo.original_key, SourceVideo.normalized_key):
            found |= set(s.scalars(select(SourceVideo.id).where(column.in_(missing))))
        found |= set(s.scalars(select(Clip.source_video_id).where(Clip.storage_key.in_(missing))))
        for column in (ClipArtifact.storage_key, ClipArtifact.sidecar_key):
            found |= set(
                s.scalars(
                    select(Clip.source_video_id)
                    .join(ClipArtifact, ClipArtifact.clip_id == Clip.id)
                    .where(column.in_(missing))
                )
            )
    return sorted(found)


def examine(
    db: Database,
    store: ObjectStore,
    *,
    repair: bool = False,
    min_age: timedelta = timedelta(hours=1),
    scratch_base: Path | None = None,
    run_status: leases.RunStatus | None = None,
) -> DoctorReport:
    report = DoctorReport(repaired=repair)
    report.orphan_objects = find_orphan_objects(db, store, min_age=min_age)
    stored = {info.key for prefix in MANAGED_PREFIXES for info in store.list(prefix)}
    with db.session() as s:
        referenced = referenced_keys(s)
    missing = referenced - stored
    report.dangling_keys = sorted(missing)
    report.videos_to_redo = _videos_of_keys(db, missing) if missing else []
    stuck = leases.reap(db, run_status=run_status, dry_run=not repair)
    report.stuck_rows = [f"{r.entity} {r.id} ({r.state}): {r.reason}" for r in stuck]
    swept = sweep_stale_scratch(scratch_base, dry_run=not repair)
    report.stale_scratch = [str(p) for p in swept]
    if repair and report.orphan_objects:
        store.delete_many(report.orphan_objects)
    return report
