"""Keyframes, sprite sheets (and review proxies) of many clips from one decode of each source.

A run over video partitions used to fetch every clip file and decode it twice (keyframes, then
sprite). Here the clips of one video are frame ranges of its playable source, fetched once and
decoded once for both artifacts (:func:`heaters_media.artifacts.make_clip_artifacts`). Clips made
in review (merge, split) have parents and may not be one stretch of the source (a merge can
join clips around a gap): those are decoded from their own file, with the same code.

Clips not cut yet (HEATERS_CLIPS=proxy) also get their review proxy from that decode, stored
with the sprite: the review page plays it until the clip is approved and cut (`steps.cutting`).

The state machine is unchanged: keyframing starts before the pass and completes after it; the
sprite step starts for clips already keyframed before the pass and for the just-keyframed ones
after it, so a sprite is never recorded for a clip without keyframes.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from heaters_media.artifacts import (
    ClipArtifacts,
    ClipRange,
    KeyframeConsumer,
    SpriteConsumer,
    make_clip_artifacts,
)
from heaters_media.frames_consumer import EmbedConsumer
from heaters_media.progress import ProgressFn
from heaters_media.proxy import ProxyConsumer, ProxyResult
from heaters_media.sprite import SpriteResult
from heaters_resources import faults, states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip
from heaters_resources.errors import NotFoundError
from heaters_resources.steps import review_vectors
from heaters_resources.steps.clips import ClipBatchOutcome, clips_by_identifier, sprite_params
from heaters_resources.steps.common import (
    ArtifactsFailedError,
    describe_error,
    fail_step,
    fetch,
    scratch_dir,
    start_clips,
)
from heaters_resources.steps.videos import playable_key
from heaters_resources.store import keys
from heaters_resources.store.cleanup import purge_scheduled_deletions
from heaters_resources.store.objects import ObjectStore

log = logging.getLogger(__name__)


@dataclass
class SpriteSettings:
    tile_width: int = 480
    max_fps: float = 24.0
    cols: int = 5


@dataclass
class _Group:
    """Clips decoded together: ``key()`` names the object (resolved lazily, so a video without
    a stored file fails only its own clips), ``members`` pairs each clip with its frame range
    in that object, ``uncut`` says they have no file yet and get a review proxy."""

    key: Callable[[], str]
    members: list[tuple[Clip, ClipRange]]
    uncut: bool = False


def _decode_groups(db: Database, clips: Sequence[Clip]) -> list[_Group]:
    """One group per source video for the clips cut from it, one for its clips not cut yet
    (HEATERS_CLIPS=proxy, merged and split ones included: they are frame ranges of it too),
    and one per clip for clips made in review as files of their own (a merge across a gap)."""
    by_video: dict[tuple[int, bool], list[Clip]] = defaultdict(list)
    groups: list[_Group] = []
    for clip in clips:
        if clip.parent_clip_ids and clip.storage_key:
            frames = clip.end_frame - clip.start_frame
            ranges = [(clip, ClipRange(0, 0, frames, clip.identifier))]
            groups.append(_Group(partial(_clip_key, clip), ranges))
        else:
            by_video[(clip.source_video_id, not clip.storage_key)].append(clip)
    for (video_id, uncut), members in by_video.items():
        ranges = [
            (c, ClipRange(k, c.start_frame, c.end_frame, c.identifier))
            for k, c in enumerate(sorted(members, key=lambda c: c.start_frame))
        ]
        groups.append(_Group(partial(_video_key, db, video_id), ranges, uncut))
    return groups


def _within(progress: ProgressFn | None, before: int, size: int, total: int) -> ProgressFn | None:
    """A group's decode progress as a share of the whole run's (``before`` clips done)."""
    if progress is None:
        return None
    report = progress

    def within(fraction: float, message: str) -> None:
        report((before + fraction * size) / max(1, total), f"artifacts: {message}")

    return within


def _clip_key(clip: Clip) -> str:
    if not clip.storage_key:
        raise NotFoundError(f"clip {clip.identifier} has no stored file")
    return clip.storage_key


def _video_key(db: Database, video_id: int) -> str:
    return playable_key(states.get_source_video(db, video_id))


def _keyframe_specs(
    store: ObjectStore, clip: Clip, art: ClipArtifacts
) -> list[states.ArtifactSpec]:
    result = art.keyframes
    if result is None:
        raise ArtifactsFailedError(art.error or "no keyframes were made")
    specs = []
    for kf in result.keyframes:
        key = keys.keyframe_key(clip.source_video_id, clip.identifier, result.strategy, kf.pct)
        store.upload_file(kf.path, key, content_type="image/jpeg")
        meta = {
            "frame_index": kf.frame_index,
            "timestamp": kf.timestamp,
            "pct": kf.pct,
            "width": result.width,
            "height": result.height,
        }
        specs.append(
            states.ArtifactSpec("keyframe", result.strategy, key, tag=str(kf.pct), meta=meta)
        )
    return specs


def _sprite_spec(
    store: ObjectStore, clip: Clip, result: SpriteResult, params: str
) -> states.ArtifactSpec:
    key = keys.sprite_key(clip.source_video_id, clip.identifier, params)
    meta_key = keys.sprite_metadata_key(clip.source_video_id, clip.identifier, params)
    store.upload_file(result.path, key, content_type="image/jpeg")
    store.upload_file(result.json_path, meta_key, content_type="application/json")
    meta = {
        k: v
        for k, v in result.to_dict().items()
        if k not in ("status", "path", "json_path", "clip")
    }
    return states.ArtifactSpec("sprite_sheet", params, key, sidecar_key=meta_key, meta=meta)


def _sprite_specs(
    store: ObjectStore, params: str, clip: Clip, art: ClipArtifacts
) -> list[states.ArtifactSpec]:
    """The sprite, and the review proxy of a clip not cut yet (it is reviewed from it)."""
    if art.sprite is None:
        raise ArtifactsFailedError(art.error or "no sprite was made")
    specs = [_sprite_spec(store, clip, art.sprite, params)]
    if not clip.storage_key:
        if art.proxy is None:
            raise ArtifactsFailedError("no review proxy was made")
        specs.append(_proxy_spec(store, clip, art.proxy))
    return specs


def _record(
    db: Database,
    clips: Sequence[Clip],
    made: dict[str, ClipArtifacts],
    out: ClipBatchOutcome,
    specs_of: Callable[[Clip, ClipArtifacts], list[states.ArtifactSpec]],
    complete_many: Callable[[dict[int, list[states.ArtifactSpec]]], int],
) -> None:
    """Upload each clip's artifacts (a failure fails that clip alone), then record them all in
    one transaction; clip by clip when the batch is refused, so one bad clip fails alone.

    A kill between the uploads and the commit leaves objects no row references yet: their
    keys are the clip's own (ids and parameters), so the retry writes the same keys again."""
    step = out.step
    ready: dict[int, list[states.ArtifactSpec]] = {}
    by_id = {c.id: c for c in clips}
    for clip in clips:
        art = made[clip.identifier]
        try:
            if art.error is not None:
                raise ArtifactsFailedError(art.error)
            ready[clip.id] = specs_of(clip, art)
            faults.point(f"{step}s:between-uploads")
        except Exception as exc:
            fail_step(db, "clip", clip.id, step, exc)
            out.failed[clip.identifier] = describe_error(exc)
    if not ready:
        return
    faults.point(f"{step}s:before-commit")
    try:
        out.artifacts += complete_many(ready)
        out.done += [by_id[cid].identifier for cid in ready]
        return
    except Exception as exc:
        log.info("%s: recording %d clips at once failed (%s); one by one", step, len(ready), exc)
    for cid, specs in ready.items():
        try:
            out.artifacts += complete_many({cid: specs})
            out.done.append(by_id[cid].identifier)
        except Exception as exc:
            fail_step(db, "clip", cid, step, exc)
            out.failed[by_id[cid].identifier] = describe_error(exc)


