"""The state machine of design.md, in one module.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Table,
    Text,
    any_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from heaters_resources import keys
from heaters_resources.db import Database
from heaters_resources.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidClipsError,
    InvalidTransitionError,
    MissingObjectError,
    NotFoundError,
)
from heaters_resources.models import (
    Clip,
    ClipArtifact,
    ClipEmbedding,
    PendingObjectDeletion,
    ReviewEvent,
    SourceVideo,
)

Entity = Literal["source_video", "clip"]


@dataclass(frozen=True)
class Transition:
    """`from_states -> to_state`; `overwrite_from` is also allowed when re-running a done step."""

    from_states: frozenset[str]
    to_state: str
    overwrite_from: frozenset[str] = frozenset()


def _t(src: Iterable[str], dst: str, overwrite: Iterable[str] = ()) -> Transition:
    return Transition(frozenset(src), dst, frozenset(overwrite))


REVIEW_OUTCOMES = frozenset({"approved", "skipped", "archived", "merging", "splitting"})

TRANSITIONS: dict[tuple[Entity, str], Transition] = {
    # source video: new -> downloading -> downloaded -> splicing -> spliced
    ("source_video", "start_downloading"): _t(
        {"new", "ingestion_failed"}, "downloading", {"downloaded", "splicing_failed"}),
    ("source_video", "complete_downloading"): _t({"downloading"}, "downloaded"),
    ("source_video", "start_splicing"): _t(
        {"downloaded", "splicing_failed"}, "splicing", {"spliced"}),
    ("source_video", "complete_splicing"): _t({"splicing"}, "spliced"),
    ("source_video", "fail_download"): _t({"downloading"}, "ingestion_failed"),
    ("source_video", "fail_splice"): _t({"splicing"}, "splicing_failed"),
    # clip processing: spliced -> keyframing -> keyframed -> generating_sprite -> pending_review
    ("clip", "start_keyframing"): _t(
        {"spliced", "keyframing_failed"}, "keyframing",
        {"keyframed", "sprite_failed", "pending_review"}),
    ("clip", "complete_keyframing"): _t({"keyframing"}, "keyframed"),
    ("clip", "start_sprite_generation"): _t(
        {"keyframed", "sprite_failed"}, "generating_sprite", {"pending_review"}),
    ("clip", "complete_sprite_generation"): _t({"generating_sprite"}, "pending_review"),
    # review
    ("clip", "approve"): _t({"pending_review"}, "approved"),
    ("clip", "skip"): _t({"pending_review"}, "skipped"),
    ("clip", "archive"): _t({"pending_review", "skipped"}, "archived"),
    ("clip", "request_merge"): _t({"pending_review"}, "merging"),
    ("clip", "merge_into_next"): _t({"pending_review", "approved", "skipped"}, "merging"),
    ("clip", "request_split"): _t({"pending_review"}, "splitting"),
    ("clip", "complete_merge"): _t({"merging"}, "archived"),
    ("clip", "complete_split"): _t({"splitting"}, "archived"),
    ("clip", "undo"): _t(REVIEW_OUTCOMES, "pending_review"),
    # embedding: approved -> embedding -> embedded
    ("clip", "start_embedding"): _t({"approved", "embedding_failed"}, "embedding", {"embedded"}),
    ("clip", "complete_embedding"): _t({"embedding"}, "embedded"),
    # failures (retryable: the failed state is a start state of the same step)
    ("clip", "fail_keyframe"): _t({"keyframing"}, "keyframing_failed"),
    ("clip", "fail_sprite"): _t({"generating_sprite"}, "sprite_failed"),
    ("clip", "fail_embedding"): _t({"embedding"}, "embedding_failed"),
    ("clip", "fail_merge"): _t({"merging"}, "pending_review"),
    ("clip", "fail_split"): _t({"splitting"}, "pending_review"),
}

FAIL_STEPS: dict[Entity, tuple[str, ...]] = {
    "source_video": ("download", "splice"),
    "clip": ("keyframe", "sprite", "embedding", "merge", "split"),
}

_TABLES: dict[Entity, Table] = {
    "source_video": SourceVideo.__table__,  # type: ignore[dict-item]
    "clip": Clip.__table__,  # type: ignore[dict-item]
}
_CLIPS: Table = Clip.__table__  # type: ignore[assignment]
_ARTIFACTS: Table = ClipArtifact.__table__  # type: ignore[assignment]
_PENDING: Table = PendingObjectDeletion.__table__  # type: ignore[assignment]

LOCK_NOT_AVAILABLE = "55P03"
EXCLUSION_VIOLATION = "23P01"


# ---------------------------------------------------------------------------- specs and results


@dataclass(frozen=True)
class ClipSpec:
    """One clip of a splice: frames [start_frame, end_frame), end exclusive."""

    start_frame: int
    end_frame: int
    storage_key: str | None = None  # default: keys.clip_key(video_id, identifier)


@dataclass(frozen=True)
class ArtifactSpec:
    """One derived object of a clip (a keyframe or a sprite sheet) already in the store."""

    kind: Literal["keyframe", "sprite_sheet"]
    strategy: str
    storage_key: str
    tag: str = ""
    sidecar_key: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TransitionResult:
    entity: Entity
    id: int
    from_state: str
    to_state: str


# ----------------------------------------------------------------------------- core helpers


def _pgcode(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "pgcode", None)


def _lock(session: Session, entity: Entity, ids: Sequence[int],
          *extra: ColumnElement[Any]) -> dict[int, Any]:
    """Lock rows by id without waiting; raise NotFoundError / ConflictError."""
    table = _TABLES[entity]
    stmt = (select(table.c.id, table.c.state, *extra).where(_any(table, ids))
            .order_by(table.c.id).with_for_update(nowait=True))
    try:
        rows = {row.id: row for row in session.execute(stmt)}
    except DBAPIError as exc:
        if _pgcode(exc) == LOCK_NOT_AVAILABLE:
            raise ConflictError(f"{entity} {list(ids)[:5]} is locked by a concurrent transition"
                                ) from exc
        raise
    missing = [i for i in ids if i not in rows]
    if missing:
        raise NotFoundError(f"{entity} not found: {missing[:10]}")
    return rows


_FLOAT_WORDS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _array_element(v: Any) -> str | None:
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


def _array_literal(values: Sequence[Any]) -> str | None:
    """PostgreSQL's text form of a one-dimensional array (`{1,2,"a b",NULL}`), or None when a
    value is not a plain str / int / float / bool.

    psycopg2 renders a Python list as `ARRAY[v1, v2, ...]`, one expression per element for the
    server to parse and fold: about 40 ms per 30,000-element column. The same array sent as one
    string costs the server a single array-input call (5-15 ms)."""
    parts = [_array_element(v) for v in values]
    if any(p is None for p in parts):
        return None
    return "{" + ",".join(parts) + "}"  # type: ignore[arg-type]


def _id_array(ids: Sequence[int]) -> ColumnElement[Any]:
    """`CAST('{1,2,...}' AS BIGINT[])`: one text parameter for any number of ids."""
    return cast(literal(_array_literal([int(i) for i in ids]), Text()), ARRAY(BigInteger))


def _any(table: Table, ids: Sequence[int]) -> ColumnElement[bool]:
    """`id = ANY(:ids)`: one array parameter instead of an IN list of 10^4 literals."""
    return table.c.id == any_(_id_array(ids))


def _check(entity: Entity, action: str, rows: Mapping[int, Any], overwrite: bool = False) -> str:
    rule = TRANSITIONS[(entity, action)]
    allowed = rule.from_states | (rule.overwrite_from if overwrite else frozenset())
    for row_id, row in rows.items():
        if row.state not in allowed:
            raise InvalidTransitionError(entity, row_id, action, row.state, allowed)
    return rule.to_state


def _apply(session: Session, entity: Entity, action: str, ids: Sequence[int], *,
           overwrite: bool = False, **values: Any) -> dict[int, Any]:
    """Lock, validate and move every row in `ids`; returns the locked rows (old states)."""
    rows = _lock(session, entity, ids)
    to_state = _check(entity, action, rows, overwrite)
    table = _TABLES[entity]
    session.execute(update(table).where(_any(table, ids))
                    .values(state=to_state, updated_at=func.now(), **values))
    return rows


def _single(db: Database, entity: Entity, action: str, entity_id: int, *,
            overwrite: bool = False, **values: Any) -> TransitionResult:
    def work(session: Session) -> TransitionResult:
        rows = _apply(session, entity, action, [entity_id], overwrite=overwrite, **values)
        return TransitionResult(entity, entity_id, rows[entity_id].state,
                                TRANSITIONS[(entity, action)].to_state)

    return db.run(work)


def schedule_deletion(session: Session, storage_keys: Iterable[str], reason: str = "") -> int:
    """Record objects to delete after commit (idempotent per key)."""
    rows = [{"storage_key": k, "reason": reason} for k in dict.fromkeys(storage_keys) if k]
    if rows:
        session.execute(pg_insert(_PENDING).on_conflict_do_nothing(), rows)
    return len(rows)


def _verify(store: Any, storage_keys: Iterable[str]) -> None:
    if store is None:
        return
    missing = [k for k in storage_keys if not store.exists(k)]
    if missing:
        raise MissingObjectError(f"objects not in the store: {missing[:10]}")


def _attempts(entity: Entity = "clip") -> dict[str, Any]:
    """`attempts` counts tries of the current step: +1 on a retry from a failed state, else 1."""
    table = _TABLES[entity]
    return {"attempts": case((table.c.state.like("%\\_failed"), table.c.attempts + 1),
                             else_=1)}


def _bulk_insert(session: Session, table: Table, rows: Sequence[Mapping[str, Any]],
                 returning: Sequence[str] = ()) -> list[Any]:
    """INSERT ... SELECT FROM unnest(<one array parameter per column>): one statement and one
    round trip for any number of rows (much cheaper than executemany for 10^4+ rows)."""
    if not rows:
        return []
    # Columns left at their defaults in every row are omitted (cheaper to send and to parse).
    cols = [c for c in rows[0] if any(r[c] is not None and r[c] != {} for r in rows)
            or (rows[0][c] == {} and table.c[c].server_default is None)]
    dialect = session.get_bind().dialect
    casts = ", ".join(f"CAST(:c{i} AS {table.c[c].type.compile(dialect=dialect)}[])"
                      for i, c in enumerate(cols))
    params: dict[str, Any] = {}
    for i, c in enumerate(cols):
        values = [r[c] for r in rows]
        if isinstance(table.c[c].type, JSONB):
            values = [json.dumps(v) for v in values]
        params[f"c{i}"] = _array_literal(values) or values
    sql = f"INSERT INTO {table.name} ({', '.join(cols)}) SELECT * FROM unnest({casts})"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    result = session.execute(text(sql), params)
    return list(result) if returning else []


# ------------------------------------------------------------------------------ source videos


def create_source_video(db: Database, source: str, title: str | None = None,
                        info: Mapping[str, Any] | None = None) -> int:
    """Register a submitted video in state `new`; returns its id."""
    def work(session: Session) -> int:
        return int(session.execute(
            insert(SourceVideo).values(source=source, title=title, info=dict(info or {}))
            .returning(SourceVideo.id)).scalar_one())

    return db.run(work)


def get_source_video(db: Database, video_id: int) -> SourceVideo:
    with db.session() as session:
        video = session.get(SourceVideo, video_id)
        if video is None:
            raise NotFoundError(f"source_video not found: {video_id}")
        return video


def start_downloading(db: Database, video_id: int, *, overwrite: bool = False) -> TransitionResult:
    return _single(db, "source_video", "start_downloading", video_id, overwrite=overwrite,
                   **_attempts("source_video"))


SOURCE_METADATA_FIELDS = frozenset({
    "title", "duration_s", "fps", "frame_count", "width", "height", "video_codec",
    "audio_codec", "size_bytes", "uploader", "upload_date", "info",
})


def complete_downloading(db: Database, video_id: int, *, original_key: str,
                         normalized_key: str | None = None, store: Any = None,
                         **metadata: Any) -> TransitionResult:
    """downloading -> downloaded, recording keys and media metadata; replaced keys are scheduled
    for deletion. Pass `store` to refuse keys whose objects are not in the store."""
    unknown = set(metadata) - SOURCE_METADATA_FIELDS
    if unknown:
        raise TypeError(f"unknown source video fields: {sorted(unknown)}")
    new_keys = [k for k in (original_key, normalized_key) if k]
    _verify(store, new_keys)

    def work(session: Session) -> TransitionResult:
        table = _TABLES["source_video"]
        rows = _lock(session, "source_video", [video_id], table.c.original_key,
                     table.c.normalized_key)
        to_state = _check("source_video", "complete_downloading", rows)
        old = rows[video_id]
        schedule_deletion(session, [k for k in (old.original_key, old.normalized_key)
                                    if k and k not in new_keys], "redownload")
        session.execute(update(table).where(table.c.id == video_id).values(
            state=to_state, updated_at=func.now(), error=None, original_key=original_key,
            normalized_key=normalized_key, **metadata))
        return TransitionResult("source_video", video_id, old.state, to_state)

    return db.run(work)


def start_splicing(db: Database, video_id: int, *, overwrite: bool = False,
                   scene_params: Mapping[str, Any] | None = None) -> TransitionResult:
    extra: dict[str, Any] = {} if scene_params is None else {"scene_params": dict(scene_params)}
    return _single(db, "source_video", "start_splicing", video_id, overwrite=overwrite,
                   **_attempts("source_video"), **extra)


def _validate_clips(video_id: int, specs: Sequence[ClipSpec], frame_count: int | None) -> None:
    previous_end = -1
    for spec in sorted(specs, key=lambda s: s.start_frame):
        if spec.start_frame < 0 or spec.end_frame <= spec.start_frame:
            raise InvalidClipsError(f"video {video_id}: empty or negative clip "
                                    f"[{spec.start_frame}, {spec.end_frame})")
        if frame_count is not None and spec.end_frame > frame_count:
            raise InvalidClipsError(f"video {video_id}: clip [{spec.start_frame}, "
                                    f"{spec.end_frame}) ends after frame {frame_count}")
        if spec.start_frame < previous_end:
            raise InvalidClipsError(f"video {video_id}: clip starting at {spec.start_frame} "
                                    f"overlaps the previous clip ending at {previous_end}")
        previous_end = spec.end_frame


def _frame_count(video: Any) -> int | None:
    if video.frame_count is not None:
        return int(video.frame_count)
    if video.duration_s is not None and video.fps:
        return round(video.duration_s * video.fps)
    return None


def _clip_rows(video_id: int, fps: float, specs: Iterable[ClipSpec],
               parents: Sequence[int] = ()) -> list[dict[str, Any]]:
    rows = []
    for spec in specs:
        ident = keys.clip_identifier(video_id, spec.start_frame, spec.end_frame)
        rows.append({
            "source_video_id": video_id, "identifier": ident,
            "start_frame": spec.start_frame, "end_frame": spec.end_frame,
            "start_time": spec.start_frame / fps, "end_time": spec.end_frame / fps, "fps": fps,
            "state": "spliced",
            "storage_key": spec.storage_key or keys.clip_key(video_id, ident),
            "parent_clip_ids": list(parents),
        })
    return rows


def _insert_clips(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    if not rows:
        return []
    try:
        with session.begin_nested():
            if any(r["parent_clip_ids"] for r in rows):  # lineage (merge/split): a few rows
                result = session.execute(
                    insert(_CLIPS).returning(_CLIPS.c.id, sort_by_parameter_order=True), rows)
                return [int(r) for r in result.scalars()]
            flat = [{k: v for k, v in r.items() if k != "parent_clip_ids"} for r in rows]
            by_ident = {r.identifier: int(r.id) for r in _bulk_insert(
                session, _CLIPS, flat, returning=("id", "identifier"))}
            return [by_ident[r["identifier"]] for r in rows]
    except IntegrityError as exc:
        if _pgcode(exc) == EXCLUSION_VIOLATION:
            raise InvalidClipsError(f"clips overlap existing clips: {exc.orig}") from exc
        raise AlreadyExistsError(f"clip rows conflict with existing rows: {exc.orig}") from exc


def _clip_object_keys(session: Session, where: ColumnElement[bool]) -> list[str]:
    clip_keys = session.execute(select(_CLIPS.c.storage_key).where(where)).scalars().all()
    art = session.execute(
        select(_ARTIFACTS.c.storage_key, _ARTIFACTS.c.sidecar_key)
        .join(_CLIPS, _CLIPS.c.id == _ARTIFACTS.c.clip_id).where(where)).all()
    return [k for k in clip_keys if k] + [k for row in art for k in row if k]


def create_clips_from_splice(db: Database, video_id: int, clips: Sequence[ClipSpec], *,
                             fps: float | None = None, overwrite: bool = False,
                             store: Any = None) -> list[int]:
    """splicing -> spliced, inserting every clip in one transaction (all or nothing).

    Rejects overlapping clips, clips outside the video, and (without `overwrite`) a video that
    already has clips. With `overwrite`, the old clips, their artifacts and embeddings are deleted
    and their objects scheduled for deletion (keys reused by the new clips are kept).
    Returns the new clip ids in the order of `clips`.
    """
    def work(session: Session) -> list[int]:
        table = _TABLES["source_video"]
        rows = _lock(session, "source_video", [video_id], table.c.fps, table.c.frame_count,
                     table.c.duration_s)
        to_state = _check("source_video", "complete_splicing", rows)
        video = rows[video_id]
        clip_fps = fps or video.fps
        if not clip_fps:
            raise InvalidClipsError(f"video {video_id}: fps unknown; pass fps=")
        _validate_clips(video_id, clips, _frame_count(video))
        new_rows = _clip_rows(video_id, float(clip_fps), clips)
        _verify(store, [r["storage_key"] for r in new_rows])
        of_video = _CLIPS.c.source_video_id == video_id
        existing = session.execute(select(func.count()).where(of_video)).scalar_one()
        if existing:
            if not overwrite:
                raise AlreadyExistsError(f"video {video_id} already has {existing} clips")
            keep = {r["storage_key"] for r in new_rows}
            old_keys = [k for k in _clip_object_keys(session, of_video) if k not in keep]
            schedule_deletion(session, old_keys, f"resplice video {video_id}")
            session.execute(delete(_CLIPS).where(of_video))
        ids = _insert_clips(session, new_rows)
        session.execute(update(table).where(table.c.id == video_id).values(
            state=to_state, error=None, updated_at=func.now()))
        return ids

    return db.run(work)


# ------------------------------------------------------------------------------ clips


def get_clip(db: Database, clip_id: int) -> Clip:
    with db.session() as session:
        clip = session.get(Clip, clip_id)
        if clip is None:
            raise NotFoundError(f"clip not found: {clip_id}")
        return clip


def _start_many(db: Database, action: str, clip_ids: Sequence[int], overwrite: bool) -> int:
    ids = list(dict.fromkeys(clip_ids))
    db.run(lambda s: _apply(s, "clip", action, ids, overwrite=overwrite, **_attempts()))
    return len(ids)


def start_keyframing(db: Database, clip_id: int, *, overwrite: bool = False) -> TransitionResult:
    return _single(db, "clip", "start_keyframing", clip_id, overwrite=overwrite, **_attempts())


def start_keyframing_many(db: Database, clip_ids: Sequence[int], *,
                          overwrite: bool = False) -> int:
    return _start_many(db, "start_keyframing", clip_ids, overwrite)


def start_sprite_generation(db: Database, clip_id: int, *,
                            overwrite: bool = False) -> TransitionResult:
    return _single(db, "clip", "start_sprite_generation", clip_id, overwrite=overwrite,
                   **_attempts())


def start_sprite_generation_many(db: Database, clip_ids: Sequence[int], *,
                                 overwrite: bool = False) -> int:
    return _start_many(db, "start_sprite_generation", clip_ids, overwrite)


def _complete_artifacts(db: Database, action: str, kind: str,
                        items: Mapping[int, Sequence[ArtifactSpec]], store: Any) -> int:
    """Replace every `kind` artifact of each clip with `items[clip]` and move the clips on."""
    ids = list(items)
    new_rows = [
        {"clip_id": cid, "kind": a.kind, "strategy": a.strategy, "tag": a.tag,
         "storage_key": a.storage_key, "sidecar_key": a.sidecar_key, "metadata": dict(a.meta)}
        for cid, specs in items.items() for a in specs
    ]
    if any(r["kind"] != kind for r in new_rows):
        raise ValueError(f"{action} takes only {kind!r} artifacts")
    new_keys = {r["storage_key"] for r in new_rows} | {r["sidecar_key"] for r in new_rows}
    _verify(store, [k for k in new_keys if k])

    def work(session: Session) -> int:
        _apply(session, "clip", action, ids, error=None)
        in_clips = _ARTIFACTS.c.clip_id == any_(_id_array(ids))
        scope = in_clips & (_ARTIFACTS.c.kind == kind)
        old = session.execute(
            delete(_ARTIFACTS).where(scope)
            .returning(_ARTIFACTS.c.storage_key, _ARTIFACTS.c.sidecar_key)).all()
        schedule_deletion(session, [k for row in old for k in row if k and k not in new_keys],
                          f"replaced {kind}")
        if new_rows:
            try:
                with session.begin_nested():
                    _bulk_insert(session, _ARTIFACTS, new_rows)
            except IntegrityError as exc:
                raise AlreadyExistsError(f"duplicate artifact: {exc.orig}") from exc
        return len(new_rows)

    return db.run(work)


def complete_keyframing(db: Database, clip_id: int, keyframes: Sequence[ArtifactSpec], *,
                        store: Any = None) -> int:
    """keyframing -> keyframed; the clip's keyframe artifacts become exactly `keyframes`."""
    return _complete_artifacts(db, "complete_keyframing", "keyframe", {clip_id: keyframes}, store)


