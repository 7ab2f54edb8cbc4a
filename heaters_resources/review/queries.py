"""Read side of the review app: the queue, one clip with everything shown beside it, similar
clips, and the progress of a reviewer's recent actions.

Every function takes a `Database` and returns plain dataclasses (no ORM objects leave a
session), so templates never trigger lazy loads and the app can run these in a thread pool.
Writes go through `heaters_resources.states` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, cast, func, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY

from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact, ReviewEvent, SourceVideo
from heaters_resources.review.history import EventView, NewClip, batched, describe
from heaters_resources.search import similarity, space
from heaters_resources.states import review as review_states

UNDOABLE = ("approve", "skip", "archive", "reopen", "request_merge", "request_split")
MERGEABLE_PREVIOUS = states.TRANSITIONS[("clip", "merge_into_next")].from_states
LIVE_STATES = (
    "spliced",
    "keyframing",
    "keyframed",
    "generating_sprite",
    "pending_review",
    "approved",
    "skipped",
    "embedding",
    "embedded",
)
ACTION_LABELS = {
    "approve": "Approved",
    "skip": "Skipped",
    "archive": "Archived",
    "reopen": "Reopened",
    "request_merge": "Merge",
    "request_split": "Split",
}


@dataclass(frozen=True)
class Sprite:
    artifact_id: int
    cols: int
    rows: int
    tiles: int
    tile_width: int
    tile_height: int
    sprite_fps: float
    duration: float


@dataclass(frozen=True)
class Keyframe:
    artifact_id: int
    tag: str
    timestamp: float | None


@dataclass(frozen=True)
class ClipView:
    id: int
    identifier: str
    state: str
    version: str
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    fps: float
    error: str | None
    has_file: bool
    video_id: int
    video_title: str
    video_source: str
    video_duration: float | None
    keyframes: list[Keyframe]
    sprite: Sprite | None
    previous_identifier: str | None
    previous_state: str | None
    previous_id: int | None = None

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def can_merge(self) -> bool:
        return self.previous_state in MERGEABLE_PREVIOUS

    @property
    def merge_reason(self) -> str:
        if self.previous_identifier is None:
            return "first clip of its video: nothing to merge with"
        if self.previous_state == "embedding":
            return "the previous clip is being embedded right now: retry in a minute"
        if not self.can_merge:
            return f"the previous clip is {self.previous_state}: it cannot be merged"
        return f"merge with {self.previous_identifier}"


@dataclass(frozen=True)
class SimilarClip:
    clip_id: int
    identifier: str
    distance: float
    state: str
    video_title: str
    thumb_artifact_id: int | None
    version: str = ""  # state@updated_at, for acting on it (the near-duplicates' archive)
    near_duplicate: bool = False  # closer than the space's near-duplicate distance


#: Neighbours closer than this are offered as near-duplicates to archive in one action: the
#: `heaters near-duplicates` default for learned models; the weights-free descriptor is
#: stricter (re-encoded copies measure < 0.01 in it, other shots of one scene from 0.03).
NEAR_DUPLICATE_DISTANCE = 0.05
DESCRIPTOR_NEAR_DUPLICATE_DISTANCE = 0.01
#: States the near-duplicate archive acts on: clips still waiting for a decision.
ARCHIVABLE_NEIGHBOURS = ("pending_review", "skipped")


def near_duplicates_to_archive(similar: list[SimilarClip]) -> list[SimilarClip]:
    """The neighbours the "archive near-duplicates" action would archive."""
    return [s for s in similar if s.near_duplicate and s.state in ARCHIVABLE_NEIGHBOURS]


RunLookup = Callable[[int], tuple[str, str] | None]


# --------------------------------------------------------------------------- queue


def queue_order() -> list[Any]:
    """Oldest video first, then the clips of a video in order: reviewers see a video's story."""
    return [SourceVideo.created_at, SourceVideo.id, Clip.start_frame]


def _queued(include_short: bool) -> list[Any]:
    """The queue's filter: pending clips, without the clips of short shots (issue 11: a shot
    under the minimum scene length is kept as its own clip but not put in front of
    reviewers) unless asked."""
    cond: list[Any] = [Clip.state == "pending_review"]
    if not include_short:
        cond.append(Clip.short.is_(False))
    return cond


def pending_clip_ids(db: Database, limit: int = 50, *, include_short: bool = False) -> list[int]:
    """The first `limit` pending clips in queue order.

    A sequential scan of `clips` with a top-N sort, on purpose: an index that could find pending
    clips (on `state`, or partial `WHERE state = 'pending_review'`) makes every state transition
    a non-HOT update, ten times slower (migration 0004 has the figures); the scan costs about
    0.3 s at a million clips.
    """
    with db.session() as s:
        return list(
            s.scalars(
                select(Clip.id)
                .join(SourceVideo)
                .where(*_queued(include_short))
                .order_by(*queue_order())
                .limit(limit)
            )
        )


