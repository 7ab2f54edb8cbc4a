"""Review actions on many clips at once (the grid review page) and their undo as one.

A batch is one transaction: every clip still at the version the page showed moves, each with
its own `review_events` row (the sensors, the export and the per-clip history read events per
clip), and all of them carry the same `payload.batch`, a number drawn from the events' own id
sequence before the first row is written, so every event of the batch has a larger id than
its batch number (the undo's lookup is an id range, not a scan of the reviewer's history).
A clip another reviewer changed meanwhile is left out and reported, never applied twice.

Undo of a batch is all or nothing, in one transaction: if one clip moved on since (embedded,
merged, acted on by someone else), the whole undo is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from heaters_resources.db.engine import Database
from heaters_resources.db.models import ReviewEvent
from heaters_resources.errors import InvalidTransitionError
from heaters_resources.states.core import CLIPS, apply_transition, lock_rows
from heaters_resources.states.review import (
    UNDO_EXPECTS,
    StaleActionError,
    _record,
    clip_version,
    newest_event_on_clip,
    not_undone,
)
from heaters_resources.states.table import TRANSITIONS

BATCH_ACTIONS = ("approve", "skip", "archive")
#: One request's clips at most (the grid shows 50 a page; the body limit allows ~1,000).
MAX_BATCH = 500


@dataclass
class BatchResult:
    batch: int | None
    events: dict[int, int] = field(default_factory=dict)  # clip id -> event id
    refused: dict[int, str] = field(default_factory=dict)  # clip id -> why


def _next_batch(session: Session) -> int:
    return int(
        session.execute(
            text("SELECT nextval(pg_get_serial_sequence('review_events', 'id'))")
        ).scalar_one()
    )


def review_many(
    db: Database, action: str, items: Sequence[tuple[int, str]], actor: str
) -> BatchResult:
    """Apply `action` (approve | skip | archive) to every (clip id, version) still at that
    version and allowed to move; the others are returned in `refused` with the reason."""
    if action not in BATCH_ACTIONS:
        raise ValueError(f"not a batch action: {action!r}")
    if not 0 < len(items) <= MAX_BATCH:
        raise ValueError(f"a batch is 1 to {MAX_BATCH} clips, got {len(items)}")
    wanted = dict(items)
    rule = TRANSITIONS[("clip", action)]

    def work(session: Session) -> BatchResult:
        rows = lock_rows(session, "clip", sorted(wanted), CLIPS.c.updated_at)
        result = BatchResult(None)
        for cid in sorted(wanted):
            row = rows[cid]
            if clip_version(row.state, row.updated_at) != wanted[cid]:
                result.refused[cid] = f"changed since the page was loaded (now {row.state})"
            elif row.state not in rule.from_states:
                result.refused[cid] = f"is {row.state}"
        ok = [cid for cid in sorted(wanted) if cid not in result.refused]
        if not ok:
            return result
        result.batch = _next_batch(session)
        old = apply_transition(session, "clip", action, ok, reviewed_at=func.now())
        for cid in ok:
            result.events[cid] = _record(
                session, action, [cid], [old[cid].state], actor, {"batch": result.batch}
            )
        return result

    return db.run(work)


def batch_events(session: Session, actor: str, batch: int, upto: int) -> list[int]:
    """The not-undone events of `actor`'s batch `batch` with ids up to `upto`."""
    ev = ReviewEvent
    return list(
        session.scalars(
            select(ev.id)
            .where(
                ev.id > batch,
                ev.id <= upto,
                ev.actor == actor,
                ev.action.in_(list(UNDO_EXPECTS)),
                ev.payload["batch"].as_integer() == batch,
                not_undone(),
            )
            .order_by(ev.id)
        )
    )


def undo_batch(db: Database, actor: str, batch: int, upto: int) -> list[int]:
    """Undo every event of the batch (those up to event `upto`) in one transaction; returns
    the clip ids. Refused as a whole (StaleActionError / InvalidTransitionError) when one
    clip had a later action or is no longer in the state its action left it in."""

    def work(session: Session) -> list[int]:
        event_ids = batch_events(session, actor, batch, upto)
        if not event_ids:
            raise InvalidTransitionError("clip", 0, "undo", "none", reason="nothing to undo")
        ev = ReviewEvent.__table__
        events = session.execute(select(ev).where(ev.c.id.in_(event_ids)).order_by(ev.c.id)).all()
        clip_ids = [c for e in events for c in e.clip_ids]
        rows = lock_rows(session, "clip", clip_ids)
        for e in events:
            for cid in e.clip_ids:
                newest = newest_event_on_clip(session, cid, ev.c.id, ev.c.action)
                if newest is not None and newest.id != e.id:
                    if newest.action == "purge":
                        raise InvalidTransitionError(
                            "clip",
                            cid,
                            "undo",
                            "archived",
                            reason="the archive job already deleted the files of clip "
                            f"{cid}; it cannot be restored",
                        )
                    raise StaleActionError(f"clip {cid} was changed by another action after yours")
                if rows[cid].state != UNDO_EXPECTS[e.action]:
                    raise InvalidTransitionError(
                        "clip", cid, "undo", rows[cid].state, (UNDO_EXPECTS[e.action],)
                    )
        for e in events:
            for cid, previous in zip(e.clip_ids, e.previous_states, strict=True):
                session.execute(
                    update(CLIPS)
                    .where(CLIPS.c.id == cid)
                    .values(state=previous, updated_at=func.now())
                )
            _record(
                session,
                "undo",
                list(e.clip_ids),
                [rows[c].state for c in e.clip_ids],
                actor,
                {"undone_action": e.action, "batch": batch},
                undoes=e.id,
            )
        return clip_ids

    return db.run(work)