def _proxy_spec(store: ObjectStore, clip: Clip, result: ProxyResult) -> states.ArtifactSpec:
    key = keys.proxy_key(clip.source_video_id, clip.identifier, result.height)
    store.upload_file(result.path, key, content_type="video/mp4")
    meta = {k: v for k, v in result.to_dict().items() if k not in ("status", "path", "clip")}
    return states.ArtifactSpec("proxy", f"{result.height}p", key, meta=meta)


def make_artifacts(
    db: Database,
    store: ObjectStore,
    *,
    keyframe_ids: Sequence[str] = (),
    sprite_ids: Sequence[str] = (),
    sprites: bool = False,
    strategy: str = "multi",
    sprite: SpriteSettings | None = None,
    overwrite: bool = False,
    workdir: Path | None = None,
    progress: ProgressFn | None = None,
    describe: str | None = None,
) -> tuple[ClipBatchOutcome, ClipBatchOutcome]:
    """Keyframes for ``keyframe_ids``; with ``sprites``, sprites for ``sprite_ids`` (clips that
    are keyframed already) and for every clip keyframed here. One decode per source video.

    ``describe`` (a model, HEATERS_REVIEW_SIMILAR's descriptor): the same decode embeds each
    clip's keyframe frames, and the clips now ready for review get that vector stored (no
    state change), so the review page shows similar clips at once. Best effort: reported in
    the sprite outcome's ``details["review_vectors"]``, never failing a clip.

    Returns the keyframe and sprite outcomes. A clip that cannot start a step is skipped with
    the reason; a clip whose artifacts fail is marked ``*_failed``; the others carry on.
    """
    t0 = time.perf_counter()
    settings = sprite or SpriteSettings()
    params = sprite_params(settings.tile_width, settings.max_fps, settings.cols)
    kf_out, sp_out = ClipBatchOutcome("keyframe"), ClipBatchOutcome("sprite")
    wanted = list(dict.fromkeys([*keyframe_ids, *(sprite_ids if sprites else ())]))
    clips = {c.identifier: c for c in clips_by_identifier(db, wanted)}

    # One transaction per step for all the clips (clip by clip only when one refuses).
    kf_started = start_clips(
        [clips[i] for i in dict.fromkeys(keyframe_ids)],
        partial(states.start_keyframing_many, db, overwrite=overwrite),
        partial(states.start_keyframing, db, overwrite=overwrite),
        kf_out.skipped,
    )
    keyframing = {c.identifier for c in kf_started}
    start_sprites = partial(
        start_clips,
        many=partial(states.start_sprite_generation_many, db, overwrite=overwrite),
        one=partial(states.start_sprite_generation, db, overwrite=overwrite),
        skipped=sp_out.skipped,
    )
    # A clip keyframed here starts its sprite once its keyframes are in.
    sp_started = (
        start_sprites([clips[i] for i in dict.fromkeys(sprite_ids) if i not in keyframing])
        if sprites
        else []
    )

    todo = list({c.identifier: c for c in [*kf_started, *sp_started]}.values())
    embedder = review_vectors.embedder(describe, sp_out) if describe and sprites else None
    made: dict[str, ClipArtifacts] = {}
    with scratch_dir(workdir) as tmp:
        groups = _decode_groups(db, todo)
        done = 0
        for n, group in enumerate(groups):
            members = group.members
            try:
                local = fetch(store, group.key(), tmp)
                result = make_clip_artifacts(
                    local,
                    [r for _, r in members],
                    tmp / f"art-{n}",
                    keyframes=KeyframeConsumer(strategy) if kf_started else None,
                    sprite=SpriteConsumer(settings.tile_width, settings.max_fps, settings.cols)
                    if sprites
                    else None,
                    # A clip not cut yet is reviewed from its proxy, made with its sprite.
                    proxy=ProxyConsumer() if sprites and group.uncut else None,
                    embedding=EmbedConsumer(embedder, strategy) if embedder else None,
                    progress=_within(progress, done, len(members), len(todo)),
                )
                for (clip, _), art in zip(members, result.clips, strict=True):
                    made[clip.identifier] = art
            except Exception as exc:
                for clip, r in members:
                    made[clip.identifier] = ClipArtifacts(
                        r.index, r.name, r.start, r.end, error=describe_error(exc)
                    )
            done += len(members)
            if progress:
                progress(done / max(1, len(todo)), f"artifacts: {done}/{len(todo)} clips")

        faults.point("artifacts:after-decode")
        _record(
            db,
            kf_started,
            made,
            kf_out,
            partial(_keyframe_specs, store),
            partial(states.complete_keyframing_many, db, store=store),
        )
        if sprites:
            sp_started += start_sprites([c for c in kf_started if c.identifier in kf_out.done])
        _record(
            db,
            sp_started,
            made,
            sp_out,
            partial(_sprite_specs, store, params),
            partial(states.complete_sprite_generation_many, db, store=store),
        )
        if embedder is not None:
            review_vectors.store(db, embedder, strategy, sp_out, made)
    purge_scheduled_deletions(db, store)
    kf_out.seconds = sp_out.seconds = time.perf_counter() - t0
    return kf_out, sp_out


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
    return make_artifacts(
        db,
        store,
        keyframe_ids=identifiers,
        strategy=strategy,
        overwrite=overwrite,
        workdir=workdir,
        progress=progress,
    )[0]


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
    return make_artifacts(
        db,
        store,
        sprite_ids=identifiers,
        sprites=True,
        sprite=SpriteSettings(tile_width, max_fps, cols),
        overwrite=overwrite,
        workdir=workdir,
        progress=progress,
    )[1]
