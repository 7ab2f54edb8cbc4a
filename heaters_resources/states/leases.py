"""Leases: which worker holds a row in an in-progress state, whether it is still alive, and
the reaper that sends rows of dead workers back to a retryable state (ARCHITECTURE.md,
"Crash safety").

A worker killed mid-step (kill -9, OOM, a reboot, a lost node) cannot run its ``except``
clause, so before leases its video stayed ``splicing`` and its clips ``keyframing`` for ever:
no transition leads out of an in-progress state except the step's own completion or failure.

- Every transition *into* an in-progress state (`IN_PROGRESS`) records the current holder in
  the row's ``lease_id`` (the holder's row in ``leases``, upserted) and every transition out
  clears it (`states.core.apply_transition`). A nullable bigint keeps transitions HOT updates
  (migration 0005).
- A holder is one process (and, inside Dagster, one run): host, boot, pid and the pid's start
  time, the Dagster run id, and an expiry that a heartbeat thread renews while the process
  lives. Renewing is one UPDATE per process, not one per held row.
- A holder is dead when, on the same host, boot and pid namespace, its process is gone; when
  its Dagster run has ended; or, seen from anywhere else (another host, container, or after a
  reboot), when its expiry has passed.
- A row held by a dead holder goes to its step's failed state (the ``fail_*`` transition of
  `states.table`) with the reason ``interrupted: ...``. This happens inline, when a transition
  finds such a row in its way (re-materializing works from every state), and from the reaper
  sensor for rows nobody touches.

Clips in ``merging`` / ``splitting`` without a holder are requests whose run has not started
yet (the review sensor launches it): they are left alone.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
import time
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, delete, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, Lease, SourceVideo
from heaters_resources.settings import Settings
from heaters_resources.states.holders import (
    Holder,
    boot_scope,
    host_name,
    pid_alive,
    process_holder,
)
from heaters_resources.states.table import TRANSITIONS, Entity

log = logging.getLogger(__name__)

LEASES = typing.cast(Table, Lease.__table__)
ROW_TABLES: dict[Entity, Any] = {"source_video": SourceVideo.__table__, "clip": Clip.__table__}

# in-progress state -> the transition that fails it, per entity (read off the table).
IN_PROGRESS: dict[Entity, dict[str, str]] = {"source_video": {}, "clip": {}}
for (_entity, _action), _rule in TRANSITIONS.items():
    if _action.startswith("fail_"):
        for _state in _rule.from_states:
            IN_PROGRESS[_entity][_state] = _action
AWAITING_RUN = frozenset({"merging", "splitting"})
# Dagster run statuses after which nothing of the run is working any more.
ENDED_RUN_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})

RunStatus = Callable[[str], str | None]  # run id -> Dagster status name, None if unknown


def lease_seconds() -> float:
    """HEATERS_LEASE_SECONDS (default 120): how long a holder on another host stays alive
    without a heartbeat. On the holder's own host its process table answers at once."""
    return Settings.from_env().lease_seconds


# --------------------------------------------------------------------------------- holders


_current: contextvars.ContextVar[Holder | None] = contextvars.ContextVar(
    "heaters_lease_holder", default=None
)
_process: dict[int, Holder] = {}


def current_holder() -> Holder:
    """The holder set by `holding` (a Dagster run), else this process's own."""
    holder = _current.get()
    if holder is not None and holder.pid == os.getpid():
        return holder
    pid = os.getpid()
    if pid not in _process:
        _process[pid] = process_holder()
    return _process[pid]


def dead_reason(
    lease: Any | None, now: datetime, run_status: RunStatus | None = None
) -> str | None:
    """Why the holder of ``lease`` (a `leases` row, or None when it has none) is dead; None
    when it may still be working."""
    if lease is None:
        return "its worker left no lease"
    if lease.host == host_name() and lease.boot_id == boot_scope():
        if not pid_alive(lease.pid, lease.pid_start):
            return f"worker process {lease.pid} on {lease.host} is gone"
        return None  # alive here: the process table is the truth, expiry is for other hosts
    if run_status is not None and lease.run_id:
        status = run_status(lease.run_id)
        if status in ENDED_RUN_STATUSES:
            return f"Dagster run {lease.run_id} ended ({status})"
    if lease.expires_at < now:
        return f"lease of {lease.host}:{lease.pid} expired at {lease.expires_at:%Y-%m-%d %H:%M:%S}"
    return None