def complete_keyframing_many(db: Database, keyframes: Mapping[int, Sequence[ArtifactSpec]], *,
                             store: Any = None) -> int:
    """Bulk `complete_keyframing` in one transaction; returns the number of artifacts written."""
    return _complete_artifacts(db, "complete_keyframing", "keyframe", keyframes, store)


def complete_sprite_generation(db: Database, clip_id: int, sprite: ArtifactSpec | Sequence[
        ArtifactSpec], *, store: Any = None) -> int:
    """generating_sprite -> pending_review; the clip's sprite artifacts are replaced."""
    specs = [sprite] if isinstance(sprite, ArtifactSpec) else list(sprite)
    return _complete_artifacts(db, "complete_sprite_generation", "sprite_sheet",
                               {clip_id: specs}, store)


def complete_sprite_generation_many(db: Database, sprites: Mapping[int, Sequence[ArtifactSpec]],
                                    *, store: Any = None) -> int:
    return _complete_artifacts(db, "complete_sprite_generation", "sprite_sheet", sprites, store)


def start_embedding(db: Database, clip_id: int, *, overwrite: bool = False) -> TransitionResult:
    return _single(db, "clip", "start_embedding", clip_id, overwrite=overwrite, **_attempts())


def start_embedding_many(db: Database, clip_ids: Sequence[int], *,
                         overwrite: bool = False) -> int:
    return _start_many(db, "start_embedding", clip_ids, overwrite)


