"""Soft queue claims in the database, so two reviewers are shown different clips.

A claim is one `review_claims` row (clip, holder = the browser session, expiry). They live in
Postgres, not in the review process: a restart keeps them, two `heaters review` processes on
one database see each other's, and an expired claim is simply a row whose `expires_at` passed
(deleted by the next pick). Taking a claim is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE`
the old claim is the caller's own or expired, so two sessions picking at once can never both
get a clip. Claims only steer the queue: correctness does not depend on them (the version
check in the state layer refuses a second action on a clip whatever the claims say).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from sqlalchemy import Table, delete, func, select
from sqlalchemy.dialects.postgresql import insert

from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ReviewClaim

CLAIMS = cast(Table, ReviewClaim.__table__)


@dataclass(frozen=True)
class Holder:
    session: str
    reviewer: str


class Claims:
    """Claims of `ttl_seconds` each on the clips a session is shown."""

    def __init__(self, db: Database, ttl_seconds: float = 300.0) -> None:
        self.db = db
        self.ttl = timedelta(seconds=ttl_seconds)

    def pick(
        self, candidates: Sequence[int], sid: str, reviewer: str = "", n: int = 1
    ) -> list[int]:
        """Up to `n` of `candidates` for session `sid`, in candidate order: the ones it holds
        already first, then unclaimed ones; they are (re)claimed and its other claims dropped."""
        table = CLAIMS
        with self.db.session() as s:
            s.execute(delete(table).where(table.c.expires_at < func.now()))
            held = dict(
                s.execute(
                    select(table.c.clip_id, table.c.holder).where(
                        table.c.clip_id.in_(list(candidates))
                    )
                ).all()
            )
            mine = [c for c in candidates if held.get(c) == sid]
            free = [c for c in candidates if c not in held]
            wanted = (mine + free)[:n]
            s.execute(
                delete(table).where(table.c.holder == sid, table.c.clip_id.not_in(wanted or [0]))
            )
            if not wanted:
                return []
            values = insert(table).values(
                [
                    {
                        "clip_id": c,
                        "holder": sid,
                        "reviewer": reviewer[:200],
                        "expires_at": func.now() + self.ttl,
                    }
                    for c in wanted
                ]
            )
            stmt = values.on_conflict_do_update(
                index_elements=[table.c.clip_id],
                set_={
                    "holder": values.excluded.holder,
                    "reviewer": values.excluded.reviewer,
                    "expires_at": values.excluded.expires_at,
                },
                # a concurrent session may have claimed it since the read above: keep theirs
                where=(table.c.holder == sid) | (table.c.expires_at < func.now()),
            ).returning(table.c.clip_id)
            got = set(s.scalars(stmt))
        return [c for c in wanted if c in got]

    def holders(self, clip_ids: Sequence[int]) -> dict[int, Holder]:
        """Live claims on `clip_ids`."""
        table = CLAIMS
        with self.db.session() as s:
            rows = s.execute(
                select(table.c.clip_id, table.c.holder, table.c.reviewer).where(
                    table.c.clip_id.in_(list(clip_ids)), table.c.expires_at >= func.now()
                )
            ).all()
        return {r.clip_id: Holder(r.holder, r.reviewer) for r in rows}

    def holder(self, clip_id: int) -> str | None:
        found = self.holders([clip_id]).get(clip_id)
        return found.session if found else None

    def held_by_others(self, sid: str) -> int:
        """Pending clips open in another session's page (claimed, so not shown here)."""
        table = CLAIMS
        with self.db.session() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(table.join(Clip.__table__, Clip.id == table.c.clip_id))
                    .where(
                        table.c.holder != sid,
                        table.c.expires_at >= func.now(),
                        Clip.state == "pending_review",
                    )
                )
                or 0
            )

    def release(self, clip_ids: Sequence[int], sid: str) -> None:
        table = CLAIMS
        with self.db.session() as s:
            s.execute(
                delete(table).where(table.c.clip_id.in_(list(clip_ids)), table.c.holder == sid)
            )
