"""Frame-accurate cutting of a video into clips, and splitting a clip in two during review.

A clip is the half-open frame range ``[start_frame, end_frame)`` of its source. Two ways to cut:

* **stream copy** when the range is made of whole closed GOPs (it starts on a key frame and
  ends right before one, or at the end of the video): lossless and nearly free. The copied file
  is checked packet by packet (count, no edit-list discards, starts on a key frame at time 0);
  anything off falls back to re-encoding.
* **re-encode** otherwise: seek on the input to the middle between frame ``start - 1`` and frame
  ``start`` (so rounding can never pick the wrong neighbour), keep exactly ``end - start``
  frames, and encode H.264 yuv420p + AAC in a faststart MP4 that browsers play.

Clips are cut in parallel by a small thread pool of ffmpeg processes; everything is written to a
staging folder and published only once every clip succeeded. Merging two clips is in
:mod:`heaters_media.merge`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from heaters_media.encode_pass import Piece, encode_window, plan_runs, trimmed_encode_args
from heaters_media.errors import InvalidInputError, ToolFailedError
from heaters_media.probe import Packets, ProbeResult, clip_is_exact, probe_video, read_packets
from heaters_media.progress import ProgressFn
from heaters_media.results import Result
from heaters_media.scene_list import as_frame, clip_names, validate_scenes
from heaters_media.tools import (
    existing_file,
    ffmpeg_cmd,
    publish,
    run,
    staging_dir,
    stream_map_args,
)

Method = Literal["copy", "encode"]
Precision = Literal["exact", "keyframe"]

DEFAULT_NAME_TEMPLATE = "{stem}_{start}_{end}.mp4"
#: A one-pass encode window holds at most this many frames (progress and failure isolation).
WINDOW_MAX_FRAMES = 15_000
AUDIO_BITRATE = "128k"


@dataclass
class ClipFile(Result):
    index: int
    path: str
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    frame_count: int
    method: Method
    size: int
    #: precision "keyframe": the start that was asked for (the clip starts at the key frame
    #: at or before it, ``start_frame``); None when the clip starts where asked.
    snapped_from: int | None = None


@dataclass
class SplitResult(Result):
    source: str
    out_dir: str
    fps: float
    fps_fraction: str
    source_frame_count: int
    clips: list[ClipFile] = field(default_factory=list)
    copied: int = 0
    encoded: int = 0
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# Cutting


def _seconds(value: Fraction) -> str:
    """A non-negative time for ffmpeg's command line, rounded up to the microsecond."""
    micro = max(0, math.ceil(value * 1_000_000))
    return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"


@dataclass
class _Plan:
    index: int
    start: int
    end: int
    name: str
    copy: bool
    snapped_from: int | None = None


def _copy_clip(
    src: Path, pk: Packets, plan: _Plan, out: Path, has_audio: bool, frame_dur: Fraction
) -> None:
    n = plan.end - plan.start
    args: list[str] = []
    if plan.start > 0:
        # The key frame's own time, rounded *up* to the microsecond: the seek lands on this key
        # frame (never the previous one) and the sub-microsecond excess rounds away in the
        # stream time base, so no frame gets a negative time (which an edit list would hide).
        args += ["-ss", _seconds(pk.time(plan.start))]
    args += ["-i", str(src), *stream_map_args(has_audio), "-c", "copy", "-frames:v", str(n)]
    if plan.end < len(pk.pts):
        # -frames:v stops the video; -t stops the audio (half a frame of slack for the video).
        args += ["-t", _seconds(pk.time(plan.end) - pk.time(plan.start) + frame_dur / 2)]
    args += ["-movflags", "+faststart", "-f", "mp4", str(out)]
    run(ffmpeg_cmd(*args), what=f"copy frames [{plan.start}, {plan.end}) of {src.name}")