def _embedding_rows(items: Mapping[int, Sequence[float]], model_name: str,
                    strategy: str) -> list[dict[str, Any]]:
    rows = []
    for cid, vector in items.items():
        values = [float(x) for x in vector]
        if not values:
            raise ValueError(f"empty embedding for clip {cid}")
        rows.append({"clip_id": cid, "model_name": model_name, "generation_strategy": strategy,
                     "dimension": len(values), "embedding": values})
    return rows


def _upsert_embeddings(session: Session, rows: list[dict[str, Any]], overwrite: bool) -> None:
    stmt = pg_insert(ClipEmbedding.__table__)
    if overwrite:
        stmt = stmt.on_conflict_do_update(
            constraint="uq_clip_embeddings_clip_model_strategy",
            set_={"embedding": stmt.excluded.embedding, "dimension": stmt.excluded.dimension,
                  "created_at": func.now()})
    try:
        with session.begin_nested():
            session.execute(stmt, rows)
    except IntegrityError as exc:
        raise AlreadyExistsError(f"embedding already stored: {exc.orig}") from exc


def store_embedding(db: Database, clip_id: int, vector: Sequence[float], *, model_name: str,
                    generation_strategy: str, overwrite: bool = False) -> None:
    """Store an embedding without a state change (e.g. "similar clips" during review)."""
    rows = _embedding_rows({clip_id: vector}, model_name, generation_strategy)

    def work(session: Session) -> None:
        _lock(session, "clip", [clip_id])
        _upsert_embeddings(session, rows, overwrite)

    db.run(work)


