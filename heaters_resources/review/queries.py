"""Read side of the review app: the queue, one clip with everything shown beside it, similar
clips, and the progress of a reviewer's recent actions.

Every function takes a `Database` and returns plain dataclasses (no ORM objects leave a
session), so templates never trigger lazy loads and the app can run these in a thread pool.
Writes go through `heaters_resources.states` only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, cast, func, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY

from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact, ClipEmbedding, ReviewEvent, SourceVideo
from heaters_resources.search import similarity, space
from heaters_resources.states import review as review_states

UNDOABLE = ("approve", "skip", "archive", "request_merge", "request_split")
MERGEABLE_PREVIOUS = frozenset({"pending_review", "approved", "skipped"})
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
        if not self.can_merge:
            return f"previous clip is {self.previous_state}"
        return f"merge with {self.previous_identifier}"


@dataclass(frozen=True)
class SimilarClip:
    clip_id: int
    identifier: str
    distance: float
    state: str
    video_title: str
    thumb_artifact_id: int | None


@dataclass
class NewClip:
    id: int
    identifier: str
    state: str


@dataclass
class EventView:
    id: int
    action: str
    label: str
    created_at: datetime
    identifiers: list[str]
    status: str  # pending | done | failed | undone
    text: str
    new_clips: list[NewClip] = field(default_factory=list)
    run_status: str | None = None
    run_id: str | None = None

    @property
    def pending(self) -> bool:
        return self.status == "pending"


RunLookup = Callable[[int], tuple[str, str] | None]


# --------------------------------------------------------------------------- queue


def queue_order() -> list[Any]:
    """Oldest video first, then the clips of a video in order: reviewers see a video's story."""
    return [SourceVideo.created_at, SourceVideo.id, Clip.start_frame]


def pending_clip_ids(db: Database, limit: int = 50) -> list[int]:
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
                .where(Clip.state == "pending_review")
                .order_by(*queue_order())
                .limit(limit)
            )
        )


def pending_count(db: Database) -> int:
    """Pending clips; a sequential scan for the reason given in `pending_clip_ids`."""
    with db.session() as s:
        return int(s.scalar(select(func.count()).where(Clip.state == "pending_review")) or 0)


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
            select(Clip.identifier, Clip.state)
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
        has_file=bool(clip.storage_key),
        video_id=video.id,
        video_title=video.title or f"video {video.id}",
        video_source=video.source,
        video_duration=video.duration_s,
        keyframes=keyframes,
        sprite=sprite,
        previous_identifier=prev.identifier if prev else None,
        previous_state=prev.state if prev else None,
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
    """Storage key of a clip file or an artifact, looked up by id (never taken from the URL)."""
    with db.session() as s:
        if kind == "clip":
            return s.scalar(select(Clip.storage_key).where(Clip.id == object_id))
        return s.scalar(select(ClipArtifact.storage_key).where(ClipArtifact.id == object_id))


# --------------------------------------------------------------------------- similar clips


def similar_clips(db: Database, clip_id: int, k: int = 6) -> list[SimilarClip]:
    """Nearest live clips by the clip's stored embedding (none when it has no embedding).

    The space is one the clip has a vector in: the configured default model if it has one,
    else its newest. The search itself is `similarity.similar_clips`.
    """
    with db.session() as s:
        spaces = s.execute(
            select(ClipEmbedding.model_name, ClipEmbedding.generation_strategy)
            .where(ClipEmbedding.clip_id == clip_id)
            .order_by(ClipEmbedding.created_at.desc())
        ).all()
    if not spaces:
        return []
    chosen = next((sp for sp in spaces if sp.model_name == space.default_model()), spaces[0])
    neighbours = _neighbours(db, clip_id, k, chosen.model_name, chosen.generation_strategy)
    if not neighbours:
        return []
    ids = [cid for cid, _ in neighbours]
    with db.session() as s:
        rows = {
            r.id: r
            for r in s.execute(
                select(
                    Clip.id,
                    Clip.identifier,
                    Clip.state,
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
    """The reviewer's recent actions with what became of them (jobs, new clips, undo)."""
    ev = ReviewEvent
    with db.session() as s:
        events = (
            s.execute(
                select(ev)
                .where(ev.actor == actor, ev.action.in_(UNDOABLE))
                .order_by(ev.id.desc())
                .limit(limit)
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
        snapshot = [(e.id, e.action, e.created_at, list(e.clip_ids)) for e in events]
    views = []
    for eid, action, created, cids in snapshot:
        idents = [clips[c].identifier for c in cids if c in clips]
        view = EventView(
            eid, action, ACTION_LABELS.get(action, action), created, idents, "done", ""
        )
        kids = [
            NewClip(c.id, c.identifier, c.state)
            for c in children
            if set(c.parent_clip_ids) & set(cids)
        ]
        _describe(
            view,
            [clips[c] for c in cids if c in clips],
            eid in undone,
            bool(set(cids) & purged),
            kids,
        )
        if runs is not None and action in ("archive", "request_merge", "request_split"):
            found = runs(eid)
            if found:
                view.run_id, view.run_status = found
        views.append(view)
    return views


def _describe(
    view: EventView, clips: Sequence[Clip], undone: bool, purged: bool, kids: list[NewClip]
) -> None:
    states_now = {c.state for c in clips}
    if undone:
        view.status, view.text = "undone", "undone"
    elif view.action in ("approve", "skip"):
        view.text = ", ".join(sorted(states_now))
    elif view.action == "archive":
        if purged:
            view.text = "archived; its files were deleted by the archive job"
        elif states_now == {"archived"}:
            view.status = "pending"
            view.text = "archived; files are deleted after the grace period (undo until then)"
        else:
            view.text = ", ".join(sorted(states_now))
    elif kids:
        view.new_clips = kids
        waiting = [
            k
            for k in kids
            if k.state in ("spliced", "keyframing", "keyframed", "generating_sprite")
        ]
        view.status = "pending" if waiting else "done"
        view.text = "new clips: keyframes and sprites being made" if waiting else "new clips ready"
    elif states_now <= {"merging", "splitting"}:
        view.status, view.text = "pending", "waiting for the Dagster run"
    else:
        errors = "; ".join(c.error for c in clips if c.error)
        view.status = "failed"
        view.text = f"failed: {errors}" if errors else f"clips now {', '.join(sorted(states_now))}"