def _encode_clip(
    src: Path,
    pk: Packets,
    plan: _Plan,
    out: Path,
    has_audio: bool,
    frame_dur: Fraction,
    *,
    crf: int,
    preset: str,
    threads: int,
) -> None:
    n = plan.end - plan.start
    args: list[str] = []
    trim_audio = Fraction(0)
    if plan.start > 0:
        # Seek to the middle between frame start-1 and frame start: ffmpeg's accurate seek then
        # decodes from the previous key frame and drops exactly the frames before ``start``.
        seek = (pk.time(plan.start - 1) + pk.time(plan.start)) / 2
        args += ["-ss", _seconds(seek)]
        trim_audio = max(Fraction(0), pk.time(plan.start) - Fraction(_seconds(seek)))
    args += trimmed_encode_args(
        src, n, has_audio=has_audio, preset=preset, crf=crf, threads=threads
    )
    if has_audio:
        end = pk.time(plan.end) if plan.end < len(pk.pts) else pk.time(plan.end - 1) + frame_dur
        duration = end - pk.time(plan.start)
        args += [
            "-af",
            f"atrim=start={float(trim_audio):.6f},asetpts=PTS-STARTPTS",
            "-c:a",
            "aac",
            "-b:a",
            AUDIO_BITRATE,
            "-t",
            _seconds(duration),
        ]
    args += ["-movflags", "+faststart", "-f", "mp4", str(out)]
    run(
        ffmpeg_cmd(*args, threads=threads),
        what=f"encode frames [{plan.start}, {plan.end}) of {src.name}",
    )