def pending_count(db: Database, *, include_short: bool = False) -> int:
    """Pending clips; a sequential scan for the reason given in `pending_clip_ids`."""
    with db.session() as s:
        return int(s.scalar(select(func.count()).where(*_queued(include_short))) or 0)


def clip_view(db: Database, clip_id: int) -> ClipView | None:
    with db.session() as s:
        row = s.execute(
            select(Clip, SourceVideo).join(SourceVideo).where(Clip.id == clip_id)
        ).first()
        if row is None:
            return None
        clip, video = row
        arts = list(
            s.scalars(
                select(ClipArtifact)
                .where(ClipArtifact.clip_id == clip_id)
                .order_by(ClipArtifact.kind, ClipArtifact.id)
            )
        )
        prev = s.execute(
            select(Clip.id, Clip.identifier, Clip.state)
            .where(
                Clip.source_video_id == clip.source_video_id,
                Clip.end_frame <= clip.start_frame,
                Clip.superseded_at.is_(None),
            )
            .order_by(Clip.end_frame.desc())
            .limit(1)
        ).first()
    keyframes = sorted(
        (Keyframe(a.id, a.tag, a.meta.get("timestamp")) for a in arts if a.kind == "keyframe"),
        key=lambda k: (len(k.tag), k.tag),
    )
    sprite = next((_sprite(a) for a in arts if a.kind == "sprite_sheet"), None)
    return ClipView(
        id=clip.id,
        identifier=clip.identifier,
        state=clip.state,
        version=states.clip_version(clip.state, clip.updated_at),
        start_frame=clip.start_frame,
        end_frame=clip.end_frame,
        start_time=clip.start_time,
        end_time=clip.end_time,
        fps=clip.fps,
        error=clip.error,
        has_file=bool(clip.storage_key) or any(a.kind == "proxy" for a in arts),
        video_id=video.id,
        video_title=video.title or f"video {video.id}",
        video_source=video.source,
        video_duration=video.duration_s,
        keyframes=keyframes,
        sprite=sprite,
        previous_identifier=prev.identifier if prev else None,
        previous_state=prev.state if prev else None,
        previous_id=prev.id if prev else None,
    )


def _sprite(art: ClipArtifact) -> Sprite | None:
    m = art.meta
    try:
        return Sprite(
            art.id,
            int(m["cols"]),
            int(m["rows"]),
            int(m["frame_count"]),
            int(m["tile_width"]),
            int(m["tile_height"]),
            float(m["sprite_fps"]),
            float(m["duration"]),
        )
    except (KeyError, TypeError, ValueError):
        return None  # a sprite without usable metadata is not scrubbable: show none


def object_key(db: Database, kind: str, object_id: int) -> str | None:
    """Storage key of a clip file or an artifact, looked up by id (never taken from the URL).

    A clip not cut yet (HEATERS_CLIPS=proxy) plays its review proxy."""
    with db.session() as s:
        if kind == "clip":
            proxy = (
                select(ClipArtifact.storage_key)
                .where(ClipArtifact.clip_id == object_id, ClipArtifact.kind == "proxy")
                .order_by(ClipArtifact.id.desc())
                .limit(1)
                .scalar_subquery()
            )
            return s.scalar(
                select(func.coalesce(Clip.storage_key, proxy)).where(Clip.id == object_id)
            )
        return s.scalar(select(ClipArtifact.storage_key).where(ClipArtifact.id == object_id))


# --------------------------------------------------------------------------- similar clips


def similar_clips(db: Database, clip_id: int, k: int = 6) -> list[SimilarClip]:
    """Nearest live clips by the clip's stored embedding (none when it has no embedding).

    The space is one the clip has a vector in: the configured default model if it has one,
    else its newest. The search itself is `similarity.similar_clips`.
    """
    chosen = space.pick_space(space.clip_spaces(db, clip_id))
    if chosen is None:
        return []
    model_name, strategy = chosen
    neighbours = _neighbours(db, clip_id, k, model_name, strategy)
    if not neighbours:
        return []
    ids = [cid for cid, _ in neighbours]
    limit = (
        DESCRIPTOR_NEAR_DUPLICATE_DISTANCE
        if model_name == space.DESCRIPTOR_MODEL
        else NEAR_DUPLICATE_DISTANCE
    )
    with db.session() as s:
        rows = {
            r.id: r
            for r in s.execute(
                select(
                    Clip.id,
                    Clip.identifier,
                    Clip.state,
                    Clip.updated_at,
                    SourceVideo.title,
                    SourceVideo.id.label("video_id"),
                )
                .join(SourceVideo)
                .where(Clip.id.in_(ids))
            )
        }
        thumbs: dict[int, int] = {}
        for cid, aid in s.execute(
            select(ClipArtifact.clip_id, ClipArtifact.id)
            .where(ClipArtifact.clip_id.in_(ids), ClipArtifact.kind == "keyframe")
            .order_by(ClipArtifact.clip_id, ClipArtifact.tag != "50", ClipArtifact.id)
        ):
            thumbs.setdefault(cid, aid)
    return [
        SimilarClip(
            cid,
            rows[cid].identifier,
            dist,
            rows[cid].state,
            rows[cid].title or f"video {rows[cid].video_id}",
            thumbs.get(cid),
            states.clip_version(rows[cid].state, rows[cid].updated_at),
            dist < limit,
        )
        for cid, dist in neighbours
        if cid in rows
    ]