def complete_embedding_many(db: Database, vectors: Mapping[int, Sequence[float]], *,
                            model_name: str, generation_strategy: str) -> int:
    """embedding -> embedded; one row per (clip, model, strategy), replaced on a re-run."""
    rows = _embedding_rows(vectors, model_name, generation_strategy)

    def work(session: Session) -> int:
        _apply(session, "clip", "complete_embedding", list(vectors), error=None)
        _upsert_embeddings(session, rows, overwrite=True)
        return len(rows)

    return db.run(work)


def complete_embedding(db: Database, clip_id: int, vector: Sequence[float], *, model_name: str,
                       generation_strategy: str) -> int:
    return complete_embedding_many(db, {clip_id: vector}, model_name=model_name,
                                   generation_strategy=generation_strategy)


def mark_failed(db: Database, entity: Entity, entity_id: int, step: str,
                error: str) -> TransitionResult:
    """Move a row from a step's in-progress state to that step's failed state, keeping `error`."""
    if step not in FAIL_STEPS.get(entity, ()):
        raise ValueError(f"unknown step {step!r} for {entity}; one of {FAIL_STEPS.get(entity)}")
    return _single(db, entity, f"fail_{step}", entity_id, error=error[:10_000])


# ------------------------------------------------------------------------------ review


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
    row = _lock(session, "clip", [clip_id], _CLIPS.c.updated_at)[clip_id]
    if clip_version(row.state, row.updated_at) != expected_version:
        raise StaleActionError(f"clip {clip_id} changed since the page was loaded "
                               f"(it is now {row.state!r}); reload to see it")


