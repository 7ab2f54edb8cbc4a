"""Source-video transitions (new -> downloading -> downloaded -> splicing -> spliced) and the
bulk creation of a video's clips, which completes splicing in one transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from heaters_resources.db.engine import Database
from heaters_resources.db.models import (
    SourceVideo,
)
from heaters_resources.errors import (
    AlreadyExistsError,
    InvalidClipsError,
    NotFoundError,
)
from heaters_resources.states.core import (
    ARTIFACTS,
    CLIPS,
    EXCLUSION_VIOLATION,
    TABLES,
    attempts_counter,
    bulk_insert,
    check_transition,
    lock_rows,
    pgcode,
    schedule_deletion,
    single_transition,
    verify_objects,
)
from heaters_resources.states.table import (
    ClipSpec,
    TransitionResult,
)
from heaters_resources.store import keys

# ------------------------------------------------------------------------------ source videos


def create_source_video(
    db: Database, source: str, title: str | None = None, info: Mapping[str, Any] | None = None
) -> int:
    """Register a submitted video in state `new`; returns its id."""
    return register_source_video(db, source, title=title, info=info)[0]


def register_source_video(
    db: Database,
    source: str,
    *,
    fingerprint: str | None = None,
    title: str | None = None,
    info: Mapping[str, Any] | None = None,
) -> tuple[int, bool]:
    """Register a submitted video in state `new` unless a video with the same ``fingerprint``
    (`heaters_resources.fingerprint`) exists: (its id, True if created). Race-free: the
    fingerprint's unique index decides between two concurrent submissions."""

    def work(session: Session) -> tuple[int, bool]:
        stmt = pg_insert(SourceVideo).values(
            source=source, title=title, info=dict(info or {}), fingerprint=fingerprint
        )
        if fingerprint is not None:
            stmt = stmt.on_conflict_do_nothing(
                index_elements=[SourceVideo.fingerprint],
                index_where=SourceVideo.fingerprint.is_not(None),
            )
        created = session.execute(stmt.returning(SourceVideo.id)).scalar()
        if created is not None:
            return int(created), True
        found = session.execute(
            select(SourceVideo.id).where(SourceVideo.fingerprint == fingerprint)
        ).scalar_one()
        return int(found), False

    return db.run(work)


def _merged_info(column: Any, info: Mapping[str, Any]) -> Any:
    """``column || info``: the row's JSONB ``info`` with ``info``'s keys added or replaced."""
    return column.op("||")(literal(dict(info), JSONB))


def move_source(db: Database, video_id: int, source: str, info: Mapping[str, Any]) -> None:
    """The video's source file moved (inbox filing): its new place, and ``info`` merged into
    the row's ``info``. Not a state transition: the video's state is unchanged."""
    with db.session() as session:
        session.execute(
            update(SourceVideo)
            .where(SourceVideo.id == video_id)
            .values(source=source, info=_merged_info(SourceVideo.info, info), updated_at=func.now())
        )


def get_source_video(db: Database, video_id: int) -> SourceVideo:
    with db.session() as session:
        video = session.get(SourceVideo, video_id)
        if video is None:
            raise NotFoundError(f"source_video not found: {video_id}")
        return video


def start_downloading(db: Database, video_id: int, *, overwrite: bool = False) -> TransitionResult:
    return single_transition(
        db,
        "source_video",
        "start_downloading",
        video_id,
        overwrite=overwrite,
        **attempts_counter("source_video"),
    )


SOURCE_METADATA_FIELDS = frozenset(
    {
        "title",
        "duration_s",
        "fps",
        "frame_count",
        "width",
        "height",
        "video_codec",
        "audio_codec",
        "size_bytes",
        "uploader",
        "upload_date",
        "info",
    }
)


def complete_downloading(
    db: Database,
    video_id: int,
    *,
    original_key: str,
    normalized_key: str | None = None,
    store: Any = None,
    **metadata: Any,
) -> TransitionResult:
    """downloading -> downloaded, recording keys and media metadata; replaced keys are scheduled
    for deletion. Pass `store` to refuse keys whose objects are not in the store."""
    unknown = set(metadata) - SOURCE_METADATA_FIELDS
    if unknown:
        raise TypeError(f"unknown source video fields: {sorted(unknown)}")
    new_keys = [k for k in (original_key, normalized_key) if k]
    verify_objects(store, new_keys)

    def work(session: Session) -> TransitionResult:
        table = TABLES["source_video"]
        rows = lock_rows(
            session, "source_video", [video_id], table.c.original_key, table.c.normalized_key
        )
        to_state = check_transition("source_video", "complete_downloading", rows)
        old = rows[video_id]
        schedule_deletion(
            session,
            [k for k in (old.original_key, old.normalized_key) if k and k not in new_keys],
            "redownload",
        )
        values = dict(metadata)
        if isinstance(values.get("info"), Mapping):
            # merged: what registration recorded (inbox file, identity) outlives the ingest
            values["info"] = _merged_info(table.c.info, values["info"])
        session.execute(
            update(table)
            .where(table.c.id == video_id)
            .values(
                state=to_state,
                updated_at=func.now(),
                error=None,
                lease_id=None,
                original_key=original_key,
                normalized_key=normalized_key,
                **values,
            )
        )
        return TransitionResult("source_video", video_id, old.state, to_state)

    return db.run(work)


def start_splicing(
    db: Database,
    video_id: int,
    *,
    overwrite: bool = False,
    scene_params: Mapping[str, Any] | None = None,
) -> TransitionResult:
    extra: dict[str, Any] = {} if scene_params is None else {"scene_params": dict(scene_params)}
    return single_transition(
        db,
        "source_video",
        "start_splicing",
        video_id,
        overwrite=overwrite,
        **attempts_counter("source_video"),
        **extra,
    )