def _neighbours(
    db: Database, clip_id: int, k: int, model_name: str, strategy: str
) -> list[tuple[int, float]]:
    found = similarity.similar_clips(
        db, clip_id, k, model_name=model_name, strategy=strategy, clip_states=LIVE_STATES
    )
    return [(int(n.clip_id), float(n.distance)) for n in found]


# --------------------------------------------------------------------------- progress


def latest_undoable_event(db: Database, actor: str) -> tuple[int, list[int]] | None:
    """This reviewer's newest review action that has not been undone: (event id, clip ids)."""
    ev = ReviewEvent
    with db.session() as s:
        row = s.execute(
            select(ev.id, ev.clip_ids)
            .where(ev.actor == actor, ev.action.in_(UNDOABLE), review_states.not_undone())
            .order_by(ev.id.desc())
            .limit(1)
        ).first()
    return (int(row.id), list(row.clip_ids)) if row else None


def event_batch(db: Database, event_id: int) -> int | None:
    """The batch (`payload.batch`) of a review event, None for a single action."""
    with db.session() as s:
        payload = s.scalar(select(ReviewEvent.payload).where(ReviewEvent.id == event_id))
    batch = (payload or {}).get("batch")
    return int(batch) if isinstance(batch, int) else None


def latest_event_on_clip(db: Database, clip_id: int) -> tuple[int | None, str | None, str]:
    """(newest not-undone event id on the clip, its action, the clip's current version)."""
    with db.session() as s:
        row = review_states.newest_event_on_clip(s, clip_id, ReviewEvent.id, ReviewEvent.action)
        clip = s.execute(select(Clip.state, Clip.updated_at).where(Clip.id == clip_id)).one()
    version = states.clip_version(clip.state, clip.updated_at)
    return (int(row.id), row.action, version) if row else (None, None, version)


def recent_events(
    db: Database, actor: str, limit: int = 8, runs: RunLookup | None = None
) -> list[EventView]:
    """The reviewer's recent actions with what each did and what became of them (jobs, new
    clips, undo); the events of one batch are one entry."""
    ev = ReviewEvent
    with db.session() as s:
        events = (
            s.execute(
                select(ev)
                .where(ev.actor == actor, ev.action.in_(UNDOABLE))
                .order_by(ev.id.desc())
                .limit(limit * 25)  # a batch (up to a grid page) collapses into one entry
            )
            .scalars()
            .all()
        )
        ids = [e.id for e in events]
        clip_ids = sorted({c for e in events for c in e.clip_ids})
        undone = set(s.scalars(select(ev.undoes_event_id).where(ev.undoes_event_id.in_(ids))))
        purged = {
            c
            for row in s.scalars(
                select(ev.clip_ids).where(
                    ev.action == "purge", ev.clip_ids.overlap(cast(clip_ids, ARRAY(BigInteger)))
                )
            )
            for c in row
        }
        clips = {c.id: c for c in s.scalars(select(Clip).where(Clip.id.in_(clip_ids)))}
        children = (
            list(
                s.scalars(
                    select(Clip)
                    .where(
                        Clip.parent_clip_ids.overlap(cast(clip_ids, ARRAY(BigInteger))),
                        # the predicate of the partial index ix_clips_parent_clip_ids (0004)
                        Clip.parent_clip_ids != literal_column("'{}'::bigint[]"),
                    )
                    .order_by(Clip.start_frame)
                )
            )
            if clip_ids
            else []
        )
        snapshot = batched(events, limit)
    views = []
    for eid, action, created, cids, previous, event_ids in snapshot:
        idents = [clips[c].identifier for c in cids if c in clips]
        view = EventView(
            eid, action, ACTION_LABELS.get(action, action), created, idents, "done", ""
        )
        view.count = len(event_ids)
        view.did = f"{' / '.join(sorted(set(previous)))} → {review_states.UNDO_EXPECTS[action]}"
        kids = [
            NewClip(c.id, c.identifier, c.state)
            for c in children
            if set(c.parent_clip_ids) & set(cids)
        ]
        describe(
            view,
            [clips[c] for c in cids if c in clips],
            bool(undone & set(event_ids)),
            bool(set(cids) & purged),
            kids,
        )
        if runs is not None and action in ("archive", "request_merge", "request_split"):
            found = runs(eid)
            if found:
                view.run_id, view.run_status = found
        views.append(view)
    return views