# ------------------------------------------------------------------------------- heartbeat


class _Heartbeat:
    """One daemon thread per process renewing the leases this process holds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owners: dict[str, tuple[int, Engine]] = {}
        self.pid = 0
        self.wake = threading.Event()

    def add(self, engine: Engine, owner: str, lease_id: int) -> None:
        with self.lock:
            if self.pid != os.getpid():  # a forked child: the parent's thread is not here
                self.owners, self.pid = {}, os.getpid()
                threading.Thread(target=self._run, name="heaters-lease", daemon=True).start()
            self.owners[owner] = (lease_id, engine)

    def discard(self, owner: str) -> None:
        with self.lock:
            self.owners.pop(owner, None)

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            # Short waits, so a changed HEATERS_LEASE_SECONDS applies within a second.
            self.wake.wait(min(1.0, lease_seconds() / 4))
            self.wake.clear()
            if time.monotonic() - last < lease_seconds() / 4:
                continue
            last = time.monotonic()
            with self.lock:
                owners = list(self.owners.items())
            for owner, (lease_id, engine) in owners:
                try:
                    with engine.begin() as conn:
                        conn.execute(
                            update(LEASES)
                            .where(LEASES.c.id == lease_id)
                            .values(expires_at=_expiry_sql())
                        )
                except Exception as exc:  # the database may be restarting: try next beat
                    log.warning("lease heartbeat for %s failed: %s", owner, exc)


_heartbeat = _Heartbeat()


def _expiry_sql() -> Any:
    return text(f"now() + interval '{lease_seconds():.3f} seconds'")


def take_lease(session: Session) -> int:
    """Upsert the current holder's lease row (in the caller's transaction) and keep it
    renewed; returns its id, to store in ``lease_id``."""
    holder = current_holder()
    row = {
        "owner": holder.owner,
        "run_id": holder.run_id,
        "host": holder.host,
        "boot_id": holder.boot_id,
        "pid": holder.pid,
        "pid_start": holder.pid_start,
        "expires_at": _expiry_sql(),
    }
    stmt = pg_insert(LEASES).values(**row)
    lease_id = session.execute(
        stmt.on_conflict_do_update(
            index_elements=[LEASES.c.owner], set_={"expires_at": stmt.excluded.expires_at}
        ).returning(LEASES.c.id)
    ).scalar_one()
    engine = session.get_bind()
    if isinstance(engine, Engine):
        _heartbeat.add(engine, holder.owner, int(lease_id))
    return int(lease_id)


@contextlib.contextmanager
def holding(db: Database, run_id: str | None) -> Iterator[Holder]:
    """Work as the holder of Dagster run ``run_id`` in this block (liveness also follows the
    run's status). On exit, rows the block still holds are interrupted and the lease dropped."""
    holder = process_holder(run_id)
    token = _current.set(holder)
    try:
        yield holder
    finally:
        _current.reset(token)
        _heartbeat.discard(holder.owner)
        try:
            release(db, holder.owner, "the step ended without finishing it")
        except Exception as exc:  # the database is gone: the reaper will do it later
            log.warning("could not release lease %s: %s", holder.owner, exc)


# ---------------------------------------------------------------------------------- reaping


@dataclass(frozen=True)
class Reaped:
    entity: Entity
    id: int
    state: str
    reason: str


def _interrupt(
    session: Session, entity: Entity, rows: Mapping[int, str], reasons: Mapping[int, str]
) -> list[Reaped]:
    """Move each row (id -> its in-progress state) through its step's fail transition."""
    table: Table = ROW_TABLES[entity]
    out = []
    for row_id, state in rows.items():
        action = IN_PROGRESS[entity][state]
        reason = f"interrupted: {reasons[row_id]}"
        session.execute(
            update(table)
            .where(table.c.id == row_id, table.c.state == state)
            .values(
                state=TRANSITIONS[(entity, action)].to_state,
                error=reason,
                lease_id=None,
                updated_at=text("now()"),
            )
        )
        out.append(Reaped(entity, row_id, state, reason))
    return out


def reap_locked(
    session: Session, entity: Entity, rows: Mapping[int, Any], run_status: RunStatus | None = None
) -> list[Reaped]:
    """Of rows already locked by the caller (id -> row with ``state``), interrupt those in an
    in-progress state whose holder is dead; their ``state`` in ``rows`` is not updated."""
    table = ROW_TABLES[entity]
    busy = [i for i, r in rows.items() if r.state in IN_PROGRESS[entity]]
    if not busy:
        return []
    owners: dict[int, int | None] = dict(
        session.execute(select(table.c.id, table.c.lease_id).where(table.c.id.in_(busy))).all()
    )
    return _reap_rows(
        session, entity, {i: rows[i].state for i in busy}, owners, run_status=run_status
    )


def _reap_rows(
    session: Session,
    entity: Entity,
    states: Mapping[int, str],
    owners: Mapping[int, int | None],
    run_status: RunStatus | None,
    dry_run: bool = False,
) -> list[Reaped]:
    wanted = {o for o in owners.values() if o is not None}
    leases = {row.id: row for row in session.execute(select(LEASES).where(LEASES.c.id.in_(wanted)))}
    now = session.execute(select(text("now()"))).scalar_one()
    dead: dict[int, str] = {}
    verdicts: dict[int, str | None] = {}
    for row_id, state in states.items():
        owner = owners.get(row_id)
        if owner is None:
            if state in AWAITING_RUN:
                continue  # requested; the review sensor has not started its run yet
            dead[row_id] = "no worker holds it"
            continue
        if owner not in verdicts:
            verdicts[owner] = dead_reason(leases.get(owner), now, run_status)
        if verdicts[owner] is not None:
            dead[row_id] = str(verdicts[owner])
    if dry_run:
        return [Reaped(entity, i, states[i], f"interrupted: {why}") for i, why in dead.items()]
    return _interrupt(session, entity, {i: states[i] for i in dead}, dead)


def reap(
    db: Database,
    *,
    entity: Entity | None = None,
    ids: Sequence[int] | None = None,
    video_ids: Sequence[int] | None = None,
    run_status: RunStatus | None = None,
    dry_run: bool = False,
) -> list[Reaped]:
    """Interrupt every row held by a dead holder (or only the rows ``ids`` of ``entity``, or
    only the videos ``video_ids`` and their clips), then, for a full sweep, drop the lease rows
    of dead holders that hold nothing. Rows locked by a running transition are skipped (their
    holder is evidently alive). ``dry_run`` only reports what it would do."""
    out: list[Reaped] = []
    for ent in [entity] if entity else list(ROW_TABLES):
        table = ROW_TABLES[ent]
        cond = [table.c.state.in_(list(IN_PROGRESS[ent]))]
        if ids is not None:
            cond.append(table.c.id.in_(list(ids)))
        if video_ids is not None:
            key = table.c.source_video_id if ent == "clip" else table.c.id
            cond.append(key.in_(list(video_ids)))

        def work(
            session: Session, ent: Entity = ent, cond: list[Any] = cond, table: Any = table
        ) -> list[Reaped]:
            rows = session.execute(
                select(table.c.id, table.c.state, table.c.lease_id)
                .where(*cond)
                .with_for_update(skip_locked=True)
            ).all()
            return _reap_rows(
                session,
                ent,
                {r.id: r.state for r in rows},
                {r.id: r.lease_id for r in rows},
                run_status,
                dry_run,
            )

        out += db.run(work)
    if ids is None and video_ids is None and not dry_run:
        drop_dead_leases(db, run_status)
    return out


def claim(db: Database, entity: Entity, ids: Sequence[int], state: str) -> list[int]:
    """Hold rows already in ``state`` (a requested merge or split whose run starts now):
    unheld rows and rows of dead holders become the current holder's. Returns the ids that
    are no longer in ``state`` (an undo came first); a row held by a live worker raises
    `ConflictError`."""
    from heaters_resources.errors import ConflictError

    table = ROW_TABLES[entity]

    def work(session: Session) -> list[int]:
        rows = {
            r.id: r
            for r in session.execute(
                select(table.c.id, table.c.state, table.c.lease_id)
                .where(table.c.id.in_(list(ids)))
                .with_for_update()
            )
        }
        gone = [i for i in ids if i not in rows or rows[i].state != state]
        mine = [i for i in ids if i not in gone]
        held = {rows[i].lease_id for i in mine if rows[i].lease_id is not None}
        leases = {r.id: r for r in session.execute(select(LEASES).where(LEASES.c.id.in_(held)))}
        now = session.execute(select(text("now()"))).scalar_one()
        me = current_holder().owner
        for lease_id in held:
            lease = leases.get(lease_id)
            if lease is not None and lease.owner != me and dead_reason(lease, now) is None:
                raise ConflictError(f"{entity} {mine} is being worked on by {lease.owner}")
        if mine:
            mine_id = take_lease(session)
            session.execute(update(table).where(table.c.id.in_(mine)).values(lease_id=mine_id))
        return gone

    return db.run(work)


def release(db: Database, owner: str, why: str) -> list[Reaped]:
    """Interrupt the rows ``owner`` still holds and drop its lease (the holder is leaving)."""

    def work(session: Session) -> list[Reaped]:
        out: list[Reaped] = []
        lease_id = session.scalar(select(LEASES.c.id).where(LEASES.c.owner == owner))
        if lease_id is None:
            return out
        for ent, table in ROW_TABLES.items():
            rows = session.execute(
                select(table.c.id, table.c.state)
                .where(table.c.lease_id == lease_id, table.c.state.in_(list(IN_PROGRESS[ent])))
                .with_for_update(skip_locked=True)
            ).all()
            states = {r.id: r.state for r in rows}
            out += _interrupt(session, ent, states, dict.fromkeys(states, why))
        session.execute(delete(LEASES).where(LEASES.c.id == lease_id))
        return out

    return db.run(work)


def drop_dead_leases(db: Database, run_status: RunStatus | None = None) -> int:
    """Delete lease rows whose holder is dead and holds no row in an in-progress state."""

    def work(session: Session) -> int:
        now = session.execute(select(text("now()"))).scalar_one()
        held = set()
        for ent, table in ROW_TABLES.items():
            held |= set(
                session.scalars(
                    select(table.c.lease_id)
                    .where(table.c.state.in_(list(IN_PROGRESS[ent])), table.c.lease_id.is_not(None))
                    .distinct()
                )
            )
        gone = [
            row.id
            for row in session.execute(select(LEASES))
            if row.id not in held and dead_reason(row, now, run_status) is not None
        ]
        if gone:
            session.execute(delete(LEASES).where(LEASES.c.id.in_(gone)))
        return len(gone)

    return db.run(work)


def dead_runs(db: Database, run_status: RunStatus) -> dict[str, str]:
    """Dagster runs that their status calls alive (STARTED ...) but whose every lease holder is
    dead: run id -> reason. The reaper sensor reports them failed, so run retries start again."""
    with db.session() as session:
        now = session.execute(select(text("now()"))).scalar_one()
        rows = list(session.execute(select(LEASES).where(LEASES.c.run_id.is_not(None))))
    verdict: dict[str, list[str | None]] = {}
    for row in rows:
        verdict.setdefault(row.run_id, []).append(dead_reason(row, now, None))
    out = {}
    for run_id, reasons in verdict.items():
        if all(r is not None for r in reasons) and run_status(run_id) not in ENDED_RUN_STATUSES:
            out[run_id] = str(reasons[0])
    return out
