"""Frame-accurate cutting of a video into clips, and merging/splitting clips during review.

A clip is the half-open frame range ``[start_frame, end_frame)`` of its source. Two ways to cut:

* **stream copy** when the range is made of whole closed GOPs (it starts on a key frame and
  ends right before one, or at the end of the video): lossless and nearly free. The copied file
  is checked packet by packet (count, no edit-list discards, starts on a key frame at time 0);
  anything off falls back to re-encoding.
* **re-encode** otherwise: seek on the input to the middle between frame ``start - 1`` and frame
  ``start`` (so rounding can never pick the wrong neighbour), keep exactly ``end - start``
  frames, and encode H.264 yuv420p + AAC in a faststart MP4 that browsers play.

Clips are cut in parallel by a small thread pool of ffmpeg processes; everything is written to a
staging folder and published only once every clip succeeded.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from heaters_media.errors import (
    InvalidInputError,
    MediaError,
    ToolFailedError,
)
from heaters_media.probe import ProbeResult, probe
from heaters_media.results import Result
from heaters_media.tools import (
    FFPROBE,
    atomic_path,
    existing_file,
    ffmpeg_cmd,
    h264_args,
    publish,
    require_tool,
    run,
    staging_dir,
    stderr_tail,
)

ProgressFn = Callable[[float, str], None]
Method = Literal["copy", "encode"]

DEFAULT_NAME_TEMPLATE = "{stem}_{start}_{end}.mp4"
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


@dataclass
class MergeResult(Result):
    path: str
    a: str
    b: str
    a_frames: int
    b_frames: int
    frame_count: int
    fps: float
    method: Method
    size: int
    seconds: float


# --------------------------------------------------------------------------------------------
# Inputs


def _as_frame(value: Any, what: str) -> int:
    if isinstance(value, bool) or value is None:
        raise InvalidInputError(f"{what} must be an integer frame number, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidInputError(f"{what} must be an integer frame number, got {value!r}")
        return int(value)
    if isinstance(value, int):
        return value
    raise InvalidInputError(f"{what} must be an integer frame number, got {value!r}")


def _scene_bounds(scene: Any, k: int) -> tuple[int, int]:
    """(start_frame, end_frame) of a scene given as a mapping, an object, or a pair."""
    if isinstance(scene, Mapping):
        if "start_frame" not in scene or "end_frame" not in scene:
            raise InvalidInputError(f"scene {k} needs start_frame and end_frame: {scene!r}")
        start, end = scene["start_frame"], scene["end_frame"]
    elif hasattr(scene, "start_frame") and hasattr(scene, "end_frame"):
        start, end = scene.start_frame, scene.end_frame
    elif isinstance(scene, Sequence) and not isinstance(scene, str) and len(scene) == 2:
        start, end = scene
    else:
        raise InvalidInputError(f"scene {k} is not a scene: {scene!r}")
    return _as_frame(start, f"scene {k} start_frame"), _as_frame(end, f"scene {k} end_frame")


def validate_scenes(scenes: Any, frame_count: int) -> list[tuple[int, int]]:
    """Scenes as (start, end) pairs: in [0, frame_count], non-empty, sorted, non-overlapping."""
    if isinstance(scenes, (str, bytes, Mapping)) or not isinstance(scenes, Sequence):
        raise InvalidInputError("scenes must be a list of {start_frame, end_frame} scenes")
    if not scenes:
        raise InvalidInputError("scenes is empty: nothing to split")
    pairs = [_scene_bounds(s, k) for k, s in enumerate(scenes)]
    prev_end = 0
    for k, (start, end) in enumerate(pairs):
        if start < 0 or end > frame_count:
            raise InvalidInputError(
                f"scene {k} [{start}, {end}) is outside the video's frames [0, {frame_count})",
                scene=k,
                start_frame=start,
                end_frame=end,
                frame_count=frame_count,
            )
        if end <= start:
            raise InvalidInputError(f"scene {k} [{start}, {end}) is empty or reversed", scene=k)
        if start < prev_end:
            raise InvalidInputError(
                f"scene {k} [{start}, {end}) overlaps or precedes the previous scene "
                f"(which ends at {prev_end}); scenes must be sorted and non-overlapping",
                scene=k,
            )
        prev_end = end
    return pairs


def probe_video(path: str | os.PathLike[str]) -> ProbeResult:
    """Probe (with the truncation check) a file that must be a real video, with typed errors:
    ``probe`` itself rejects audio-only, still images and text files."""
    return probe(existing_file(path), verify=True)


@dataclass
class _Packets:
    """Presentation-ordered video packet timestamps of a file (no decoding)."""

    pts: list[int]
    keys: list[bool]
    discard: int
    time_base: Fraction
    format_start: Fraction

    def time(self, index: int) -> Fraction:
        """Seconds of frame ``index`` relative to the file start that ``-ss`` is measured from."""
        return self.pts[index] * self.time_base - self.format_start


def _ffprobe(args: Sequence[str], *, what: str) -> dict[str, Any]:
    require_tool(FFPROBE)
    proc = subprocess.run(
        [FFPROBE, "-v", "error", "-of", "json", *args],
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    if proc.returncode != 0:
        raise ToolFailedError(
            f"{what}: ffprobe exited {proc.returncode}: {stderr_tail(proc.stderr)}"
        )
    try:
        return json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise ToolFailedError(f"{what}: unreadable ffprobe output") from exc


def _read_packets(path: Path) -> _Packets:
    info = _ffprobe(
        [
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts,flags:stream=time_base:format=start_time",
            str(path),
        ],
        what=f"reading packets of {path.name}",
    )
    streams = info.get("streams") or [{}]
    try:
        tb = Fraction(streams[0].get("time_base") or "1/90000")
    except (ValueError, ZeroDivisionError):
        tb = Fraction(1, 90000)
    try:
        fmt_start = Fraction((info.get("format") or {}).get("start_time") or "0")
    except ValueError:
        fmt_start = Fraction(0)
    rows = []
    discard = 0
    for pk in info.get("packets") or []:
        flags = str(pk.get("flags", ""))
        if "D" in flags:
            discard += 1
            continue
        pts = pk.get("pts")
        if isinstance(pts, int) or (isinstance(pts, str) and pts.lstrip("-").isdigit()):
            rows.append((int(pts), "K" in flags))
    rows.sort()
    return _Packets([r[0] for r in rows], [r[1] for r in rows], discard, tb, fmt_start)


def _clip_is_exact(path: Path, frames: int, max_start: Fraction = Fraction(1, 1000)) -> bool:
    """True when ``path`` holds exactly ``frames`` displayable video frames starting on a key
    frame at time 0 (within ``max_start`` s): an edit list hiding frames, a short copy or a late
    start all fail."""
    try:
        pk = _read_packets(path)
    except MediaError:
        return False
    if pk.discard or len(pk.pts) != frames or not pk.keys or not pk.keys[0]:
        return False
    return abs(pk.pts[0] * pk.time_base) <= max_start


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


def _streams_args(has_audio: bool) -> list[str]:
    return [
        "-map",
        "0:v:0",
        *(["-map", "0:a:0"] if has_audio else []),
        "-sn",
        "-dn",
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
    ]


def _copy_clip(
    src: Path, pk: _Packets, plan: _Plan, out: Path, has_audio: bool, frame_dur: Fraction
) -> None:
    n = plan.end - plan.start
    args: list[str] = []
    if plan.start > 0:
        # The key frame's own time, rounded *up* to the microsecond: the seek lands on this key
        # frame (never the previous one) and the sub-microsecond excess rounds away in the
        # stream time base, so no frame gets a negative time (which an edit list would hide).
        args += ["-ss", _seconds(pk.time(plan.start))]
    args += ["-i", str(src), *_streams_args(has_audio), "-c", "copy", "-frames:v", str(n)]
    if plan.end < len(pk.pts):
        # -frames:v stops the video; -t stops the audio (half a frame of slack for the video).
        args += ["-t", _seconds(pk.time(plan.end) - pk.time(plan.start) + frame_dur / 2)]
    args += ["-movflags", "+faststart", "-f", "mp4", str(out)]
    run(ffmpeg_cmd(*args), what=f"copy frames [{plan.start}, {plan.end}) of {src.name}")


def _encode_clip(
    src: Path,
    pk: _Packets,
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
    # trim (not -frames:v, which would end the audio early) keeps exactly n frames.
    args += [
        "-i",
        str(src),
        *_streams_args(has_audio),
        "-vf",
        f"trim=end_frame={n},setpts=PTS-STARTPTS",
        "-fps_mode",
        "passthrough",
        *h264_args(preset, crf),
        "-threads",
        str(threads),
    ]
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


def _clip_names(template: str, stem: str, pairs: list[tuple[int, int]]) -> list[str]:
    names = []
    for k, (start, end) in enumerate(pairs):
        try:
            name = template.format(stem=stem, index=k, start=start, end=end)
        except (KeyError, IndexError, ValueError) as exc:
            raise InvalidInputError(
                f"bad name_template {template!r}: {exc}; use {{stem}} {{index}} {{start}} {{end}}"
            ) from exc
        if (
            not name
            or "/" in name
            or "\\" in name
            or name.startswith(".")
            or Path(name).suffix.lower() != ".mp4"
        ):
            raise InvalidInputError(
                f"name_template gives {name!r}: clip names must be plain file names ending in .mp4"
            )
        names.append(name)
    if len(set(names)) != len(names):
        raise InvalidInputError(f"name_template {template!r} gives duplicate clip names")
    return names


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
) -> SplitResult:
    """Cut ``path`` into one frame-accurate MP4 per scene in ``out_dir``.

    ``scenes`` are mappings/objects with ``start_frame`` (inclusive) and ``end_frame``
    (exclusive), or ``(start, end)`` pairs: sorted, non-overlapping, non-empty and inside the
    video (gaps are allowed). ``name_template`` may use ``{stem}``, ``{index}``, ``{start}`` and
    ``{end}``. ``allow_copy=False`` forces re-encoding of every clip. Nothing is written unless
    every clip succeeds.
    """
    started = time.monotonic()
    src = existing_file(path)
    info = probe_video(src)
    pairs = validate_scenes(scenes, info.frame_count)
    names = _clip_names(name_template, src.stem, pairs)
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

    pk = _read_packets(src)
    fps = Fraction(info.fps_fraction)
    frame_dur = 1 / fps
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
    threads = max(1, (os.cpu_count() or 2) // workers)
    has_audio = info.has_audio

    def cut(plan: _Plan, stage: Path) -> ClipFile:
        dest = stage / plan.name
        method: Method = "encode"
        if plan.copy:
            try:
                _copy_clip(src, pk, plan, dest, has_audio, frame_dur)
                if _clip_is_exact(dest, plan.end - plan.start):
                    method = "copy"
            except ToolFailedError:
                pass
            if method != "copy":
                dest.unlink(missing_ok=True)
        if method == "encode":
            _encode_clip(
                src, pk, plan, dest, has_audio, frame_dur, crf=crf, preset=preset, threads=threads
            )
            if not _clip_is_exact(dest, plan.end - plan.start):
                raise ToolFailedError(
                    f"clip {plan.index} [{plan.start}, {plan.end}) of {src.name} does not hold "
                    f"exactly {plan.end - plan.start} frames after encoding",
                    clip=plan.index,
                )
        return ClipFile(
            index=plan.index,
            path=str(out / plan.name),
            start_frame=plan.start,
            end_frame=plan.end,
            start_time=round(plan.start / float(fps), 6),
            end_time=round(plan.end / float(fps), 6),
            frame_count=plan.end - plan.start,
            method=method,
            size=dest.stat().st_size,
        )

    if progress:
        progress(0.0, f"cutting {len(plans)} clips")
    clips: list[ClipFile] = []
    # Work on the longest clips first so the pool's tail is short.
    order = sorted(plans, key=lambda p: -(p.end - p.start))
    with staging_dir(out) as stage:
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="split"
        )
        try:
            futures = [pool.submit(cut, plan, stage) for plan in order]
            done_frames = 0
            all_frames = sum(p.end - p.start for p in plans)
            for fut in concurrent.futures.as_completed(futures):
                clip = fut.result()
                clips.append(clip)
                done_frames += clip.frame_count
                if progress:
                    progress(
                        done_frames / all_frames, f"clip {len(clips)}/{len(plans)} ({clip.method})"
                    )
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        clips.sort(key=lambda c: c.index)
        publish([stage / Path(c.path).name for c in clips], out)
    copied = sum(c.method == "copy" for c in clips)
    return SplitResult(
        source=str(src),
        out_dir=str(out),
        fps=info.fps,
        fps_fraction=info.fps_fraction,
        source_frame_count=info.frame_count,
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
    frame = _as_frame(frame, "split frame")
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


# --------------------------------------------------------------------------------------------
# Merging


def _stream_params(path: Path) -> dict[str, Any]:
    """Codec parameters that must match for two files to be concatenated by stream copy."""
    info = _ffprobe(
        ["-show_streams", "-show_data_hash", "md5", str(path)],
        what=f"reading stream parameters of {path.name}",
    )
    keys_v = (
        "codec_name",
        "profile",
        "level",
        "width",
        "height",
        "pix_fmt",
        "r_frame_rate",
        "avg_frame_rate",
        "time_base",
        "sample_aspect_ratio",
        "color_range",
        "color_space",
        "field_order",
        "has_b_frames",
        "extradata_hash",
    )
    keys_a = (
        "codec_name",
        "profile",
        "sample_rate",
        "channels",
        "channel_layout",
        "sample_fmt",
        "time_base",
        "extradata_hash",
    )
    streams = info.get("streams") or []
    video = [s for s in streams if s.get("codec_type") == "video"]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    return {
        "streams": [s.get("codec_type") for s in streams],
        "video": {k: video[0].get(k) for k in keys_v} if video else None,
        "audio": {k: audio[0].get(k) for k in keys_a} if audio else None,
    }


def _concat_list_line(path: Path) -> str:
    escaped = str(path.resolve()).replace("'", "'\\''")
    return f"file '{escaped}'\n"


def merge_clips(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    *,
    crf: int = 20,
    preset: str = "veryfast",
    threads: int | None = None,
    allow_copy: bool = True,
) -> MergeResult:
    """Concatenate clip ``a`` then clip ``b`` into ``out_file`` with exactly a + b frames.

    Clips with identical codec parameters (same encoder settings, as the clips of one split
    usually have) are joined by stream copy through the concat demuxer; anything else is
    re-encoded with the concat filter (``b`` scaled/padded to ``a``'s size, timestamps laid out
    at ``a``'s frame rate, silence where a clip has no audio).
    """
    started = time.monotonic()
    pa, pb = existing_file(a), existing_file(b)
    dst = Path(out_file)
    if dst.suffix.lower() != ".mp4":
        raise InvalidInputError(f"merged clip must be an .mp4 file, got {dst.name}")
    if dst.resolve() in (pa.resolve(), pb.resolve()):
        raise InvalidInputError("merge cannot write over one of its inputs")
    ia, ib = probe_video(pa), probe_video(pb)
    want = ia.frame_count + ib.frame_count
    params_a, params_b = _stream_params(pa), _stream_params(pb)
    can_copy = (
        allow_copy
        and params_a == params_b
        and ia.video_codec == "h264"
        and ia.pix_fmt == "yuv420p"
        and ia.audio_codec in (None, "aac")
        and not ia.is_vfr
        and not ib.is_vfr
    )
    threads = threads or os.cpu_count() or 2
    method: Method = "encode"
    with atomic_path(dst) as tmp:
        if can_copy:
            with tempfile.TemporaryDirectory(prefix="heaters-merge-") as tdir:
                listing = Path(tdir) / "list.txt"
                listing.write_text(_concat_list_line(pa) + _concat_list_line(pb))
                try:
                    run(
                        ffmpeg_cmd(
                            "-f",
                            "concat",
                            "-safe",
                            "0",
                            "-i",
                            str(listing),
                            *_streams_args(ia.has_audio),
                            "-c",
                            "copy",
                            "-movflags",
                            "+faststart",
                            "-f",
                            "mp4",
                            str(tmp),
                        ),
                        what=f"concat {pa.name} + {pb.name}",
                    )
                    # The concat demuxer shifts everything by the AAC priming delay (~23 ms),
                    # so the video may start that late (A/V sync kept); under a frame is fine.
                    if _clip_is_exact(tmp, want, 1 / Fraction(ia.fps_fraction)):
                        method = "copy"
                except ToolFailedError:
                    pass
        if method == "encode":
            _merge_encode(pa, pb, ia, ib, tmp, crf=crf, preset=preset, threads=threads)
            if not _clip_is_exact(tmp, want):
                raise ToolFailedError(f"merging {pa.name} + {pb.name} did not give {want} frames")
        size = tmp.stat().st_size
    return MergeResult(
        path=str(dst),
        a=str(pa),
        b=str(pb),
        a_frames=ia.frame_count,
        b_frames=ib.frame_count,
        frame_count=want,
        fps=ia.fps,
        method=method,
        size=size,
        seconds=round(time.monotonic() - started, 3),
    )


def _merge_encode(
    pa: Path,
    pb: Path,
    ia: ProbeResult,
    ib: ProbeResult,
    out: Path,
    *,
    crf: int,
    preset: str,
    threads: int,
) -> None:
    w, h = ia.width - ia.width % 2, ia.height - ia.height % 2
    rate = Fraction(ia.fps_fraction)
    chains = []
    for i in range(2):
        chains.append(
            f"[{i}:v:0]scale={w}:{h}:force_original_aspect_ratio=decrease,"
            f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p,setpts=PTS-STARTPTS[v{i}]"
        )
    audio = ia.has_audio or ib.has_audio
    if audio:
        rate_hz = ia.audio_sample_rate or ib.audio_sample_rate or 48000
        layout = "stereo" if max(ia.audio_channels or 0, ib.audio_channels or 0) >= 2 else "mono"
        for i, info in enumerate((ia, ib)):
            dur = info.frame_count / info.fps
            src = f"[{i}:a:0]" if info.has_audio else f"anullsrc=r={rate_hz}:cl={layout},"
            if info.has_audio:
                src += "asetpts=PTS-STARTPTS,"
            chains.append(
                f"{src}aformat=sample_rates={rate_hz}:channel_layouts={layout},"
                f"apad,atrim=end={dur:.6f},asetpts=PTS-STARTPTS[a{i}]"
            )
        graph = ";".join(chains) + ";[v0][a0][v1][a1]concat=n=2:v=1:a=1[vc][a]"
    else:
        graph = ";".join(chains) + ";[v0][v1]concat=n=2:v=1:a=0[vc]"
    graph += f";[vc]setpts=N/({rate.numerator}/{rate.denominator}*TB)[v]"
    args = [
        "-i",
        str(pa),
        "-i",
        str(pb),
        "-filter_complex",
        graph,
        "-map",
        "[v]",
        "-fps_mode",
        "passthrough",
        *h264_args(preset, crf),
        "-threads",
        str(threads),
    ]
    if audio:
        args += ["-map", "[a]", "-c:a", "aac", "-b:a", AUDIO_BITRATE]
    args += ["-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4", str(out)]
    run(ffmpeg_cmd(*args), what=f"merge (encode) {pa.name} + {pb.name}")
