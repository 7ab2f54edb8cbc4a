"""Processing steps: one pure media function between two state transitions.

Each step follows the same discipline, which is what makes retries safe:

1. move the row to the step's in-progress state (validated, under a row lock);
2. fetch inputs from the object store into a private temporary folder;
3. run the pure ``heaters_media`` function;
4. upload every output *before* the row that points at it is committed;
5. complete the transition (new rows/artifacts in one transaction);

and on any failure, move the row to the step's ``*_failed`` state with the reason and re-raise.
The Dagster assets are thin wrappers over these functions, and the "no Dagster" benchmark calls
them directly, so both measure the same work.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from heaters_media.errors import MediaError
from heaters_media.ingest import ingest
from heaters_media.keyframes import extract_keyframes
from heaters_media.scenes import detect_scenes
from heaters_media.split import merge_clips, split_clip_at, split_video
from heaters_media.sprite import make_sprite
from heaters_resources import keys, states
from heaters_resources.cleanup import purge_scheduled_deletions
from heaters_resources.db import Database
from heaters_resources.errors import HeatersStateError, NotFoundError
from heaters_resources.models import Clip, ClipArtifact, SourceVideo
from heaters_resources.storage import LocalObjectStore, ObjectStore

log = logging.getLogger(__name__)
ProgressFn = Callable[[float, str], None]


class StepFailedError(Exception):
    """Some items of a batch step failed; each is in its ``*_failed`` state with the reason."""

    def __init__(self, step: str, failures: dict[str, str]) -> None:
        self.step = step
        self.failures = failures
        listing = "; ".join(f"{k}: {v}" for k, v in list(failures.items())[:5])
        super().__init__(f"{step} failed for {len(failures)} item(s): {listing}")


def describe_error(exc: BaseException) -> str:
    """The reason stored in a ``*_failed`` state: the typed kind and the message."""
    if isinstance(exc, MediaError):
        return f"{exc.kind}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def scratch_dir(base: Path | None) -> Iterator[Path]:
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="heaters-step-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fetch(store: ObjectStore, key: str, workdir: Path) -> Path:
    """A local path holding the object: the file itself for the local store, else a download."""
    if isinstance(store, LocalObjectStore):
        path = store.path(key)
        if path.is_file():
            return path
    target = workdir / key.replace("/", "__")
    store.download_file(key, target)
    return target


def _fail(db: Database, entity: states.Entity, entity_id: int, step: str,
          exc: BaseException) -> None:
    try:
        states.mark_failed(db, entity, entity_id, step, describe_error(exc))
    except HeatersStateError as inner:  # already moved on (e.g. a concurrent retry): keep going
        log.warning("could not mark %s %s failed: %s", entity, entity_id, inner)


# ----------------------------------------------------------------------------- source videos


@dataclass
class IngestOutcome:
    video_id: int
    original_key: str
    normalized_key: str | None
    normalize_action: str
    title: str | None
    duration: float
    fps: float
    frame_count: int
    width: int
    height: int
    size_bytes: int
    seconds: float


def ingest_source_video(
    db: Database, store: ObjectStore, video_id: int, *, max_height: int = 1080,
    force_normalize: bool = False, overwrite: bool = False, workdir: Path | None = None,
    progress: ProgressFn | None = None,
) -> IngestOutcome:
    """new -> downloading -> downloaded: fetch/copy, normalize when needed, upload both files."""
    video = states.get_source_video(db, video_id)
    states.start_downloading(db, video_id, overwrite=overwrite)
    try:
        with scratch_dir(workdir) as tmp:
            source = ingest_source_path(store, video.source, tmp)
            result = ingest(source, tmp / "in", max_height=max_height,
                            force_normalize=force_normalize, progress=progress)
            original = Path(result.original_path)
            ext = original.suffix.lstrip(".").lower() or "bin"
            original_key = keys.source_original_key(video_id, ext)
            store.upload_file(original, original_key)
            normalized_key = None
            if result.normalized:
                normalized_key = keys.source_normalized_key(video_id)
                store.upload_file(result.normalized_path, normalized_key)
            p = result.probe
            info = {k: v for k, v in asdict(result).items()
                    if k in ("source_type", "extractor", "webpage_url", "normalize_action",
                             "normalize_reasons")}
            info["probe"] = p
            states.complete_downloading(
                db, video_id, original_key=original_key, normalized_key=normalized_key,
                store=store, title=video.title or result.title, duration_s=p["duration"],
                fps=p["fps"], frame_count=p["frame_count"], width=p["width"],
                height=p["height"], video_codec=p["video_codec"], audio_codec=p["audio_codec"],
                size_bytes=p["size"], uploader=result.uploader, upload_date=result.upload_date,
                info=info)
    except Exception as exc:
        _fail(db, "source_video", video_id, "download", exc)
        raise
    purge_scheduled_deletions(db, store)
    return IngestOutcome(
        video_id=video_id, original_key=original_key, normalized_key=normalized_key,
        normalize_action=result.normalize_action, title=video.title or result.title,
        duration=p["duration"], fps=p["fps"], frame_count=p["frame_count"], width=p["width"],
        height=p["height"], size_bytes=p["size"], seconds=result.seconds)


@dataclass
class SpliceOutcome:
    video_id: int
    clip_ids: list[int]
    identifiers: list[str]
    retired_identifiers: list[str]
    cut_frames: list[int]
    copied: int
    encoded: int
    detect_seconds: float
    split_seconds: float
    frames_analysed: int
    scene_params: dict[str, Any] = field(default_factory=dict)


def playable_key(video: SourceVideo) -> str:
    """The object downstream steps read: the normalized file, or the original when it qualified."""
    key = video.normalized_key or video.original_key
    if not key:
        raise NotFoundError(f"source video {video.id} has no stored file; ingest it first")
    return key


def clip_identifiers_of_video(db: Database, video_id: int) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(Clip.identifier).where(
            Clip.source_video_id == video_id).order_by(Clip.start_frame)))


def splice_source_video(
    db: Database, store: ObjectStore, video_id: int, *, detector: str = "adaptive",
    threshold: float | None = None, min_scene_len: float = 1.0, overwrite: bool = False,
    workdir: Path | None = None, progress: ProgressFn | None = None,
) -> SpliceOutcome:
    """downloaded -> splicing -> spliced: detect scenes, cut clips, register them in one go.

    With ``overwrite`` (re-splicing with new parameters) the video's old clips, their artifacts
    and embeddings are replaced; their objects are deleted after the new clips are committed.
    """
    params = {"detector": detector, "threshold": threshold, "min_scene_len": min_scene_len}
    video = states.get_source_video(db, video_id)
    before = clip_identifiers_of_video(db, video_id)
    states.start_splicing(db, video_id, overwrite=overwrite, scene_params=params)
    try:
        with scratch_dir(workdir) as tmp:
            source = fetch(store, playable_key(video), tmp)

            def part(lo: float, hi: float) -> ProgressFn | None:
                return None if progress is None else (
                    lambda f, msg: progress(lo + (hi - lo) * f, msg))

            detected = detect_scenes(source, detector=detector, threshold=threshold,
                                     min_scene_len=min_scene_len, progress=part(0.0, 0.4))
            split = split_video(source, [asdict(s) for s in detected.scenes], tmp / "clips",
                                name_template=f"{video_id}_{{start}}_{{end}}.mp4",
                                progress=part(0.4, 0.9))
            specs = []
            for clip in split.clips:
                ident = keys.clip_identifier(video_id, clip.start_frame, clip.end_frame)
                key = keys.clip_key(video_id, ident)
                store.upload_file(clip.path, key)
                specs.append(states.ClipSpec(clip.start_frame, clip.end_frame, key))
            ids = states.create_clips_from_splice(db, video_id, specs, fps=split.fps,
                                                  overwrite=overwrite, store=store)
    except Exception as exc:
        _fail(db, "source_video", video_id, "splice", exc)
        raise
    purge_scheduled_deletions(db, store)
    identifiers = [keys.clip_identifier(video_id, s.start_frame, s.end_frame) for s in specs]
    return SpliceOutcome(
        video_id=video_id, clip_ids=ids, identifiers=identifiers,
        retired_identifiers=[i for i in before if i not in set(identifiers)],
        cut_frames=detected.cut_frames, copied=split.copied, encoded=split.encoded,
        detect_seconds=detected.metadata["seconds"], split_seconds=split.seconds,
        frames_analysed=detected.metadata["frames_analysed"],
        scene_params={**params, "threshold": detected.metadata["threshold"]})


# ------------------------------------------------------------------------------------ clips


def clips_by_identifier(db: Database, identifiers: Sequence[str]) -> list[Clip]:
    """Clips for partition keys, in the order given; unknown identifiers raise NotFoundError."""
    with db.session() as session:
        found = {c.identifier: c for c in session.scalars(
            select(Clip).where(Clip.identifier.in_(list(identifiers))))}
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
    db: Database, store: ObjectStore, identifiers: Sequence[str], *, step: str,
    start: Callable[[Database, int], Any], work: Callable[[Clip, Path, Path], int],
    workdir: Path | None, progress: ProgressFn | None,
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
                _fail(db, "clip", clip.id, step, exc)
                out.failed[clip.identifier] = describe_error(exc)
            if progress:
                progress(n / len(clips), f"{step}: {n}/{len(clips)}")
    purge_scheduled_deletions(db, store)
    out.seconds = time.perf_counter() - t0
    return out


def keyframe_clips(
    db: Database, store: ObjectStore, identifiers: Sequence[str], *, strategy: str = "multi",
    overwrite: bool = False, workdir: Path | None = None, progress: ProgressFn | None = None,
) -> ClipBatchOutcome:
    """spliced -> keyframing -> keyframed for each clip: JPEG keyframes uploaded and recorded."""
    def work(clip: Clip, local: Path, tmp: Path) -> int:
        result = extract_keyframes(local, strategy=strategy, out_dir=tmp / f"kf-{clip.id}")
        specs = []
        for kf in result.keyframes:
            key = keys.keyframe_key(clip.source_video_id, clip.identifier, strategy, kf.pct)
            store.upload_file(kf.path, key, content_type="image/jpeg")
            specs.append(states.ArtifactSpec(
                "keyframe", strategy, key, tag=str(kf.pct),
                meta={"frame_index": kf.frame_index, "timestamp": kf.timestamp, "pct": kf.pct,
                      "width": result.width, "height": result.height}))
        return states.complete_keyframing(db, clip.id, specs, store=store)

    return _clip_batch(db, store, identifiers, step="keyframe",
                       start=lambda d, cid: states.start_keyframing(d, cid, overwrite=overwrite),
                       work=work, workdir=workdir, progress=progress)


def sprite_params(tile_width: int, max_fps: float, cols: int) -> str:
    """The sprite's key token: its parameters, so different settings never overwrite each other."""
    return f"w{tile_width}_fps{max_fps:g}_c{cols}".replace(".", "p")


