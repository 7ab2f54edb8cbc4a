"""The Postgres machinery every transition uses: lock rows without waiting, check their states
against the table, update them, and the bulk-SQL helpers (one array literal per column).


Every allowed transition is a row of `TRANSITIONS`. Each public function runs in one transaction:
it locks the rows it changes (`SELECT ... FOR UPDATE NOWAIT`: a row locked by a concurrent
transition raises `ConflictError` at once instead of queueing behind it), checks the current state
against the table, and only then writes. Any refusal raises a typed error from
`heaters_resources.errors` and the transaction is rolled back, so nothing is written.

Objects are uploaded *before* the row that references them is committed, so a crash leaves at
worst an orphan object (found by `cleanup.find_orphan_objects`), never a row pointing at nothing.
Objects replaced by an overwrite are recorded in `pending_object_deletions` in the same
transaction and deleted after commit by `cleanup.purge_scheduled_deletions`.

Bulk paths (`create_clips_from_splice`, `*_many`) send each column as one array literal
(`INSERT ... SELECT FROM unnest(...)`, `id = ANY(...)`), not one ORM object per row, so 10,000
clips cost a handful of round trips; with migration 0003's fillfactor their transitions are
in-place (HOT) updates.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Table,
    Text,
    any_,
    case,
    cast,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from heaters_resources.db.engine import Database
from heaters_resources.db.models import (
    Clip,
    ClipArtifact,
    ClipEmbedding,
    PendingObjectDeletion,
    SourceVideo,
)
from heaters_resources.errors import (
    ConflictError,
    InvalidTransitionError,
    MissingObjectError,
    NotFoundError,
)
from heaters_resources.states import leases
from heaters_resources.states.table import (
    FAIL_STEPS,
    TRANSITIONS,
    Entity,
    TransitionResult,
)

TABLES: dict[Entity, Table] = {
    "source_video": typing.cast(Table, SourceVideo.__table__),
    "clip": typing.cast(Table, Clip.__table__),
}
CLIPS = TABLES["clip"]
ARTIFACTS = typing.cast(Table, ClipArtifact.__table__)
PENDING = typing.cast(Table, PendingObjectDeletion.__table__)
EMBEDDINGS = typing.cast(Table, ClipEmbedding.__table__)

LOCK_NOT_AVAILABLE = "55P03"
EXCLUSION_VIOLATION = "23P01"


# ----------------------------------------------------------------------------- core helpers


def pgcode(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "pgcode", None)


def lock_rows(
    session: Session, entity: Entity, ids: Sequence[int], *extra: ColumnElement[Any]
) -> dict[int, Any]:
    """Lock rows by id without waiting; raise NotFoundError / ConflictError."""
    table = TABLES[entity]
    stmt = (
        select(table.c.id, table.c.state, *extra)
        .where(any_id(table, ids))
        .order_by(table.c.id)
        .with_for_update(nowait=True)
    )
    try:
        rows = {row.id: row for row in session.execute(stmt)}
    except DBAPIError as exc:
        if pgcode(exc) == LOCK_NOT_AVAILABLE:
            raise ConflictError(
                f"{entity} {list(ids)[:5]} is locked by a concurrent transition"
            ) from exc
        raise
    missing = [i for i in ids if i not in rows]
    if missing:
        raise NotFoundError(f"{entity} not found: {missing[:10]}")
    return rows


_FLOAT_WORDS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def array_element(v: Any) -> str | None:
    """One element of an array literal; None for a type this module does not send this way."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, int):  # int() / float(): subclasses (IntEnum, numpy.float64) print oddly
        return str(int(v))
    if isinstance(v, float):
        text = repr(float(v))
        return _FLOAT_WORDS.get(text, text)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return None


def array_literal(values: Sequence[Any]) -> str | None:
    """PostgreSQL's text form of a one-dimensional array (`{1,2,"a b",NULL}`), or None when a
    value is not a plain str / int / float / bool.

    psycopg2 renders a Python list as `ARRAY[v1, v2, ...]`, one expression per element for the
    server to parse and fold: about 40 ms per 30,000-element column. The same array sent as one
    string costs the server a single array-input call (5-15 ms)."""
    parts = [array_element(v) for v in values]
    if any(p is None for p in parts):
        return None
    return "{" + ",".join(p for p in parts if p is not None) + "}"


def id_array(ids: Sequence[int]) -> ColumnElement[Any]:
    """`CAST('{1,2,...}' AS BIGINT[])`: one text parameter for any number of ids."""
    return cast(literal(array_literal([int(i) for i in ids]), Text()), ARRAY(BigInteger))


def any_id(table: Table, ids: Sequence[int]) -> ColumnElement[bool]:
    """`id = ANY(:ids)`: one array parameter instead of an IN list of 10^4 literals."""
    return table.c.id == any_(id_array(ids))


def check_transition(
    entity: Entity, action: str, rows: Mapping[int, Any], overwrite: bool = False
) -> str:
    rule = TRANSITIONS[(entity, action)]
    allowed = rule.from_states | (rule.overwrite_from if overwrite else frozenset())
    for row_id, row in rows.items():
        if row.state not in allowed:
            raise InvalidTransitionError(entity, row_id, action, row.state, allowed)
    return rule.to_state


