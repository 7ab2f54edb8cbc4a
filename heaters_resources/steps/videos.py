"""Source-video steps: ingest (download or copy, normalize when needed) and splice (scene
detection + cutting into clips)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from heaters_media.download import DownloadLimits
from heaters_media.errors import InvalidInputError
from heaters_media.ingest import ingest
from heaters_media.progress import ProgressFn
from heaters_media.scenes import detect_scenes
from heaters_media.split import split_video
from heaters_resources import faults, states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, SourceVideo
from heaters_resources.errors import NotFoundError
from heaters_resources.settings import CLIP_MODES, Settings
from heaters_resources.steps.common import (
    fail_step,
    fetch,
    scratch_dir,
)
from heaters_resources.store import keys
from heaters_resources.store.cleanup import purge_scheduled_deletions
from heaters_resources.store.objects import ObjectStore

log = logging.getLogger(__name__)


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
    skipped: bool = False  # already ingested and no overwrite: the stored result, untouched


INGESTED_STATES = frozenset({"downloaded", "splicing", "splicing_failed", "spliced"})


def _ingested(video: SourceVideo) -> IngestOutcome:
    return IngestOutcome(
        video_id=video.id,
        original_key=video.original_key or "",
        normalized_key=video.normalized_key,
        normalize_action=str((video.info or {}).get("normalize_action", "")),
        title=video.title,
        duration=float(video.duration_s or 0.0),
        fps=float(video.fps or 0.0),
        frame_count=int(video.frame_count or 0),
        width=int(video.width or 0),
        height=int(video.height or 0),
        size_bytes=int(video.size_bytes or 0),
        seconds=0.0,
        skipped=True,
    )


def ingest_source_video(
    db: Database,
    store: ObjectStore,
    video_id: int,
    *,
    max_height: int = 1080,
    force_normalize: bool = False,
    overwrite: bool = False,
    workdir: Path | None = None,
    progress: ProgressFn | None = None,
    limits: DownloadLimits | None = None,
) -> IngestOutcome:
    """new -> downloading -> downloaded: fetch/copy, normalize when needed, upload both files.

    A video already ingested is left as it is unless ``overwrite``: re-running a video's whole
    job after an interruption resumes where it stopped instead of failing at its first step."""
    video = states.get_source_video(db, video_id)
    if video.state in INGESTED_STATES and not overwrite:
        return _ingested(video)
    states.start_downloading(db, video_id, overwrite=overwrite)
    try:
        with scratch_dir(workdir) as tmp:
            source = ingest_source_path(store, video.source, tmp)
            result = ingest(
                source,
                tmp / "in",
                max_height=max_height,
                force_normalize=force_normalize,
                progress=progress,
                # HEATERS_MAX_DOWNLOAD_BYTES / _DOWNLOAD_TIMEOUT_SECONDS / _STALL_SECONDS
                limits=limits or Settings.from_env().download_limits(),
            )
            faults.point("ingest:after-download")
            original = Path(result.original_path)
            ext = original.suffix.lstrip(".").lower() or "bin"
            original_key = keys.source_original_key(video_id, ext)
            store.upload_file(original, original_key)
            normalized_key = None
            if result.normalized:
                normalized_key = keys.source_normalized_key(video_id)
                store.upload_file(result.normalized_path, normalized_key)
            p = result.probe
            info = {
                k: v
                for k, v in asdict(result).items()
                if k
                in (
                    "source_type",
                    "extractor",
                    "webpage_url",
                    "normalize_action",
                    "normalize_reasons",
                )
            }
            info["probe"] = p
            faults.point("ingest:before-commit")
            states.complete_downloading(
                db,
                video_id,
                original_key=original_key,
                normalized_key=normalized_key,
                store=store,
                title=video.title or result.title,
                duration_s=p["duration"],
                fps=p["fps"],
                frame_count=p["frame_count"],
                width=p["width"],
                height=p["height"],
                video_codec=p["video_codec"],
                audio_codec=p["audio_codec"],
                size_bytes=p["size"],
                uploader=result.uploader,
                upload_date=result.upload_date,
                info=info,
            )
    except Exception as exc:
        fail_step(db, "source_video", video_id, "download", exc)
        raise
    purge_scheduled_deletions(db, store)
    return IngestOutcome(
        video_id=video_id,
        original_key=original_key,
        normalized_key=normalized_key,
        normalize_action=result.normalize_action,
        title=video.title or result.title,
        duration=p["duration"],
        fps=p["fps"],
        frame_count=p["frame_count"],
        width=p["width"],
        height=p["height"],
        size_bytes=p["size"],
        seconds=result.seconds,
    )


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
    skipped: bool = False  # already spliced and no overwrite: the stored clips, untouched
    short_clips: int = 0  # clips of shots shorter than min_scene_len (kept out of review)


def _spliced(db: Database, video: SourceVideo) -> SpliceOutcome:
    with db.session() as session:
        clips = list(
            session.execute(
                select(Clip.id, Clip.identifier, Clip.start_frame, Clip.short)
                .where(Clip.source_video_id == video.id, Clip.superseded_at.is_(None))
                .order_by(Clip.start_frame)
            )
        )
    return SpliceOutcome(
        video_id=video.id,
        clip_ids=[c.id for c in clips],
        identifiers=[c.identifier for c in clips],
        retired_identifiers=[],
        cut_frames=[c.start_frame for c in clips[1:]],
        copied=0,
        encoded=0,
        detect_seconds=0.0,
        split_seconds=0.0,
        frames_analysed=0,
        scene_params=dict(video.scene_params or {}),
        skipped=True,
        short_clips=sum(1 for c in clips if c.short),
    )


def playable_key(video: SourceVideo) -> str:
    """The object downstream steps read: the normalized file, or the original when it qualified."""
    key = video.normalized_key or video.original_key
    if not key:
        raise NotFoundError(f"source video {video.id} has no stored file; ingest it first")
    return key


def clip_identifiers_of_video(db: Database, video_id: int) -> list[str]:
    with db.session() as session:
        return list(
            session.scalars(
                select(Clip.identifier)
                .where(Clip.source_video_id == video_id)
                .order_by(Clip.start_frame)
            )
        )


def splice_source_video(
    db: Database,
    store: ObjectStore,
    video_id: int,
    *,
    detector: str = "adaptive",
    threshold: float | None = None,
    min_scene_len: float = 1.0,
    short_policy: str = "keep",
    trim_transitions: bool = False,
    clips: str = "exact",
    overwrite: bool = False,
    workdir: Path | None = None,
    progress: ProgressFn | None = None,
) -> SpliceOutcome:
    """downloaded -> splicing -> spliced: detect scenes, cut clips, register them in one go.

    ``clips="proxy"`` (what the platform passes by default, HEATERS_CLIPS) cuts nothing: the
    clips are rows over frame ranges of the source, the artifacts' decode makes a review proxy
    of each, and a clip's own file is cut when it is approved (`steps.cutting`). A clip's file
    is one x264 encode of every frame it re-encodes, most of a splice's time, spent on clips a
    reviewer may throw away. This function's own default stays ``exact`` (callers that want
    files now, the benchmarks' direct path).

    With ``overwrite`` (re-splicing with new parameters) the video's old clips, their artifacts
    and embeddings are replaced; their objects are deleted after the new clips are committed.
    Without it, a video already spliced is left as it is (the outcome says ``skipped``).
    Clips of shots shorter than ``min_scene_len`` are marked ``short`` (``short_policy``
    "keep"), or merged into the next clip ("merge") or left out ("drop").
    """
    params = {
        "detector": detector,
        "threshold": threshold,
        "min_scene_len": min_scene_len,
        "short_policy": short_policy,
        "trim_transitions": trim_transitions,
        "clips": clips,
    }
    if clips not in CLIP_MODES:
        raise InvalidInputError(f"clips must be one of {', '.join(CLIP_MODES)}, not {clips!r}")
    video = states.get_source_video(db, video_id)
    if video.state == "spliced" and not overwrite:
        return _spliced(db, video)  # resuming a video's job: this step is done
    before = clip_identifiers_of_video(db, video_id)
    states.start_splicing(db, video_id, overwrite=overwrite, scene_params=params)
    try:
        with scratch_dir(workdir) as tmp:
            source = fetch(store, playable_key(video), tmp)

            def part(lo: float, hi: float) -> ProgressFn | None:
                return (
                    None if progress is None else (lambda f, msg: progress(lo + (hi - lo) * f, msg))
                )

            detected = detect_scenes(
                source,
                detector=detector,
                threshold=threshold,
                min_scene_len=min_scene_len,
                short_policy=short_policy,
                trim_transitions=trim_transitions,
                progress=part(0.0, 0.4),
            )
            short = {s.start_frame for s in detected.scenes if s.short}
            faults.point("splice:after-detect")
            if clips == "proxy":
                split = None
                specs = [
                    states.ClipSpec(s.start_frame, s.end_frame, short=s.short, cut=False)
                    for s in detected.scenes
                ]
            else:
                split = split_video(
                    source,
                    [asdict(s) for s in detected.scenes],
                    tmp / "clips",
                    name_template=f"{video_id}_{{start}}_{{end}}.mp4",
                    progress=part(0.4, 0.9),
                )
                specs = []
                for clip in split.clips:
                    ident = keys.clip_identifier(video_id, clip.start_frame, clip.end_frame)
                    key = keys.clip_key(video_id, ident)
                    store.upload_file(clip.path, key)
                    faults.point("splice:between-uploads")
                    specs.append(
                        states.ClipSpec(
                            clip.start_frame, clip.end_frame, key, clip.start_frame in short
                        )
                    )
            faults.point("splice:before-commit")
            ids = states.create_clips_from_splice(
                db,
                video_id,
                specs,
                fps=split.fps if split else None,
                overwrite=overwrite,
                store=store,
            )
    except Exception as exc:
        fail_step(db, "source_video", video_id, "splice", exc)
        raise
    purge_scheduled_deletions(db, store)
    identifiers = [keys.clip_identifier(video_id, s.start_frame, s.end_frame) for s in specs]
    return SpliceOutcome(
        video_id=video_id,
        clip_ids=ids,
        identifiers=identifiers,
        retired_identifiers=[i for i in before if i not in set(identifiers)],
        cut_frames=detected.cut_frames,
        copied=split.copied if split else 0,
        encoded=split.encoded if split else 0,
        detect_seconds=detected.metadata["seconds"],
        split_seconds=split.seconds if split else 0.0,
        frames_analysed=detected.metadata["frames_analysed"],
        scene_params={**params, "threshold": detected.metadata["threshold"]},
        short_clips=sum(1 for s in specs if s.short),
    )


def ingest_source_path(store: ObjectStore, source: str, workdir: Path) -> str:
    """Sources may name an object of the store (``store:<key>``, from the S3/prefix inbox):
    fetch it to a local file first; anything else is passed to ``ingest`` as it is."""
    if source.startswith("store:"):
        key = source.removeprefix("store:")
        target = workdir / Path(key).name
        store.download_file(key, target)
        return str(target)
    return source