def sprite_clips(
    db: Database, store: ObjectStore, identifiers: Sequence[str], *, tile_width: int = 480,
    max_fps: float = 24.0, cols: int = 5, overwrite: bool = False, workdir: Path | None = None,
    progress: ProgressFn | None = None,
) -> ClipBatchOutcome:
    """keyframed -> generating_sprite -> pending_review: sprite sheet + metadata uploaded."""
    params = sprite_params(tile_width, max_fps, cols)

    def work(clip: Clip, local: Path, tmp: Path) -> int:
        result = make_sprite(local, tmp / f"sprite-{clip.id}.jpg", tile_width=tile_width,
                             max_fps=max_fps, cols=cols)
        key = keys.sprite_key(clip.source_video_id, clip.identifier, params)
        meta_key = keys.sprite_metadata_key(clip.source_video_id, clip.identifier, params)
        store.upload_file(result.path, key, content_type="image/jpeg")
        store.upload_file(result.json_path, meta_key, content_type="application/json")
        meta = {k: v for k, v in result.to_dict().items()
                if k not in ("status", "path", "json_path", "clip")}
        spec = states.ArtifactSpec("sprite_sheet", params, key, sidecar_key=meta_key, meta=meta)
        return states.complete_sprite_generation(db, clip.id, spec, store=store)

    return _clip_batch(
        db, store, identifiers, step="sprite",
        start=lambda d, cid: states.start_sprite_generation(d, cid, overwrite=overwrite),
        work=work, workdir=workdir, progress=progress)