def apply_transition(
    session: Session,
    entity: Entity,
    action: str,
    ids: Sequence[int],
    *,
    overwrite: bool = False,
    **values: Any,
) -> dict[int, Any]:
    """Lock, validate and move every row in `ids`; returns the locked rows (old states).

    A row found in an in-progress state whose holder is dead (`leases`) is first interrupted
    (moved to its step's failed state), so a retry works from every state. Moving into an
    in-progress state records the current holder; moving out clears it.
    """
    rows = lock_rows(session, entity, ids)
    rule = TRANSITIONS[(entity, action)]
    allowed = rule.from_states | (rule.overwrite_from if overwrite else frozenset())
    stuck = {i: r for i, r in rows.items() if r.state not in allowed}
    if stuck:
        for gone in leases.reap_locked(session, entity, stuck):
            to = TRANSITIONS[(entity, leases.IN_PROGRESS[entity][gone.state])].to_state
            rows[gone.id] = SimpleNamespace(id=gone.id, state=to)
    to_state = check_transition(entity, action, rows, overwrite)
    table = TABLES[entity]
    if to_state in leases.IN_PROGRESS[entity]:
        values["lease_id"] = leases.take_lease(session)
    else:
        values.setdefault("lease_id", None)
    session.execute(
        update(table)
        .where(any_id(table, ids))
        .values(state=to_state, updated_at=func.now(), **values)
    )
    return rows


def single_transition(
    db: Database,
    entity: Entity,
    action: str,
    entity_id: int,
    *,
    overwrite: bool = False,
    **values: Any,
) -> TransitionResult:
    def work(session: Session) -> TransitionResult:
        rows = apply_transition(session, entity, action, [entity_id], overwrite=overwrite, **values)
        return TransitionResult(
            entity, entity_id, rows[entity_id].state, TRANSITIONS[(entity, action)].to_state
        )

    return db.run(work)


def schedule_deletion(session: Session, storage_keys: Iterable[str], reason: str = "") -> int:
    """Record objects to delete after commit (idempotent per key)."""
    rows = [{"storage_key": k, "reason": reason} for k in dict.fromkeys(storage_keys) if k]
    if rows:
        session.execute(pg_insert(PENDING).on_conflict_do_nothing(), rows)
    return len(rows)


def verify_objects(store: Any, storage_keys: Iterable[str | None]) -> None:
    """Every key names an object in the store (None: no object, e.g. a clip not cut yet)."""
    if store is None:
        return
    missing = [k for k in storage_keys if k and not store.exists(k)]
    if missing:
        raise MissingObjectError(f"objects not in the store: {missing[:10]}")


def attempts_counter(entity: Entity = "clip") -> dict[str, Any]:
    """`attempts` counts tries of the current step: +1 on a retry from a failed state, else 1."""
    table = TABLES[entity]
    return {"attempts": case((table.c.state.like("%\\_failed"), table.c.attempts + 1), else_=1)}


def bulk_insert(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]], returning: Sequence[str] = ()
) -> list[Any]:
    """INSERT ... SELECT FROM unnest(<one array parameter per column>): one statement and one
    round trip for any number of rows (much cheaper than executemany for 10^4+ rows)."""
    if not rows:
        return []
    # Columns left at their defaults in every row are omitted (cheaper to send and to parse).
    cols = [
        c
        for c in rows[0]
        if any(r[c] is not None and r[c] != {} for r in rows)
        or (rows[0][c] == {} and table.c[c].server_default is None)
    ]
    dialect = session.get_bind().dialect
    casts = ", ".join(
        f"CAST(:c{i} AS {table.c[c].type.compile(dialect=dialect)}[])" for i, c in enumerate(cols)
    )
    params: dict[str, Any] = {}
    for i, c in enumerate(cols):
        values = [r[c] for r in rows]
        if isinstance(table.c[c].type, JSONB):
            values = [json.dumps(v) for v in values]
        params[f"c{i}"] = array_literal(values) or values
    sql = f"INSERT INTO {table.name} ({', '.join(cols)}) SELECT * FROM unnest({casts})"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    result = session.execute(text(sql), params)
    return list(result) if returning else []


def start_many(db: Database, action: str, clip_ids: Sequence[int], overwrite: bool) -> int:
    ids = list(dict.fromkeys(clip_ids))
    db.run(
        lambda s: apply_transition(
            s, "clip", action, ids, overwrite=overwrite, **attempts_counter()
        )
    )
    return len(ids)


def mark_failed(
    db: Database, entity: Entity, entity_id: int, step: str, error: str
) -> TransitionResult:
    """Move a row from a step's in-progress state to that step's failed state, keeping `error`."""
    if step not in FAIL_STEPS.get(entity, ()):
        raise ValueError(f"unknown step {step!r} for {entity}; one of {FAIL_STEPS.get(entity)}")
    return single_transition(db, entity, f"fail_{step}", entity_id, error=error[:10_000])
