"""Review actions (approve, skip, archive, merge, split, undo), each recorded as an append-only
`review_events` row, and the completion of merges and splits (old clips end, new ones start)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    cast,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from heaters_resources.db.engine import Database
from heaters_resources.db.models import (
    ReviewEvent,
)
from heaters_resources.errors import (
    ConflictError,
    InvalidClipsError,
    InvalidTransitionError,
    NotFoundError,
)
from heaters_resources.states.core import (
    CLIPS,
    EMBEDDINGS,
    apply_transition,
    check_transition,
    lock_rows,
    verify_objects,
)
from heaters_resources.states.table import (
    TRANSITIONS,
    ClipSpec,
)
from heaters_resources.states.videos import clip_rows, insert_clips

# ------------------------------------------------------------------------------ review


def on_clip(clip_id: int) -> ColumnElement[bool]:
    """Review events that name `clip_id`, as `clip_ids @> ARRAY[clip_id]`: the GIN index on
    `clip_ids` answers that, whereas `clip_id = ANY(clip_ids)` reads every event."""
    return ReviewEvent.__table__.c.clip_ids.contains(cast([clip_id], ARRAY(BigInteger)))


def newest_event_on_clip(session: Session, clip_id: int, *columns: Any) -> Any | None:
    """The newest not-undone, non-undo review event on `clip_id` (`columns` include `id`).

    All of the clip's events are fetched (a handful) and the newest picked here: with
    `ORDER BY id DESC LIMIT 1` the planner, which cannot estimate `@>` on ids that each occur
    once, walks every event newest first instead of asking the GIN index.
    """
    ev = ReviewEvent.__table__
    rows = session.execute(
        select(*columns).where(on_clip(clip_id), ev.c.action != "undo", not_undone())
    ).all()
    return max(rows, key=lambda r: int(r.id), default=None)


def not_undone() -> ColumnElement[bool]:
    """Review events no `undo` event points at.

    NOT EXISTS is planned as an anti-join (an index probe on `ix_review_events_undoes_event_id`
    per candidate, or a hash anti-join that spills to disk); `id NOT IN (subquery)` is hashed
    only while the undone ids fit in work_mem and is otherwise re-scanned for every row.
    """
    ev = ReviewEvent.__table__
    undo = ev.alias("undo")
    return ~exists().where(undo.c.undoes_event_id == ev.c.id)


#: The state each undoable review action leaves its clips in; undo refuses any other.
UNDO_EXPECTS = {
    "approve": "approved",
    "skip": "skipped",
    "archive": "archived",
    "reopen": "pending_review",
    "request_merge": "merging",
    "request_split": "splitting",
}


class StaleActionError(ConflictError):
    """The clip changed since the reviewer saw it (the page's `clip_version` no longer matches):
    the action is refused rather than applied to a state the reviewer never saw."""


def clip_version(state: str, updated_at: Any) -> str:
    """Opaque token of a clip's state and last change; a review page sends it back with an
    action so that a stale page (another reviewer acted, or an undo) cannot act twice."""
    stamp = updated_at.isoformat() if hasattr(updated_at, "isoformat") else str(updated_at)
    return f"{state}@{stamp}"


def _guard(session: Session, clip_id: int, expected_version: str | None) -> None:
    """Lock the clip and refuse with `StaleActionError` unless it is at `expected_version`
    (in the caller's transaction, so the check and the transition cannot interleave)."""
    if expected_version is None:
        return
    row = lock_rows(session, "clip", [clip_id], CLIPS.c.updated_at)[clip_id]
    if clip_version(row.state, row.updated_at) != expected_version:
        raise StaleActionError(
            f"clip {clip_id} changed since the page was loaded "
            f"(it is now {row.state!r}); reload to see it"
        )


def _record(
    session: Session,
    action: str,
    clip_ids: Sequence[int],
    previous: Sequence[str],
    actor: str,
    payload: Mapping[str, Any] | None = None,
    undoes: int | None = None,
) -> int:
    return int(
        session.execute(
            insert(ReviewEvent)
            .values(
                action=action,
                actor=actor,
                clip_ids=list(clip_ids),
                previous_states=list(previous),
                payload=dict(payload or {}),
                undoes_event_id=undoes,
            )
            .returning(ReviewEvent.id)
        ).scalar_one()
    )


def _review(
    db: Database,
    action: str,
    clip_id: int,
    actor: str,
    payload: Mapping[str, Any] | None = None,
    expected_version: str | None = None,
) -> int:
    def work(session: Session) -> int:
        _guard(session, clip_id, expected_version)
        rows = apply_transition(session, "clip", action, [clip_id], reviewed_at=func.now())
        return _record(session, action, [clip_id], [rows[clip_id].state], actor, payload)

    return db.run(work)


def approve_clip(
    db: Database, clip_id: int, actor: str = "", *, expected_version: str | None = None
) -> int:
    """pending_review -> approved; returns the review event id."""
    return _review(db, "approve", clip_id, actor, expected_version=expected_version)


def skip_clip(
    db: Database, clip_id: int, actor: str = "", *, expected_version: str | None = None
) -> int:
    return _review(db, "skip", clip_id, actor, expected_version=expected_version)


def archive_clip(
    db: Database, clip_id: int, actor: str = "", *, expected_version: str | None = None
) -> int:
    return _review(db, "archive", clip_id, actor, expected_version=expected_version)


def reopen_clip(
    db: Database, clip_id: int, actor: str = "", *, expected_version: str | None = None
) -> int:
    """skipped -> pending_review (from the review page's clip list); undo skips it again."""

    def work(session: Session) -> int:
        _guard(session, clip_id, expected_version)
        rows = apply_transition(session, "clip", "reopen", [clip_id], reviewed_at=None)
        return _record(session, "reopen", [clip_id], [rows[clip_id].state], actor)

    return db.run(work)


def request_split(
    db: Database, clip_id: int, frame: int, actor: str = "", *, expected_version: str | None = None
) -> int:
    """pending_review -> splitting at `frame` (strictly inside the clip)."""

    def work(session: Session) -> int:
        _guard(session, clip_id, expected_version)
        rows = lock_rows(session, "clip", [clip_id], CLIPS.c.start_frame, CLIPS.c.end_frame)
        row = rows[clip_id]
        to_state = check_transition("clip", "request_split", rows)
        if not row.start_frame < frame < row.end_frame:
            raise InvalidClipsError(
                f"split frame {frame} not inside clip {clip_id} "
                f"[{row.start_frame}, {row.end_frame})"
            )
        session.execute(
            update(CLIPS)
            .where(CLIPS.c.id == clip_id)
            .values(state=to_state, reviewed_at=func.now(), updated_at=func.now())
        )
        return _record(session, "request_split", [clip_id], [row.state], actor, {"frame": frame})

    return db.run(work)


def request_merge(
    db: Database,
    clip_id: int,
    actor: str = "",
    *,
    expected_version: str | None = None,
    expected_previous: tuple[int, str] | None = None,
) -> int:
    """Merge a pending clip with the previous live clip of its video: both go to `merging`.

    `expected_previous` is the (id, version) of the neighbour the reviewer was shown beside
    the clip: a merge with a neighbour that is another clip, or changed since, is refused."""

    def work(session: Session) -> int:
        _guard(session, clip_id, expected_version)
        target = session.execute(
            select(CLIPS.c.source_video_id, CLIPS.c.start_frame).where(CLIPS.c.id == clip_id)
        ).first()
        if target is None:
            raise NotFoundError(f"clip not found: {clip_id}")
        prev_id = session.execute(
            select(CLIPS.c.id)
            .where(
                CLIPS.c.source_video_id == target.source_video_id,
                CLIPS.c.end_frame <= target.start_frame,
                CLIPS.c.superseded_at.is_(None),
            )
            .order_by(CLIPS.c.end_frame.desc())
            .limit(1)
        ).scalar()
        if prev_id is None:
            raise InvalidClipsError(f"clip {clip_id} has no previous clip to merge with")
        rows = lock_rows(session, "clip", [prev_id, clip_id], CLIPS.c.updated_at)
        if expected_previous is not None:
            shown = (prev_id, clip_version(rows[prev_id].state, rows[prev_id].updated_at))
            if shown != tuple(expected_previous):
                raise StaleActionError(
                    f"the clip before {clip_id} changed since the page was loaded "
                    f"(it is now {rows[prev_id].state!r}); reload to see it"
                )
        check_transition("clip", "request_merge", {clip_id: rows[clip_id]})
        to_state = check_transition("clip", "merge_into_next", {prev_id: rows[prev_id]})
        session.execute(
            update(CLIPS)
            .where(CLIPS.c.id.in_([prev_id, clip_id]))
            .values(state=to_state, reviewed_at=func.now(), updated_at=func.now())
        )
        return _record(
            session,
            "request_merge",
            [prev_id, clip_id],
            [rows[prev_id].state, rows[clip_id].state],
            actor,
        )

    return db.run(work)


def undo_review(
    db: Database, clip_id: int, actor: str = "", *, expected_version: str | None = None
) -> int:
    """Undo the latest not-yet-undone review action on `clip_id`, restoring the states it
    replaced. Refused once the action's effect moved on (e.g. the merge already ran)."""

    def work(session: Session) -> int:
        _guard(session, clip_id, expected_version)
        event = newest_event_on_clip(session, clip_id, *ReviewEvent.__table__.c)
        if event is None:
            raise InvalidTransitionError("clip", clip_id, "undo", "no review action to undo")
        if event.action == "purge":
            raise InvalidTransitionError(
                "clip",
                clip_id,
                "undo",
                "archived",
                reason="the archive job already deleted its files; it cannot be restored",
            )
        rows = lock_rows(session, "clip", list(event.clip_ids))
        expected = UNDO_EXPECTS[event.action]
        for cid, row in rows.items():
            if row.state != expected:
                raise InvalidTransitionError("clip", cid, "undo", row.state, (expected,))
        for cid, previous in zip(event.clip_ids, event.previous_states, strict=True):
            session.execute(
                update(CLIPS).where(CLIPS.c.id == cid).values(state=previous, updated_at=func.now())
            )
        return _record(
            session,
            "undo",
            list(event.clip_ids),
            [rows[c].state for c in event.clip_ids],
            actor,
            {"undone_action": event.action},
            undoes=event.id,
        )

    return db.run(work)


def _supersede(
    session: Session,
    old: Sequence[int],
    new_specs: Sequence[ClipSpec],
    video_id: int,
    fps: float,
    action: str,
    store: Any,
) -> list[int]:
    rows = clip_rows(video_id, fps, new_specs, parents=old)
    verify_objects(store, [r["storage_key"] for r in rows])
    # An embedded clip may be merged (its neighbour asked for it): its vector describes frames
    # that are no clip any more. The new clip is embedded anew once it is approved.
    session.execute(delete(EMBEDDINGS).where(EMBEDDINGS.c.clip_id.in_(list(old))))
    session.execute(
        update(CLIPS)
        .where(CLIPS.c.id.in_(list(old)))
        .values(
            state=TRANSITIONS[("clip", action)].to_state,
            lease_id=None,
            superseded_at=func.now(),
            updated_at=func.now(),
        )
    )
    return insert_clips(session, rows)


def complete_merge(
    db: Database, clip_ids: Sequence[int], *, store: Any = None, cut: bool = True
) -> int:
    """merging -> archived for the merged clips; one new clip (state `spliced`) spans them.

    ``cut=False``: the new clip has no file yet, only its frame range (HEATERS_CLIPS=proxy)."""

    def work(session: Session) -> int:
        rows = lock_rows(
            session,
            "clip",
            list(clip_ids),
            CLIPS.c.source_video_id,
            CLIPS.c.start_frame,
            CLIPS.c.end_frame,
            CLIPS.c.fps,
        )
        check_transition("clip", "complete_merge", rows)
        videos = {r.source_video_id for r in rows.values()}
        if len(videos) != 1 or len(rows) < 2:
            raise InvalidClipsError("merge needs two or more clips of one video")
        spec = ClipSpec(
            min(r.start_frame for r in rows.values()),
            max(r.end_frame for r in rows.values()),
            cut=cut,
        )
        first = next(iter(rows.values()))
        return _supersede(
            session, sorted(rows), [spec], videos.pop(), first.fps, "complete_merge", store
        )[0]

    return db.run(work)


def complete_split(
    db: Database, clip_id: int, frame: int, *, store: Any = None, cut: bool = True
) -> list[int]:
    """splitting -> archived; two new clips [start, frame) and [frame, end) start at `spliced`
    (``cut=False``: without files, frame ranges of the source)."""

    def work(session: Session) -> list[int]:
        rows = lock_rows(
            session,
            "clip",
            [clip_id],
            CLIPS.c.source_video_id,
            CLIPS.c.start_frame,
            CLIPS.c.end_frame,
            CLIPS.c.fps,
        )
        check_transition("clip", "complete_split", rows)
        row = rows[clip_id]
        if not row.start_frame < frame < row.end_frame:
            raise InvalidClipsError(f"split frame {frame} not inside clip {clip_id}")
        specs = [ClipSpec(row.start_frame, frame, cut=cut), ClipSpec(frame, row.end_frame, cut=cut)]
        return _supersede(
            session, [clip_id], specs, row.source_video_id, row.fps, "complete_split", store
        )

    return db.run(work)
