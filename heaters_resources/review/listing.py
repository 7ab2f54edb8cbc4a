"""Read side of the clip list (`/queue`, its JSON twin `/api/clips`, and the grid): every live
clip with filters, keyset pages, per-video progress.

Keyset pagination, not OFFSET: a page is "the next `limit` clips after (video, frame, id)",
which `ix_clips_source_video_id` walks in order, so page 2,000 costs what page 1 does (OFFSET
reads and throws away every row before the page). The page's ids come first, in one query
that names only `clips` columns; what is shown of them (video title, artifacts, embedding,
last reviewer) is read for those ids only, so no per-row subquery runs over the whole filter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import BigInteger, cast, exists, func, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY

from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import (
    CLIP_STATES,
    Clip,
    ClipArtifact,
    ClipEmbedding,
    ReviewEvent,
    SourceVideo,
)
from heaters_resources.review.queries import UNDOABLE, Sprite, _sprite
from heaters_resources.states.review import not_undone
from heaters_resources.states.table import REVIEW_OUTCOMES

#: States a reviewer has decided: the review outcomes of the transition table, and the
#: embedding states an approved clip moves on to.
REVIEWED_STATES = tuple(sorted(REVIEW_OUTCOMES | {"embedding", "embedded", "embedding_failed"}))
SHORT_CHOICES = ("no", "yes", "any")  # no: leave short shots out, as the review queue does
EMBEDDED_CHOICES = ("", "yes", "no")
MAX_LIMIT = 200
_INT = re.compile(r"[0-9]{1,18}")
_CURSOR = re.compile(r"([0-9]{1,18})\.([0-9]{1,18})\.([0-9]{1,18})")


@dataclass(frozen=True)
class Filters:
    state: str = ""
    video: int | None = None
    short: str = "no"
    embedded: str = ""
    reviewer: str = ""
    after: tuple[int, int, int] | None = None
    limit: int = 50
    #: Any of these states (the library's approved clips); not a query parameter: set by the page.
    states: tuple[str, ...] = ()

    def query(self, **changes: Any) -> str:
        """These filters (with `changes`) as a query string, defaults left out."""
        chosen = replace(self, **changes)
        pairs = []
        for f in fields(self):
            value = getattr(chosen, f.name)
            if value != f.default and f.name != "states":
                pairs.append((f.name, cursor(value) if f.name == "after" else str(value)))
        return urlencode(pairs)


def cursor(key: tuple[int, int, int]) -> str:
    return ".".join(str(k) for k in key)


def parse_filters(params: Mapping[str, str], **defaults: Any) -> Filters | str:
    """The filters of a query string, or a message saying which parameter is wrong."""
    base = Filters(**defaults)
    state = params.get("state", base.state)
    if state and state not in CLIP_STATES:
        return f"state must be one of {', '.join(CLIP_STATES)} (or empty for every state)"
    short = params.get("short", base.short)
    if short not in SHORT_CHOICES:
        return "short must be no, yes or any"
    embedded = params.get("embedded", base.embedded)
    if embedded not in EMBEDDED_CHOICES:
        return "embedded must be yes, no or empty"
    reviewer = params.get("reviewer", "")
    if len(reviewer) > 200:
        return "reviewer must be a reviewer's name"
    video: int | None = None
    if params.get("video"):
        if not _INT.fullmatch(params["video"]):
            return "video must be a video id (a positive whole number)"
        video = int(params["video"])
    limit = base.limit
    if params.get("limit"):
        if not _INT.fullmatch(params["limit"]) or not 1 <= int(params["limit"]) <= MAX_LIMIT:
            return f"limit must be 1 to {MAX_LIMIT}"
        limit = int(params["limit"])
    after = None
    if params.get("after"):
        found = _CURSOR.fullmatch(params["after"])
        if not found:
            return "after must be the `next` cursor of a previous page"
        a, b, c = (int(g) for g in found.groups())
        after = (a, b, c)
    return Filters(state, video, short, embedded, reviewer, after, limit, base.states)


@dataclass(frozen=True)
class ClipRow:
    id: int
    identifier: str
    state: str
    version: str
    video_id: int
    video_title: str
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    short: bool
    embedded: bool
    reviewer: str | None
    last_action: str | None
    keyframe_id: int | None
    sprite: Sprite | None

    def as_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sprite"}
        data["sprite"] = (
            None
            if self.sprite is None
            else {f.name: getattr(self.sprite, f.name) for f in fields(Sprite)}
        )
        return data


@dataclass(frozen=True)
class Progress:
    video_id: int
    title: str
    reviewed: int
    pending: int
    total: int  # live clips of the video that are not short shots
    short: int

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Page:
    clips: list[ClipRow]
    next: str | None


def _conditions(f: Filters) -> list[Any]:
    c = Clip
    cond: list[Any] = [c.superseded_at.is_(None)]
    if f.state:
        cond.append(c.state == f.state)
    elif f.states:
        cond.append(c.state.in_(f.states))
    if f.video is not None:
        cond.append(c.source_video_id == f.video)
    if f.short != "any":
        cond.append(c.short.is_(f.short == "yes"))
    if f.embedded:
        has = exists().where(ClipEmbedding.clip_id == c.id)
        cond.append(has if f.embedded == "yes" else ~has)
    if f.reviewer:
        ev = ReviewEvent
        acted = select(func.unnest(ev.clip_ids)).where(
            ev.actor == f.reviewer, ev.action.in_(UNDOABLE), not_undone()
        )
        cond.append(c.id.in_(acted))
    if f.after is not None:
        cond.append(tuple_(c.source_video_id, c.start_frame, c.id) > tuple_(*f.after))
    return cond


def list_clips(db: Database, f: Filters) -> Page:
    """One keyset page of the clips matching `f`, in (video, frame) order."""
    c = Clip
    with db.session() as s:
        keys = s.execute(
            select(c.id, c.source_video_id, c.start_frame)
            .where(*_conditions(f))
            .order_by(c.source_video_id, c.start_frame, c.id)
            .limit(f.limit + 1)
        ).all()
    more = len(keys) > f.limit
    keys = keys[: f.limit]
    rows = clip_rows(db, [k.id for k in keys])
    last = keys[-1] if keys else None
    return Page(
        rows, cursor((last.source_video_id, last.start_frame, last.id)) if more and last else None
    )


def clip_rows(db: Database, ids: Sequence[int]) -> list[ClipRow]:
    """The shown fields of clips `ids`, in that order."""
    if not ids:
        return []
    c, ev = Clip, ReviewEvent
    with db.session() as s:
        clips = {k.id: k for k in s.scalars(select(c).where(c.id.in_(list(ids))))}
        titles = dict(
            s.execute(
                select(c.id, SourceVideo.title).join(SourceVideo).where(c.id.in_(list(ids)))
            ).all()
        )
        embedded = set(
            s.scalars(select(ClipEmbedding.clip_id).where(ClipEmbedding.clip_id.in_(list(ids))))
        )
        arts = s.scalars(
            select(ClipArtifact)
            .where(ClipArtifact.clip_id.in_(list(ids)))
            .order_by(ClipArtifact.clip_id, ClipArtifact.tag != "50", ClipArtifact.id)
        ).all()
        keyframes: dict[int, int] = {}
        sprites: dict[int, Sprite | None] = {}
        for a in arts:
            if a.kind == "keyframe":
                keyframes.setdefault(a.clip_id, a.id)
            elif a.clip_id not in sprites:
                sprites[a.clip_id] = _sprite(a)
        acted: dict[int, tuple[int, str, str]] = {}
        for eid, actor, action, cids in s.execute(
            select(ev.id, ev.actor, ev.action, ev.clip_ids).where(
                ev.clip_ids.overlap(cast(list(ids), ARRAY(BigInteger))),
                ev.action.in_(UNDOABLE),
                not_undone(),
            )
        ):
            for cid in cids:
                if cid in clips and eid > acted.get(cid, (0, "", ""))[0]:
                    acted[cid] = (eid, actor, action)
        rows = []
        for cid in ids:
            k = clips.get(cid)
            if k is None:
                continue
            rows.append(
                ClipRow(
                    k.id,
                    k.identifier,
                    k.state,
                    states.clip_version(k.state, k.updated_at),
                    k.source_video_id,
                    titles.get(cid) or f"video {k.source_video_id}",
                    k.start_frame,
                    k.end_frame,
                    k.start_time,
                    k.end_time,
                    bool(k.short),
                    cid in embedded,
                    acted[cid][1] if cid in acted else None,
                    acted[cid][2] if cid in acted else None,
                    keyframes.get(cid),
                    sprites.get(cid),
                )
            )
    return rows


def progress(db: Database, video_ids: Sequence[int] | None = None) -> list[Progress]:
    """Per video: reviewed of all (live, not short) clips, pending, short. `None`: one row for
    the whole library (video id 0)."""
    c = Clip
    cols = [
        func.count().filter(c.state.in_(REVIEWED_STATES), c.short.is_(False)),
        func.count().filter(c.state == "pending_review", c.short.is_(False)),
        func.count().filter(c.short.is_(False)),
        func.count().filter(c.short.is_(True)),
    ]
    with db.session() as s:
        if video_ids is None:
            r = s.execute(select(*cols).where(c.superseded_at.is_(None))).one()
            return [Progress(0, "library", int(r[0]), int(r[1]), int(r[2]), int(r[3]))]
        if not video_ids:
            return []
        rows = s.execute(
            select(c.source_video_id, SourceVideo.title, *cols)
            .join(SourceVideo)
            .where(c.source_video_id.in_(list(video_ids)), c.superseded_at.is_(None))
            .group_by(c.source_video_id, SourceVideo.title)
            .order_by(c.source_video_id)
        ).all()
    return [
        Progress(int(r[0]), r[1] or f"video {r[0]}", int(r[2]), int(r[3]), int(r[4]), int(r[5]))
        for r in rows
    ]


def videos(db: Database, limit: int = 500) -> list[tuple[int, str]] | None:
    """(id, title) of every video for the video filter; None when there are more than `limit`
    (the filter is then a number field)."""
    with db.session() as s:
        rows = s.execute(
            select(SourceVideo.id, SourceVideo.title).order_by(SourceVideo.id).limit(limit + 1)
        ).all()
    if len(rows) > limit:
        return None
    return [(int(r.id), r.title or f"video {r.id}") for r in rows]
