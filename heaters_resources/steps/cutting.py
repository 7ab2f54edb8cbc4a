"""Cutting the files of clips that are only frame ranges of their source (HEATERS_CLIPS=proxy).

Why deferred: a clip's full-quality file is an x264 encode of every frame its cut does not
stream-copy, most of a splice's media time, and a curated library throws most clips away. In
``proxy`` mode the splice stores clip rows only, review plays a small proxy made in the
artifacts' decode, and the file is cut here when it is needed: when the clip is approved (its
embedding run, `steps.embeddings`), or when a merge must join files (`steps.review`).

The cut is `heaters_media.split.split_video` over just those clips' ranges of the source (one
fetch and one pass per video, gaps allowed), so the files are the same frame-exact files the
``exact`` mode makes at splice. Files are uploaded first and recorded after
(`states.record_clip_files`); a clip that took another file meanwhile keeps it, and an upload
no row took is deleted. A retry after a crash cuts again and overwrites the same key.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from heaters_media.split import split_video
from heaters_resources import faults, states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip
from heaters_resources.steps.common import (
    describe_error,
    discard_unreferenced,
    fetch,
    scratch_dir,
)
from heaters_resources.steps.videos import playable_key
from heaters_resources.store import keys
from heaters_resources.store.objects import ObjectStore


@dataclass
class CutOutcome:
    """Which clips got their file (ids), which failed (id -> reason), and how long it took."""

    cut: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


def _cut_from_source(
    db: Database, store: ObjectStore, video_id: int, clips: Sequence[Clip], tmp: Path
) -> dict[int, Path]:
    """The clips' files, cut from one fetch of their video's playable source."""
    source = fetch(store, playable_key(states.get_source_video(db, video_id)), tmp)
    ordered = sorted(clips, key=lambda c: c.start_frame)
    split = split_video(
        source,
        [(c.start_frame, c.end_frame) for c in ordered],
        tmp / f"cut-{video_id}",
        name_template=f"{video_id}_{{start}}_{{end}}.mp4",
    )
    return {c.id: Path(made.path) for c, made in zip(ordered, split.clips, strict=True)}


def local_clip_file(db: Database, store: ObjectStore, clip: Clip, tmp: Path) -> Path:
    """The clip's file in ``tmp``: fetched when it has one, else cut from its source."""
    if clip.storage_key:
        return fetch(store, clip.storage_key, tmp)
    return _cut_from_source(db, store, clip.source_video_id, [clip], tmp)[clip.id]


def cut_clip_files(
    db: Database,
    store: ObjectStore,
    clips: Sequence[Clip],
    *,
    workdir: Path | None = None,
) -> CutOutcome:
    """Cut, upload and record the file of each clip in ``clips`` that has none.

    One pass per source video; a video whose cut fails fails only its own clips (the reason
    is in ``failed``, the caller stores it). Clips that have a file are left alone."""
    t0 = time.perf_counter()
    out = CutOutcome()
    by_video: dict[int, list[Clip]] = defaultdict(list)
    for clip in clips:
        if not clip.storage_key:
            by_video[clip.source_video_id].append(clip)
    for video_id, members in sorted(by_video.items()):
        uploaded: dict[int, str] = {}  # clip id -> the key its file was uploaded to
        try:
            with scratch_dir(workdir) as tmp:
                files = _cut_from_source(db, store, video_id, members, tmp)
                for clip in members:
                    key = keys.clip_key(video_id, clip.identifier)
                    store.upload_file(files[clip.id], key, content_type="video/mp4")
                    uploaded[clip.id] = key
                    faults.point("cut:between-uploads")
            faults.point("cut:before-commit")
            taken = states.record_clip_files(db, uploaded, store=store)
            out.cut += taken
            discard_unreferenced(db, store, [k for c, k in uploaded.items() if c not in taken])
        except Exception as exc:
            discard_unreferenced(db, store, list(uploaded.values()))
            reason = f"cut: {describe_error(exc)}"
            for clip in members:
                out.failed[clip.id] = reason
    out.seconds = time.perf_counter() - t0
    return out