# ------------------------------------------------------------------------ review outcomes


@dataclass
class ReviewJobOutcome:
    action: str
    old_clip_ids: list[int]
    new_clip_ids: list[int]
    new_identifiers: list[str]
    deleted_objects: int = 0


def _identifiers(db: Database, clip_ids: Sequence[int]) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(Clip.identifier).where(
            Clip.id.in_(list(clip_ids))).order_by(Clip.start_frame)))


def execute_merge(db: Database, store: ObjectStore, clip_ids: Sequence[int], *,
                  workdir: Path | None = None) -> ReviewJobOutcome:
    """Carry out a requested merge (clips in ``merging``): one new clip replaces them."""
    clips = sorted((states.get_clip(db, cid) for cid in clip_ids), key=lambda c: c.start_frame)
    try:
        if len(clips) != 2:
            raise ValueError(f"a merge joins two clips, got {len(clips)}")
        a, b = clips
        video_id = a.source_video_id
        ident = keys.clip_identifier(video_id, a.start_frame, b.end_frame)
        with scratch_dir(workdir) as tmp:
            pa = fetch(store, a.storage_key or "", tmp)
            pb = fetch(store, b.storage_key or "", tmp)
            merged = merge_clips(pa, pb, tmp / f"{ident}.mp4")
            store.upload_file(merged.path, keys.clip_key(video_id, ident))
        new_id = states.complete_merge(db, [a.id, b.id], store=store)
    except Exception as exc:
        for c in clips:
            _fail(db, "clip", c.id, "merge", exc)
        raise
    return ReviewJobOutcome("merge", [c.id for c in clips], [new_id], [ident])