def _validate_clips(video_id: int, specs: Sequence[ClipSpec], frame_count: int | None) -> None:
    previous_end = -1
    for spec in sorted(specs, key=lambda s: s.start_frame):
        if spec.start_frame < 0 or spec.end_frame <= spec.start_frame:
            raise InvalidClipsError(
                f"video {video_id}: empty or negative clip [{spec.start_frame}, {spec.end_frame})"
            )
        if frame_count is not None and spec.end_frame > frame_count:
            raise InvalidClipsError(
                f"video {video_id}: clip [{spec.start_frame}, "
                f"{spec.end_frame}) ends after frame {frame_count}"
            )
        if spec.start_frame < previous_end:
            raise InvalidClipsError(
                f"video {video_id}: clip starting at {spec.start_frame} "
                f"overlaps the previous clip ending at {previous_end}"
            )
        previous_end = spec.end_frame


def _frame_count(video: Any) -> int | None:
    if video.frame_count is not None:
        return int(video.frame_count)
    if video.duration_s is not None and video.fps:
        return round(video.duration_s * video.fps)
    return None


def clip_rows(
    video_id: int, fps: float, specs: Iterable[ClipSpec], parents: Sequence[int] = ()
) -> list[dict[str, Any]]:
    rows = []
    for spec in specs:
        ident = keys.clip_identifier(video_id, spec.start_frame, spec.end_frame)
        rows.append(
            {
                "source_video_id": video_id,
                "identifier": ident,
                "start_frame": spec.start_frame,
                "end_frame": spec.end_frame,
                "start_time": spec.start_frame / fps,
                "end_time": spec.end_frame / fps,
                "fps": fps,
                "state": "spliced",
                "storage_key": (spec.storage_key or keys.clip_key(video_id, ident))
                if spec.cut
                else None,
                "parent_clip_ids": list(parents),
                "short": spec.short,
            }
        )
    return rows


def insert_clips(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    if not rows:
        return []
    try:
        with session.begin_nested():
            if any(r["parent_clip_ids"] for r in rows):  # lineage (merge/split): a few rows
                result = session.execute(
                    insert(CLIPS).returning(CLIPS.c.id, sort_by_parameter_order=True), rows
                )
                return [int(r) for r in result.scalars()]
            flat = [{k: v for k, v in r.items() if k != "parent_clip_ids"} for r in rows]
            by_ident = {
                r.identifier: int(r.id)
                for r in bulk_insert(session, CLIPS, flat, returning=("id", "identifier"))
            }
            return [by_ident[r["identifier"]] for r in rows]
    except IntegrityError as exc:
        if pgcode(exc) == EXCLUSION_VIOLATION:
            raise InvalidClipsError(f"clips overlap existing clips: {exc.orig}") from exc
        raise AlreadyExistsError(f"clip rows conflict with existing rows: {exc.orig}") from exc


def _clip_object_keys(session: Session, where: ColumnElement[bool]) -> list[str]:
    clip_keys = session.execute(select(CLIPS.c.storage_key).where(where)).scalars().all()
    art = session.execute(
        select(ARTIFACTS.c.storage_key, ARTIFACTS.c.sidecar_key)
        .join(CLIPS, CLIPS.c.id == ARTIFACTS.c.clip_id)
        .where(where)
    ).all()
    return [k for k in clip_keys if k] + [k for row in art for k in row if k]


def create_clips_from_splice(
    db: Database,
    video_id: int,
    clips: Sequence[ClipSpec],
    *,
    fps: float | None = None,
    overwrite: bool = False,
    store: Any = None,
) -> list[int]:
    """splicing -> spliced, inserting every clip in one transaction (all or nothing).

    Rejects overlapping clips, clips outside the video, and (without `overwrite`) a video that
    already has clips. With `overwrite`, the old clips, their artifacts and embeddings are deleted
    and their objects scheduled for deletion (keys reused by the new clips are kept).
    Returns the new clip ids in the order of `clips`.
    """

    def work(session: Session) -> list[int]:
        table = TABLES["source_video"]
        rows = lock_rows(
            session,
            "source_video",
            [video_id],
            table.c.fps,
            table.c.frame_count,
            table.c.duration_s,
        )
        to_state = check_transition("source_video", "complete_splicing", rows)
        video = rows[video_id]
        clip_fps = fps or video.fps
        if not clip_fps:
            raise InvalidClipsError(f"video {video_id}: fps unknown; pass fps=")
        _validate_clips(video_id, clips, _frame_count(video))
        new_rows = clip_rows(video_id, float(clip_fps), clips)
        verify_objects(store, [r["storage_key"] for r in new_rows])
        of_video = CLIPS.c.source_video_id == video_id
        existing = session.execute(select(func.count()).where(of_video)).scalar_one()
        if existing:
            if not overwrite:
                raise AlreadyExistsError(f"video {video_id} already has {existing} clips")
            keep = {r["storage_key"] for r in new_rows}
            old_keys = [k for k in _clip_object_keys(session, of_video) if k not in keep]
            schedule_deletion(session, old_keys, f"resplice video {video_id}")
            session.execute(delete(CLIPS).where(of_video))
        ids = insert_clips(session, new_rows)
        session.execute(
            update(table)
            .where(table.c.id == video_id)
            .values(state=to_state, error=None, lease_id=None, updated_at=func.now())
        )
        return ids

    return db.run(work)