def _record(session: Session, action: str, clip_ids: Sequence[int], previous: Sequence[str],
            actor: str, payload: Mapping[str, Any] | None = None,
            undoes: int | None = None) -> int:
    return int(session.execute(insert(ReviewEvent).values(
        action=action, actor=actor, clip_ids=list(clip_ids), previous_states=list(previous),
        payload=dict(payload or {}), undoes_event_id=undoes).returning(ReviewEvent.id)
    ).scalar_one())


def _review(db: Database, action: str, clip_id: int, actor: str,
            payload: Mapping[str, Any] | None = None,
            expected_version: str | None = None) -> int:
    def work(session: Session) -> int:
        _guard(session, clip_id, expected_version)
        rows = _apply(session, "clip", action, [clip_id], reviewed_at=func.now())
        return _record(session, action, [clip_id], [rows[clip_id].state], actor, payload)

    return db.run(work)


def approve_clip(db: Database, clip_id: int, actor: str = "", *,
                 expected_version: str | None = None) -> int:
    """pending_review -> approved; returns the review event id."""
    return _review(db, "approve", clip_id, actor, expected_version=expected_version)


def skip_clip(db: Database, clip_id: int, actor: str = "", *,
              expected_version: str | None = None) -> int:
    return _review(db, "skip", clip_id, actor, expected_version=expected_version)