def execute_split(db: Database, store: ObjectStore, clip_id: int, frame: int, *,
                  workdir: Path | None = None) -> ReviewJobOutcome:
    """Carry out a requested split at source frame ``frame`` (clip in ``splitting``)."""
    clip = states.get_clip(db, clip_id)
    try:
        video_id = clip.source_video_id
        with scratch_dir(workdir) as tmp:
            local = fetch(store, clip.storage_key or "", tmp)
            result = split_clip_at(local, frame - clip.start_frame, tmp / "parts")
            idents = []
            for part in result.clips:
                start, end = clip.start_frame + part.start_frame, clip.start_frame + part.end_frame
                ident = keys.clip_identifier(video_id, start, end)
                store.upload_file(part.path, keys.clip_key(video_id, ident))
                idents.append(ident)
        new_ids = states.complete_split(db, clip_id, frame, store=store)
    except Exception as exc:
        _fail(db, "clip", clip_id, "split", exc)
        raise
    return ReviewJobOutcome("split", [clip_id], new_ids, idents)


def clip_object_keys(db: Database, clip_ids: Sequence[int]) -> list[str]:
    """Every stored object of the clips: the clip file, keyframes, sprites and sidecars."""
    with db.session() as session:
        clip_keys = session.scalars(select(Clip.storage_key).where(Clip.id.in_(list(clip_ids))))
        arts = session.execute(select(ClipArtifact.storage_key, ClipArtifact.sidecar_key).where(
            ClipArtifact.clip_id.in_(list(clip_ids)))).all()
        return [k for k in clip_keys if k] + [k for row in arts for k in row if k]


# ------------------------------------------------------------------------ invariant checks


def tiling_problems(db: Database, video_id: int) -> list[str]:
    """Gaps, overlaps and out-of-range clips among a video's live clips (empty list: tiled)."""
    with db.session() as session:
        video = session.get(SourceVideo, video_id)
        spans = session.execute(select(Clip.start_frame, Clip.end_frame).where(
            Clip.source_video_id == video_id, Clip.superseded_at.is_(None))
            .order_by(Clip.start_frame)).all()
    if video is None:
        return [f"video {video_id} not found"]
    problems, pos = [], 0
    for start, end in spans:
        if start > pos:
            problems.append(f"gap [{pos}, {start})")
        elif start < pos:
            problems.append(f"overlap at [{start}, {pos})")
        pos = max(pos, end)
    if video.frame_count is not None and pos != video.frame_count:
        problems.append(f"clips end at {pos}, video has {video.frame_count} frames")
    return problems


