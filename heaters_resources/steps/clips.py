"""Clip steps run in batches: keyframes and sprite sheets for many clips of one run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from heaters_media.keyframes import extract_keyframes
from heaters_media.progress import ProgressFn
from heaters_media.sprite import make_sprite
from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip
from heaters_resources.errors import HeatersStateError, NotFoundError
from heaters_resources.steps.common import (
    StepFailedError,
    describe_error,
    fail_step,
    fetch,
    scratch_dir,
)
from heaters_resources.store import keys
from heaters_resources.store.cleanup import purge_scheduled_deletions
from heaters_resources.store.objects import ObjectStore

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ clips


def clips_of_videos(
    db: Database, video_ids: Sequence[int], clip_states: Collection[str] | None = None
) -> list[tuple[int, str]]:
    """(video id, identifier) of the live clips of ``video_ids`` (in ``clip_states`` when given),
    by video then position: what a run over those video partitions works on."""
    stmt = (
        select(Clip.source_video_id, Clip.identifier)
        .where(Clip.source_video_id.in_(list(video_ids)), Clip.superseded_at.is_(None))
        .order_by(Clip.source_video_id, Clip.start_frame)
    )
    if clip_states is not None:
        stmt = stmt.where(Clip.state.in_(list(clip_states)))
    with db.session() as session:
        return [(int(v), str(i)) for v, i in session.execute(stmt)]


def start_states(action: str, overwrite: bool) -> frozenset[str]:
    """The clip states from which ``action`` may start (the transition table's rule)."""
    rule = states.TRANSITIONS[("clip", action)]
    return rule.from_states | (rule.overwrite_from if overwrite else frozenset())


def clips_by_identifier(db: Database, identifiers: Sequence[str]) -> list[Clip]:
    """Clips for partition keys, in the order given; unknown identifiers raise NotFoundError."""
    with db.session() as session:
        found = {
            c.identifier: c
            for c in session.scalars(select(Clip).where(Clip.identifier.in_(list(identifiers))))
        }
    missing = [i for i in identifiers if i not in found]
    if missing:
        raise NotFoundError(f"unknown clip(s): {', '.join(missing[:10])}")
    return [found[i] for i in identifiers]


@dataclass
class ClipBatchOutcome:
    step: str
    done: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    artifacts: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def raise_for_failures(self) -> None:
        if self.failed:
            raise StepFailedError(self.step, self.failed)


def _clip_batch(
    db: Database,
    store: ObjectStore,
    identifiers: Sequence[str],
    *,
    step: str,
    start: Callable[[Database, int], Any],
    work: Callable[[Clip, Path, Path], int],
    workdir: Path | None,
    progress: ProgressFn | None,
) -> ClipBatchOutcome:
    """Run ``work`` on each clip between ``start`` and its completion; isolate failures.

    A clip that cannot start (e.g. archived since it was scheduled) is skipped with the reason;
    a clip whose work fails is marked ``*_failed``; the others carry on.
    """
    import time

    t0 = time.perf_counter()
    out = ClipBatchOutcome(step)
    clips = clips_by_identifier(db, identifiers)
    with scratch_dir(workdir) as tmp:
        for n, clip in enumerate(clips, 1):
            try:
                start(db, clip.id)
            except HeatersStateError as exc:
                out.skipped[clip.identifier] = str(exc)
                continue
            try:
                if not clip.storage_key:
                    raise NotFoundError(f"clip {clip.identifier} has no stored file")
                local = fetch(store, clip.storage_key, tmp)
                out.artifacts += work(clip, local, tmp)
                out.done.append(clip.identifier)
            except Exception as exc:
                fail_step(db, "clip", clip.id, step, exc)
                out.failed[clip.identifier] = describe_error(exc)
            if progress:
                progress(n / len(clips), f"{step}: {n}/{len(clips)}")
    purge_scheduled_deletions(db, store)
    out.seconds = time.perf_counter() - t0
    return out


def keyframe_clips(
    db: Database,
    store: ObjectStore,
    identifiers: Sequence[str],
    *,
    strategy: str = "multi",
    overwrite: bool = False,
    workdir: Path | None = None,
    progress: ProgressFn | None = None,
) -> ClipBatchOutcome:
    """spliced -> keyframing -> keyframed for each clip: JPEG keyframes uploaded and recorded."""

    def work(clip: Clip, local: Path, tmp: Path) -> int:
        result = extract_keyframes(local, strategy=strategy, out_dir=tmp / f"kf-{clip.id}")
        specs = []
        for kf in result.keyframes:
            key = keys.keyframe_key(clip.source_video_id, clip.identifier, strategy, kf.pct)
            store.upload_file(kf.path, key, content_type="image/jpeg")
            specs.append(
                states.ArtifactSpec(
                    "keyframe",
                    strategy,
                    key,
                    tag=str(kf.pct),
                    meta={
                        "frame_index": kf.frame_index,
                        "timestamp": kf.timestamp,
                        "pct": kf.pct,
                        "width": result.width,
                        "height": result.height,
                    },
                )
            )
        return states.complete_keyframing(db, clip.id, specs, store=store)

    return _clip_batch(
        db,
        store,
        identifiers,
        step="keyframe",
        start=lambda d, cid: states.start_keyframing(d, cid, overwrite=overwrite),
        work=work,
        workdir=workdir,
        progress=progress,
    )


def sprite_params(tile_width: int, max_fps: float, cols: int) -> str:
    """The sprite's key token: its parameters, so different settings never overwrite each other."""
    return f"w{tile_width}_fps{max_fps:g}_c{cols}".replace(".", "p")


def sprite_clips(
    db: Database,
    store: ObjectStore,
    identifiers: Sequence[str],
    *,
    tile_width: int = 480,
    max_fps: float = 24.0,
    cols: int = 5,
    overwrite: bool = False,
    workdir: Path | None = None,
    progress: ProgressFn | None = None,
) -> ClipBatchOutcome:
    """keyframed -> generating_sprite -> pending_review: sprite sheet + metadata uploaded."""
    params = sprite_params(tile_width, max_fps, cols)

    def work(clip: Clip, local: Path, tmp: Path) -> int:
        result = make_sprite(
            local, tmp / f"sprite-{clip.id}.jpg", tile_width=tile_width, max_fps=max_fps, cols=cols
        )
        key = keys.sprite_key(clip.source_video_id, clip.identifier, params)
        meta_key = keys.sprite_metadata_key(clip.source_video_id, clip.identifier, params)
        store.upload_file(result.path, key, content_type="image/jpeg")
        store.upload_file(result.json_path, meta_key, content_type="application/json")
        meta = {
            k: v
            for k, v in result.to_dict().items()
            if k not in ("status", "path", "json_path", "clip")
        }
        spec = states.ArtifactSpec("sprite_sheet", params, key, sidecar_key=meta_key, meta=meta)
        return states.complete_sprite_generation(db, clip.id, spec, store=store)

    return _clip_batch(
        db,
        store,
        identifiers,
        step="sprite",
        start=lambda d, cid: states.start_sprite_generation(d, cid, overwrite=overwrite),
        work=work,
        workdir=workdir,
        progress=progress,
    )