def archive_clip(db: Database, clip_id: int, actor: str = "", *,
                 expected_version: str | None = None) -> int:
    return _review(db, "archive", clip_id, actor, expected_version=expected_version)


def request_split(db: Database, clip_id: int, frame: int, actor: str = "", *,
                  expected_version: str | None = None) -> int:
    """pending_review -> splitting at `frame` (strictly inside the clip)."""
    def work(session: Session) -> int:
        _guard(session, clip_id, expected_version)
        rows = _lock(session, "clip", [clip_id], _CLIPS.c.start_frame, _CLIPS.c.end_frame)
        row = rows[clip_id]
        to_state = _check("clip", "request_split", rows)
        if not row.start_frame < frame < row.end_frame:
            raise InvalidClipsError(f"split frame {frame} not inside clip {clip_id} "
                                    f"[{row.start_frame}, {row.end_frame})")
        session.execute(update(_CLIPS).where(_CLIPS.c.id == clip_id).values(
            state=to_state, reviewed_at=func.now(), updated_at=func.now()))
        return _record(session, "request_split", [clip_id], [row.state], actor, {"frame": frame})

    return db.run(work)


def request_merge(db: Database, clip_id: int, actor: str = "", *,
                  expected_version: str | None = None) -> int:
    """Merge a pending clip with the previous live clip of its video: both go to `merging`."""
    def work(session: Session) -> int:
        _guard(session, clip_id, expected_version)
        target = session.execute(select(_CLIPS.c.source_video_id, _CLIPS.c.start_frame)
                                 .where(_CLIPS.c.id == clip_id)).first()
        if target is None:
            raise NotFoundError(f"clip not found: {clip_id}")
        prev_id = session.execute(
            select(_CLIPS.c.id).where(_CLIPS.c.source_video_id == target.source_video_id,
                                      _CLIPS.c.end_frame <= target.start_frame,
                                      _CLIPS.c.superseded_at.is_(None))
            .order_by(_CLIPS.c.end_frame.desc()).limit(1)).scalar()
        if prev_id is None:
            raise InvalidClipsError(f"clip {clip_id} has no previous clip to merge with")
        rows = _lock(session, "clip", [prev_id, clip_id])
        _check("clip", "request_merge", {clip_id: rows[clip_id]})
        to_state = _check("clip", "merge_into_next", {prev_id: rows[prev_id]})
        session.execute(update(_CLIPS).where(_CLIPS.c.id.in_([prev_id, clip_id])).values(
            state=to_state, reviewed_at=func.now(), updated_at=func.now()))
        return _record(session, "request_merge", [prev_id, clip_id],
                       [rows[prev_id].state, rows[clip_id].state], actor)

    return db.run(work)