def _image_size(data: bytes) -> tuple[int, int] | None:
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return None if image is None else (int(image.shape[1]), int(image.shape[0]))


def artifact_problems(db: Database, store: ObjectStore, identifiers: Sequence[str],
                      kind: str) -> list[str]:
    """Missing artifacts or objects for the clips; for sprites, metadata vs. real image size."""
    problems: list[str] = []
    if not identifiers:
        return problems
    with db.session() as session:
        rows = session.execute(
            select(Clip.identifier, ClipArtifact.storage_key, ClipArtifact.meta)
            .join(ClipArtifact, ClipArtifact.clip_id == Clip.id)
            .where(Clip.identifier.in_(list(identifiers)), ClipArtifact.kind == kind)).all()
    have = {r.identifier for r in rows}
    problems += [f"{i}: no {kind}" for i in identifiers if i not in have]
    for ident, key, meta in rows:
        if not store.exists(key):
            problems.append(f"{ident}: {key} missing from the store")
        elif kind == "sprite_sheet":
            size = _image_size(store.read_bytes(key))
            want = (meta.get("cols", 0) * meta.get("tile_width", 0),
                    meta.get("rows", 0) * meta.get("tile_height", 0))
            if size != want:
                problems.append(f"{ident}: sprite is {size}, metadata says {want}")
    return problems


def sprite_key_of(db: Database, identifier: str) -> str:
    with db.session() as session:
        key = session.scalar(
            select(ClipArtifact.storage_key).join(Clip, Clip.id == ClipArtifact.clip_id)
            .where(Clip.identifier == identifier, ClipArtifact.kind == "sprite_sheet"))
    if key is None:
        raise NotFoundError(f"clip {identifier} has no sprite sheet")
    return key


# --------------------------------------------------------------------------- archive purge


@dataclass
class PurgeOutcome:
    clip_ids: list[int]
    deleted: int
    failed: dict[str, str]
    requests: int


def purge_archived_clips(db: Database, store: ObjectStore, clip_ids: Sequence[int], *,
                         event_id: int | None = None, actor: str = "archive-job") -> PurgeOutcome:
    """Delete the stored objects of archived clips in batches, then forget their keys.

    Only clips still ``archived`` are touched (an undo may have come first). Objects go first
    (batched, 1000 keys per request on S3); rows are updated only for clips whose objects are
    all gone, and a ``purge`` review event records that undo is no longer possible.
    """
    from sqlalchemy import delete, insert, update

    from heaters_resources.models import ReviewEvent

    with db.session() as session:
        live = list(session.scalars(select(Clip.id).where(
            Clip.id.in_(list(clip_ids)), Clip.state == "archived", Clip.storage_key.is_not(None))))
    if not live:
        return PurgeOutcome([], 0, {}, 0)
    by_clip = {cid: clip_object_keys(db, [cid]) for cid in live}
    result = store.delete_many([k for ks in by_clip.values() for k in ks])
    done = [cid for cid, ks in by_clip.items() if not any(k in result.failed for k in ks)]
    if done:
        with db.session() as session:
            session.execute(delete(ClipArtifact).where(ClipArtifact.clip_id.in_(done)))
            session.execute(update(Clip).where(Clip.id.in_(done)).values(storage_key=None))
            session.execute(insert(ReviewEvent).values(
                action="purge", actor=actor, clip_ids=done,
                previous_states=["archived"] * len(done),
                payload={"event_id": event_id, "objects_deleted": len(result.deleted)}))
    return PurgeOutcome(done, len(result.deleted), dict(result.failed), result.requests)


def ingest_source_path(store: ObjectStore, source: str, workdir: Path) -> str:
    """Sources may name an object of the store (``store:<key>``, from the S3/prefix inbox):
    fetch it to a local file first; anything else is passed to ``ingest`` as it is."""
    if source.startswith("store:"):
        key = source.removeprefix("store:")
        target = workdir / Path(key).name
        store.download_file(key, target)
        return str(target)
    return source
