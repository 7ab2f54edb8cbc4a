"""Who is reviewing: a named reviewer in the `reviewers` table, remembered by a cookie.

Why the database and a random key rather than the session: a browser session ends with the
browser, and the app's signing secret is random per process unless HEATERS_REVIEW_SECRET is
set, so neither survives a restart. The cookie holds the reviewer's random 128-bit `key`;
the name it maps to is what `review_events.actor` records, so undo, the recent-actions panel
and the queue's reviewer filter follow the person across browsers and restarts.

A browser that has not chosen a name gets a default one at its first action: on a
loopback-only app (no access token: one machine, usually one person) the `--reviewer` name;
with a token (several people may share it) `<--reviewer>@web-<8 hex of the session>`, as
before, but now kept. Choosing a name binds the browser to that reviewer (made if new). Names
identify, they do not authenticate: the access token is the authentication.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert

from heaters_resources.db.engine import Database
from heaters_resources.db.models import Reviewer

COOKIE = "heaters_reviewer"
#: Chrome keeps a cookie at most 400 days.
MAX_AGE = 400 * 24 * 3600
#: A chosen name: letters, digits and a few separators, 1 to 80 characters.
NAME = re.compile(r"[^\W_][\w .@'-]{0,79}")
_KEY = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Identity:
    name: str
    key: str | None  # None: not bound yet (the default name, made at the first action)


def clean_name(text: str) -> str | None:
    """`text` as a reviewer name (spaces collapsed), or None when it is not one."""
    name = " ".join(text.split())
    return name if NAME.fullmatch(name) else None


def find(db: Database, key: str | None) -> str | None:
    """The name the cookie's key belongs to (None for a missing, malformed or unknown key)."""
    if not key or not _KEY.fullmatch(key):
        return None
    with db.session() as s:
        return s.scalar(select(Reviewer.name).where(Reviewer.key == key))


def bind(db: Database, name: str) -> str:
    """The key of reviewer `name`, made if new; marks it seen."""
    table = cast(Table, Reviewer.__table__)
    stmt = (
        insert(table)
        .values(name=name, key=secrets.token_hex(16))
        .on_conflict_do_update(index_elements=[table.c.name], set_={"last_seen_at": func.now()})
        .returning(table.c.key)
    )
    with db.session() as s:
        return str(s.scalar(stmt))


def seen(db: Database, name: str) -> None:
    with db.session() as s:
        s.execute(update(Reviewer).where(Reviewer.name == name).values(last_seen_at=func.now()))


def names(db: Database, limit: int = 200) -> list[str]:
    """Reviewers, most recently seen first (the queue's reviewer filter)."""
    with db.session() as s:
        return list(
            s.scalars(select(Reviewer.name).order_by(Reviewer.last_seen_at.desc()).limit(limit))
        )


def cookie(key: str) -> str:
    return f"{COOKIE}={key}; Path=/; Max-Age={MAX_AGE}; HttpOnly; SameSite=Strict"