def _default_workers() -> int:
    cpus = os.cpu_count() or 2
    return max(2, min(4, cpus // 4))


@dataclass
class _Job:
    """Everything decided before the first clip is cut: source, packets, per-clip plans."""

    src: Path
    out: Path
    info: ProbeResult
    pk: Packets
    fps: Fraction
    frame_dur: Fraction
    plans: list[_Plan]
    workers: int
    threads: int
    crf: int
    preset: str
    copy_ok: bool = False  # the source can be stream-copied at all


def _plan_split(
    path: str | os.PathLike[str],
    scenes: Sequence[Any],
    out_dir: str | os.PathLike[str],
    *,
    name_template: str,
    crf: int,
    preset: str,
    workers: int | None,
    allow_copy: bool,
) -> _Job:
    """Validate the request and decide, clip by clip, whether it can be stream-copied."""
    src = existing_file(path)
    info = probe_video(src)
    pairs = validate_scenes(scenes, info.frame_count)
    names = clip_names(name_template, src.stem, pairs)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"output folder is a file: {out}")
    src_resolved = src.resolve()
    if any((out / name).resolve() == src_resolved for name in names):
        raise InvalidInputError("a clip name would overwrite the source video")
    if crf < 0 or crf > 51:
        raise InvalidInputError(f"crf must be within 0..51, got {crf}")
    workers = workers or _default_workers()
    if workers < 1:
        raise InvalidInputError(f"workers must be >= 1, got {workers}")

    pk = read_packets(src, what=f"reading packets of {src.name}")
    fps = Fraction(info.fps_fraction)
    # Stream copy needs a browser-ready source whose packets are exactly the probed frames.
    copy_ok = (
        allow_copy
        and info.video_codec == "h264"
        and info.pix_fmt == "yuv420p"
        and info.audio_codec in (None, "aac")
        and not info.is_vfr
        and pk.discard == 0
        and len(pk.pts) == info.frame_count
    )
    keys = {i for i, k in enumerate(pk.keys) if k} if copy_ok else set()
    total = len(pk.pts)
    if total < info.frame_count:
        raise ToolFailedError(f"{src.name}: {total} video packets but {info.frame_count} frames")
    plans = [
        _Plan(k, s, e, names[k], copy_ok and s in keys and (e == total or e in keys))
        for k, (s, e) in enumerate(pairs)
    ]
    workers = min(workers, len(plans))
    return _Job(
        src=src,
        out=out,
        info=info,
        pk=pk,
        fps=fps,
        frame_dur=1 / fps,
        plans=plans,
        workers=workers,
        threads=max(1, (os.cpu_count() or 2) // workers),
        crf=crf,
        preset=preset,
        copy_ok=copy_ok,
    )


def _cut(job: _Job, plan: _Plan, stage: Path) -> ClipFile:
    """Cut one clip into ``stage``: stream copy when planned and exact, else re-encode."""
    src, pk, has_audio = job.src, job.pk, job.info.has_audio
    dest = stage / plan.name
    method: Method = "encode"
    if plan.copy:
        try:
            _copy_clip(src, pk, plan, dest, has_audio, job.frame_dur)
            if clip_is_exact(dest, plan.end - plan.start):
                method = "copy"
        except ToolFailedError:
            pass
        if method != "copy":
            dest.unlink(missing_ok=True)
    if method == "copy":
        return _clip_file(job, plan, dest, "copy")
    _encode_clip(
        src,
        pk,
        plan,
        dest,
        has_audio,
        job.frame_dur,
        crf=job.crf,
        preset=job.preset,
        threads=job.threads,
    )
    return _encoded(job, plan, dest)


def _encoded(job: _Job, plan: _Plan, dest: Path) -> ClipFile:
    """The ClipFile of a clip re-encoded into ``dest``, after checking it holds its frames."""
    if not clip_is_exact(dest, plan.end - plan.start):
        raise ToolFailedError(
            f"clip {plan.index} [{plan.start}, {plan.end}) of {job.src.name} does not hold "
            f"exactly {plan.end - plan.start} frames after encoding",
            clip=plan.index,
        )
    return _clip_file(job, plan, dest, "encode")


def _clip_file(job: _Job, plan: _Plan, dest: Path, method: Method) -> ClipFile:
    """Describe a cut clip. Its times are the source frames' own timestamps (seconds from the
    first frame), not ``frame / fps``: on variable-frame-rate video the average rate puts a
    clip seconds away from where it plays."""
    return ClipFile(
        index=plan.index,
        path=str(job.out / plan.name),
        start_frame=plan.start,
        end_frame=plan.end,
        start_time=round(float(job.pk.elapsed(plan.start, job.frame_dur)), 6),
        end_time=round(float(job.pk.elapsed(plan.end, job.frame_dur)), 6),
        frame_count=plan.end - plan.start,
        method=method,
        size=dest.stat().st_size,
        snapped_from=plan.snapped_from,
    )


def _snap_to_keyframes(job: _Job, copy_ok: bool) -> None:
    """precision="keyframe": every clip starts at the key frame at or before its first frame
    and is stream-copied (nothing is re-encoded, the snap is reported per clip)."""
    if not copy_ok:
        raise InvalidInputError(
            f"{job.src.name} cannot be stream-copied (needs H.264 yuv420p, AAC or no audio, "
            "constant frame rate, no hidden frames); use precision 'exact'"
        )
    keys = [i for i, k in enumerate(job.pk.keys) if k]
    snapped = []
    for plan in job.plans:
        start = max((k for k in keys if k <= plan.start), default=0)
        moved = plan.start if start != plan.start else None
        snapped.append(replace(plan, start=start, copy=True, snapped_from=moved))
    job.plans = snapped


def _encode_window(job: _Job, window: list[_Plan], stage: Path, tag: str) -> list[ClipFile]:
    """Re-encode consecutive clips in one pass; a clip the pass got wrong is cut alone."""
    if len(window) == 1:
        return [_cut(job, window[0], stage)]
    pieces = [Piece(p.start, p.end, p.name) for p in window]
    # A failed pass is not final: each clip is then cut alone, so the error names the clip.
    with contextlib.suppress(ToolFailedError):
        encode_window(
            job.src,
            job.pk,
            pieces,
            stage,
            has_audio=job.info.has_audio,
            frame_dur=job.frame_dur,
            crf=job.crf,
            preset=job.preset,
            threads=job.threads,
            tag=tag,
        )
    clips = []
    for plan in window:
        dest = stage / plan.name
        try:
            if dest.is_file():
                clips.append(_encoded(job, plan, dest))
                continue
        except ToolFailedError:
            dest.unlink()
        clips.append(_cut(job, replace(plan, copy=False), stage))
    return clips


def _cut_all(job: _Job, stage: Path, progress: ProgressFn | None) -> list[ClipFile]:
    """Cut every planned clip into ``stage``: copies one by one, re-encodes in one pass per
    window of consecutive clips, all on a thread pool; the clips in index order."""
    plans = job.plans
    clips: list[ClipFile] = []
    to_encode = [p for p in plans if not p.copy]
    by_start = {p.start: p for p in to_encode}
    windows = plan_runs(
        [Piece(p.start, p.end, p.name) for p in to_encode], job.workers, WINDOW_MAX_FRAMES
    )
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=job.workers, thread_name_prefix="split"
    )
    try:
        futures = [
            pool.submit(_encode_window, job, [by_start[p.start] for p in w], stage, f"w{k}")
            for k, w in enumerate(windows)
        ]
        # Copies are cheap: after the encodes, longest first so the pool's tail is short.
        copies = sorted((p for p in plans if p.copy), key=lambda p: -(p.end - p.start))
        futures += [pool.submit(lambda p: [_cut(job, p, stage)], plan) for plan in copies]
        done_frames = 0
        all_frames = sum(p.end - p.start for p in plans)
        for fut in concurrent.futures.as_completed(futures):
            for clip in fut.result():
                clips.append(clip)
                done_frames += clip.frame_count
            if progress:
                progress(done_frames / all_frames, f"{len(clips)}/{len(plans)} clips cut")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    clips.sort(key=lambda c: c.index)
    return clips


def split_video(
    path: str | os.PathLike[str],
    scenes: Sequence[Any],
    out_dir: str | os.PathLike[str],
    *,
    name_template: str = DEFAULT_NAME_TEMPLATE,
    crf: int = 20,
    preset: str = "veryfast",
    workers: int | None = None,
    progress: ProgressFn | None = None,
    allow_copy: bool = True,
    precision: Precision = "exact",
) -> SplitResult:
    """Cut ``path`` into one frame-accurate MP4 per scene in ``out_dir``.

    ``scenes`` are mappings/objects with ``start_frame`` (inclusive) and ``end_frame``
    (exclusive), or ``(start, end)`` pairs: sorted, non-overlapping, non-empty and inside the
    video (gaps are allowed). ``name_template`` may use ``{stem}``, ``{index}``, ``{start}`` and
    ``{end}``. ``allow_copy=False`` forces re-encoding of every clip. Nothing is written unless
    every clip succeeds.

    ``precision="keyframe"`` (video2dataset's mode) never re-encodes: each clip starts at the key
    frame at or before its first frame (``start_frame``; the asked start is ``snapped_from``)
    and is stream-copied, so clips may overlap. A clip whose copy is not exact (e.g. an end that
    B-frames reach across) is re-encoded over the snapped range and says so in ``method``.
    """
    if precision not in ("exact", "keyframe"):
        raise InvalidInputError(f"precision must be 'exact' or 'keyframe', got {precision!r}")
    started = time.monotonic()
    job = _plan_split(
        path,
        scenes,
        out_dir,
        name_template=name_template,
        crf=crf,
        preset=preset,
        workers=workers,
        allow_copy=allow_copy,
    )
    if precision == "keyframe":
        _snap_to_keyframes(job, job.copy_ok)
    if progress:
        progress(0.0, f"cutting {len(job.plans)} clips")
    with staging_dir(job.out) as stage:
        clips = _cut_all(job, stage, progress)
        publish([stage / Path(c.path).name for c in clips], job.out)
    copied = sum(c.method == "copy" for c in clips)
    return SplitResult(
        source=str(job.src),
        out_dir=str(job.out),
        fps=job.info.fps,
        fps_fraction=job.info.fps_fraction,
        source_frame_count=job.info.frame_count,
        clips=clips,
        copied=copied,
        encoded=len(clips) - copied,
        seconds=round(time.monotonic() - started, 3),
    )


def split_clip_at(
    clip: str | os.PathLike[str],
    frame: int,
    out_dir: str | os.PathLike[str],
    **kwargs: Any,
) -> SplitResult:
    """Split ``clip`` into ``[0, frame)`` and ``[frame, frame_count)``; ``frame`` must lie
    strictly inside the clip. Extra keyword arguments go to :func:`split_video`."""
    src = existing_file(clip)
    info = probe_video(src)
    frame = as_frame(frame, "split frame")
    if not 0 < frame < info.frame_count:
        raise InvalidInputError(
            f"split frame {frame} must be strictly inside the clip (0 < frame < "
            f"{info.frame_count})",
            frame=frame,
            frame_count=info.frame_count,
        )
    scenes = [
        {"start_frame": 0, "end_frame": frame},
        {"start_frame": frame, "end_frame": info.frame_count},
    ]
    return split_video(src, scenes, out_dir, **kwargs)