def undo_review(db: Database, clip_id: int, actor: str = "", *,
                expected_version: str | None = None) -> int:
    """Undo the latest not-yet-undone review action on `clip_id`, restoring the states it
    replaced. Refused once the action's effect moved on (e.g. the merge already ran)."""
    def work(session: Session) -> int:
        _guard(session, clip_id, expected_version)
        ev = ReviewEvent.__table__
        undone = select(ev.c.undoes_event_id).where(ev.c.undoes_event_id.is_not(None))
        event = session.execute(
            select(ev).where(ev.c.clip_ids.any_() == clip_id, ev.c.action != "undo",
                             ev.c.id.not_in(undone))
            .order_by(ev.c.id.desc()).limit(1)).first()
        if event is None:
            raise InvalidTransitionError("clip", clip_id, "undo", "no review action to undo")
        if event.action == "purge":
            raise InvalidTransitionError(
                "clip", clip_id, "undo", "archived",
                reason="the archive job already deleted its files; it cannot be restored")
        rows = _lock(session, "clip", list(event.clip_ids))
        expected = {"approve": "approved", "skip": "skipped", "archive": "archived",
                    "request_merge": "merging", "request_split": "splitting"}[event.action]
        for cid, row in rows.items():
            if row.state != expected:
                raise InvalidTransitionError("clip", cid, "undo", row.state, (expected,))
        for cid, previous in zip(event.clip_ids, event.previous_states, strict=True):
            session.execute(update(_CLIPS).where(_CLIPS.c.id == cid).values(
                state=previous, updated_at=func.now()))
        return _record(session, "undo", list(event.clip_ids), [rows[c].state
                       for c in event.clip_ids], actor, {"undone_action": event.action},
                       undoes=event.id)

    return db.run(work)


