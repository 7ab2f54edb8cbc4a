"""Review jobs: execute a requested merge or split, and purge the objects of archived clips."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, exists, insert, or_, select, update

from heaters_media.merge import merge_clips
from heaters_media.split import split_clip_at
from heaters_resources import faults, states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact, ReviewEvent
from heaters_resources.states import leases
from heaters_resources.steps.common import (
    discard_unreferenced,
    fail_step,
    fetch,
    scratch_dir,
)
from heaters_resources.steps.cutting import local_clip_file
from heaters_resources.store import keys
from heaters_resources.store.objects import ObjectStore

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ review outcomes


@dataclass
class ReviewJobOutcome:
    action: str
    old_clip_ids: list[int]
    new_clip_ids: list[int]
    new_identifiers: list[str]
    deleted_objects: int = 0
    # Why nothing was done: the clips were no longer in the state the request left them in
    # (an undo came first, or during the job). Not a failure: the job ends and is not retried.
    skipped: str | None = None


def _undone(db: Database, clip_ids: Sequence[int], state: str) -> list[int]:
    with db.session() as session:
        now = dict(session.execute(select(Clip.id, Clip.state).where(Clip.id.in_(clip_ids))).all())
    return [c for c in clip_ids if now.get(c) != state]


def execute_merge(
    db: Database, store: ObjectStore, clip_ids: Sequence[int], *, workdir: Path | None = None
) -> ReviewJobOutcome:
    """Carry out a requested merge (clips in ``merging``): one new clip replaces them."""
    gone = leases.claim(db, "clip", clip_ids, "merging")
    if gone:
        why = f"clips {gone} are no longer merging (the request was undone)"
        return ReviewJobOutcome("merge", list(clip_ids), [], [], skipped=why)
    clips = sorted((states.get_clip(db, cid) for cid in clip_ids), key=lambda c: c.start_frame)
    written: list[str] = []
    try:
        if len(clips) != 2:
            raise ValueError(f"a merge joins two clips, got {len(clips)}")
        a, b = clips
        video_id = a.source_video_id
        ident = keys.clip_identifier(video_id, a.start_frame, b.end_frame)
        # Two neighbours not cut yet (HEATERS_CLIPS=proxy) make one frame range of the source:
        # a row, no file. Otherwise the files are joined (a clip not cut is cut first).
        as_range = not (a.storage_key or b.storage_key) and a.end_frame == b.start_frame
        if not as_range:
            with scratch_dir(workdir) as tmp:
                pa = local_clip_file(db, store, a, tmp)
                pb = local_clip_file(db, store, b, tmp)
                merged = merge_clips(pa, pb, tmp / f"{ident}.mp4")
                faults.point("merge:before-upload")
                written.append(keys.clip_key(video_id, ident))
                store.upload_file(merged.path, written[-1])
        faults.point("merge:before-commit")
        new_id = states.complete_merge(db, [a.id, b.id], store=store, cut=not as_range)
    except Exception as exc:
        discard_unreferenced(db, store, written)
        gone = _undone(db, [c.id for c in clips], "merging")
        if gone and isinstance(exc, states.InvalidTransitionError):
            why = f"clips {gone} left merging during the job (the request was undone)"
            return ReviewJobOutcome("merge", [c.id for c in clips], [], [], skipped=why)
        for c in clips:
            fail_step(db, "clip", c.id, "merge", exc)
        raise
    return ReviewJobOutcome("merge", [c.id for c in clips], [new_id], [ident])


def execute_split(
    db: Database, store: ObjectStore, clip_id: int, frame: int, *, workdir: Path | None = None
) -> ReviewJobOutcome:
    """Carry out a requested split at source frame ``frame`` (clip in ``splitting``)."""
    if leases.claim(db, "clip", [clip_id], "splitting"):
        why = f"clip {clip_id} is no longer splitting (the request was undone)"
        return ReviewJobOutcome("split", [clip_id], [], [], skipped=why)
    clip = states.get_clip(db, clip_id)
    written: list[str] = []
    try:
        video_id = clip.source_video_id
        idents = [
            keys.clip_identifier(video_id, clip.start_frame, frame),
            keys.clip_identifier(video_id, frame, clip.end_frame),
        ]
        # A clip not cut yet (HEATERS_CLIPS=proxy) splits into two frame ranges: rows only.
        if clip.storage_key:
            with scratch_dir(workdir) as tmp:
                local = fetch(store, clip.storage_key, tmp)
                result = split_clip_at(local, frame - clip.start_frame, tmp / "parts")
                for part, ident in zip(result.clips, idents, strict=True):
                    written.append(keys.clip_key(video_id, ident))
                    store.upload_file(part.path, written[-1])
                    faults.point("split-at:between-uploads")
        faults.point("split-at:before-commit")
        new_ids = states.complete_split(db, clip_id, frame, store=store, cut=bool(clip.storage_key))
    except Exception as exc:
        discard_unreferenced(db, store, written)
        if _undone(db, [clip_id], "splitting") and isinstance(exc, states.InvalidTransitionError):
            why = f"clip {clip_id} left splitting during the job (the request was undone)"
            return ReviewJobOutcome("split", [clip_id], [], [], skipped=why)
        fail_step(db, "clip", clip_id, "split", exc)
        raise
    return ReviewJobOutcome("split", [clip_id], new_ids, idents)


def clip_object_keys(db: Database, clip_ids: Sequence[int]) -> list[str]:
    """Every stored object of the clips: the clip file, keyframes, sprites and sidecars."""
    with db.session() as session:
        clip_keys = session.scalars(select(Clip.storage_key).where(Clip.id.in_(list(clip_ids))))
        arts = session.execute(
            select(ClipArtifact.storage_key, ClipArtifact.sidecar_key).where(
                ClipArtifact.clip_id.in_(list(clip_ids))
            )
        ).all()
        return [k for k in clip_keys if k] + [k for row in arts for k in row if k]


# --------------------------------------------------------------------------- archive purge


@dataclass
class PurgeOutcome:
    clip_ids: list[int]
    deleted: int
    failed: dict[str, str]
    requests: int


def purge_archived_clips(
    db: Database,
    store: ObjectStore,
    clip_ids: Sequence[int],
    *,
    event_id: int | None = None,
    actor: str = "archive-job",
) -> PurgeOutcome:
    """Delete the stored objects of archived clips in batches, then forget their keys.

    Only clips still ``archived`` are touched (an undo may have come first). With ``event_id``
    (the archive action being carried out), nothing is touched if that action was undone, nor
    any clip archived again since (its own, later action carries its own grace period and
    purge): a stale purge must not delete a re-archived clip that can still be undone. Objects
    go first (batched, 1000 keys per request on S3); rows are updated only for clips whose
    objects are all gone, and a ``purge`` review event records that undo is no longer possible.
    """
    ids = list(clip_ids)
    with db.session() as session:
        if event_id is not None:
            if session.scalar(
                select(ReviewEvent.id).where(ReviewEvent.undoes_event_id == event_id).limit(1)
            ):
                return PurgeOutcome([], 0, {}, 0)
            later = session.scalars(
                select(ReviewEvent.clip_ids).where(
                    ReviewEvent.action == "archive",
                    ReviewEvent.id > event_id,
                    ReviewEvent.clip_ids.overlap(ids),
                )
            )
            rearchived = {cid for row in later for cid in row}
            ids = [cid for cid in ids if cid not in rearchived]
        # Purged = no file and no artifacts (a clip not cut yet has artifacts only).
        has_objects = or_(
            Clip.storage_key.is_not(None),
            exists().where(ClipArtifact.clip_id == Clip.id),
        )
        live = list(
            session.scalars(
                select(Clip.id).where(Clip.id.in_(ids), Clip.state == "archived", has_objects)
            )
        )
    if not live:
        return PurgeOutcome([], 0, {}, 0)
    by_clip = {cid: clip_object_keys(db, [cid]) for cid in live}
    result = store.delete_many([k for ks in by_clip.values() for k in ks])
    done = [cid for cid, ks in by_clip.items() if not any(k in result.failed for k in ks)]
    if done:
        with db.session() as session:
            session.execute(delete(ClipArtifact).where(ClipArtifact.clip_id.in_(done)))
            session.execute(update(Clip).where(Clip.id.in_(done)).values(storage_key=None))
            session.execute(
                insert(ReviewEvent).values(
                    action="purge",
                    actor=actor,
                    clip_ids=done,
                    previous_states=["archived"] * len(done),
                    payload={"event_id": event_id, "objects_deleted": len(result.deleted)},
                )
            )
    return PurgeOutcome(done, len(result.deleted), dict(result.failed), result.requests)
