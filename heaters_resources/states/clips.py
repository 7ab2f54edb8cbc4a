"""Clip processing transitions: keyframing and sprite generation, one clip or many at once;
and the file of a clip cut after review (HEATERS_CLIPS=proxy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    any_,
    delete,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from heaters_resources.db.engine import Database
from heaters_resources.db.models import (
    Clip,
)
from heaters_resources.errors import (
    AlreadyExistsError,
    NotFoundError,
)
from heaters_resources.states.core import (
    ARTIFACTS,
    CLIPS,
    apply_transition,
    attempts_counter,
    bulk_insert,
    id_array,
    schedule_deletion,
    single_transition,
    start_many,
    verify_objects,
)
from heaters_resources.states.table import (
    ArtifactSpec,
    TransitionResult,
)

# ------------------------------------------------------------------------------ clips


def get_clip(db: Database, clip_id: int) -> Clip:
    with db.session() as session:
        clip = session.get(Clip, clip_id)
        if clip is None:
            raise NotFoundError(f"clip not found: {clip_id}")
        return clip


def start_keyframing(db: Database, clip_id: int, *, overwrite: bool = False) -> TransitionResult:
    return single_transition(
        db, "clip", "start_keyframing", clip_id, overwrite=overwrite, **attempts_counter()
    )


def start_keyframing_many(db: Database, clip_ids: Sequence[int], *, overwrite: bool = False) -> int:
    return start_many(db, "start_keyframing", clip_ids, overwrite)


def start_sprite_generation(
    db: Database, clip_id: int, *, overwrite: bool = False
) -> TransitionResult:
    return single_transition(
        db, "clip", "start_sprite_generation", clip_id, overwrite=overwrite, **attempts_counter()
    )


def start_sprite_generation_many(
    db: Database, clip_ids: Sequence[int], *, overwrite: bool = False
) -> int:
    return start_many(db, "start_sprite_generation", clip_ids, overwrite)


def _complete_artifacts(
    db: Database,
    action: str,
    kind: str,
    items: Mapping[int, Sequence[ArtifactSpec]],
    store: Any,
    also: tuple[str, ...] = (),
) -> int:
    """Replace every `kind` artifact of each clip with `items[clip]` and move the clips on.

    Kinds in `also` may come with it (a review proxy with the sprite): those present replace
    their kind too; absent ones leave the clip's existing ones alone."""
    ids = list(items)
    new_rows = [
        {
            "clip_id": cid,
            "kind": a.kind,
            "strategy": a.strategy,
            "tag": a.tag,
            "storage_key": a.storage_key,
            "sidecar_key": a.sidecar_key,
            "metadata": dict(a.meta),
        }
        for cid, specs in items.items()
        for a in specs
    ]
    if any(r["kind"] != kind and r["kind"] not in also for r in new_rows):
        raise ValueError(f"{action} takes only {(kind, *also)!r} artifacts")
    replaced = list({kind, *(r["kind"] for r in new_rows)})
    new_keys: set[str | None] = {a.storage_key for specs in items.values() for a in specs}
    new_keys |= {a.sidecar_key for specs in items.values() for a in specs}
    verify_objects(store, [k for k in new_keys if k])

    def work(session: Session) -> int:
        apply_transition(session, "clip", action, ids, error=None)
        in_clips = ARTIFACTS.c.clip_id == any_(id_array(ids))
        scope = in_clips & ARTIFACTS.c.kind.in_(replaced)
        old = session.execute(
            delete(ARTIFACTS)
            .where(scope)
            .returning(ARTIFACTS.c.storage_key, ARTIFACTS.c.sidecar_key)
        ).all()
        schedule_deletion(
            session, [k for row in old for k in row if k and k not in new_keys], f"replaced {kind}"
        )
        if new_rows:
            try:
                with session.begin_nested():
                    bulk_insert(session, ARTIFACTS, new_rows)
            except IntegrityError as exc:
                raise AlreadyExistsError(f"duplicate artifact: {exc.orig}") from exc
        return len(new_rows)

    return db.run(work)


def complete_keyframing(
    db: Database, clip_id: int, keyframes: Sequence[ArtifactSpec], *, store: Any = None
) -> int:
    """keyframing -> keyframed; the clip's keyframe artifacts become exactly `keyframes`."""
    return _complete_artifacts(db, "complete_keyframing", "keyframe", {clip_id: keyframes}, store)


def complete_keyframing_many(
    db: Database, keyframes: Mapping[int, Sequence[ArtifactSpec]], *, store: Any = None
) -> int:
    """Bulk `complete_keyframing` in one transaction; returns the number of artifacts written."""
    return _complete_artifacts(db, "complete_keyframing", "keyframe", keyframes, store)


def complete_sprite_generation(
    db: Database, clip_id: int, sprite: ArtifactSpec | Sequence[ArtifactSpec], *, store: Any = None
) -> int:
    """generating_sprite -> pending_review; the clip's sprite artifacts are replaced, and its
    review proxy when one comes with them (a clip not cut yet)."""
    specs = [sprite] if isinstance(sprite, ArtifactSpec) else list(sprite)
    return _complete_artifacts(
        db, "complete_sprite_generation", "sprite_sheet", {clip_id: specs}, store, ("proxy",)
    )


def complete_sprite_generation_many(
    db: Database, sprites: Mapping[int, Sequence[ArtifactSpec]], *, store: Any = None
) -> int:
    return _complete_artifacts(
        db, "complete_sprite_generation", "sprite_sheet", sprites, store, ("proxy",)
    )


def record_clip_files(db: Database, files: Mapping[int, str], *, store: Any = None) -> list[int]:
    """Give clips not cut yet their file (`clips.storage_key`, HEATERS_CLIPS=proxy): no state
    change, so it holds whatever a reviewer did meanwhile. A clip that has a file already, or
    was superseded by a merge or split, keeps what it has; returns the ids that took theirs."""
    verify_objects(store, files.values())

    def work(session: Session) -> list[int]:
        taken = []
        for clip_id, key in files.items():
            row = session.execute(
                update(CLIPS)
                .where(
                    CLIPS.c.id == clip_id,
                    CLIPS.c.storage_key.is_(None),
                    CLIPS.c.superseded_at.is_(None),
                )
                # updated_at stays: it is the review page's version of the clip's state
                .values(storage_key=key)
                .returning(CLIPS.c.id)
            ).first()
            if row is not None:
                taken.append(clip_id)
        return taken

    return db.run(work)