def _supersede(session: Session, old: Sequence[int], new_specs: Sequence[ClipSpec],
               video_id: int, fps: float, action: str, store: Any) -> list[int]:
    rows = _clip_rows(video_id, fps, new_specs, parents=old)
    _verify(store, [r["storage_key"] for r in rows])
    session.execute(update(_CLIPS).where(_CLIPS.c.id.in_(list(old))).values(
        state=TRANSITIONS[("clip", action)].to_state, superseded_at=func.now(),
        updated_at=func.now()))
    return _insert_clips(session, rows)


def complete_merge(db: Database, clip_ids: Sequence[int], *, store: Any = None) -> int:
    """merging -> archived for the merged clips; one new clip (state `spliced`) spans them."""
    def work(session: Session) -> int:
        rows = _lock(session, "clip", list(clip_ids), _CLIPS.c.source_video_id,
                     _CLIPS.c.start_frame, _CLIPS.c.end_frame, _CLIPS.c.fps)
        _check("clip", "complete_merge", rows)
        videos = {r.source_video_id for r in rows.values()}
        if len(videos) != 1 or len(rows) < 2:
            raise InvalidClipsError("merge needs two or more clips of one video")
        spec = ClipSpec(min(r.start_frame for r in rows.values()),
                        max(r.end_frame for r in rows.values()))
        first = next(iter(rows.values()))
        return _supersede(session, sorted(rows), [spec], videos.pop(), first.fps,
                          "complete_merge", store)[0]

    return db.run(work)


def complete_split(db: Database, clip_id: int, frame: int, *, store: Any = None) -> list[int]:
    """splitting -> archived; two new clips [start, frame) and [frame, end) start at `spliced`."""
    def work(session: Session) -> list[int]:
        rows = _lock(session, "clip", [clip_id], _CLIPS.c.source_video_id,
                     _CLIPS.c.start_frame, _CLIPS.c.end_frame, _CLIPS.c.fps)
        _check("clip", "complete_split", rows)
        row = rows[clip_id]
        if not row.start_frame < frame < row.end_frame:
            raise InvalidClipsError(f"split frame {frame} not inside clip {clip_id}")
        specs = [ClipSpec(row.start_frame, frame), ClipSpec(frame, row.end_frame)]
        return _supersede(session, [clip_id], specs, row.source_video_id, row.fps,
                          "complete_split", store)

    return db.run(work)
