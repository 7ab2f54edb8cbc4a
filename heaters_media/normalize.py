"""Bring a video to the one shape the rest of the pipeline assumes: H.264 yuv420p, constant frame
rate, AAC (or no) audio, in a faststart MP4, with even dimensions and no rotation flag.

Scene detection, frame-exact cutting and browser playback all rely on these properties, and
checking them once here keeps every later step simple. Re-encoding is slow and lossy, so the
cheapest fix is always chosen: a file whose streams are fine but whose container is wrong is only
remuxed, a file whose audio alone is wrong keeps its video bit-for-bit, and only a file whose
video itself is unsuitable is transcoded.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from heaters_media.errors import InvalidInputError, ToolFailedError
from heaters_media.probe import ProbeResult, probe
from heaters_media.progress import ProgressFn
from heaters_media.results import Result
from heaters_media.tools import (
    atomic_path,
    existing_file,
    ffmpeg_cmd,
    h264_args,
    note_process,
    require_tool,
    stderr_tail,
)

Action = Literal["none", "remux", "transcode_audio", "transcode"]

#: File name suffixes we accept as "already an MP4". ffprobe reports MP4 and QuickTime MOV with the
#: same format name, so the suffix is what tells them apart (and what downstream tools look at).
MP4_SUFFIXES = frozenset({".mp4", ".m4v"})

# Problem kinds, ordered by how much work they need to fix.
_CONTAINER = "container"  # fixed by a remux (stream copy)
_AUDIO = "audio"  # fixed by re-encoding audio only
_VIDEO = "video"  # needs a full video transcode


@dataclass
class NormalizeResult(Result):
    """What :func:`normalize` did.

    ``path`` is the file to use from now on: ``out_file`` when something was written, or the input
    itself when ``action`` is ``"none"`` (nothing is copied, to save time and disk).
    """

    path: str
    reasons: list[str]
    action: Action
    seconds: float
    probe: dict[str, Any] = field(default_factory=dict)


def _problems(p: ProbeResult) -> list[tuple[str, str]]:
    """Every way ``p`` deviates from the target, each tagged with the kind of fix it needs."""
    found: list[tuple[str, str]] = []
    if p.video_codec != "h264":
        found.append((_VIDEO, f"video codec is {p.video_codec or 'unknown'}, not h264"))
    if p.pix_fmt != "yuv420p":
        found.append((_VIDEO, f"pixel format is {p.pix_fmt or 'unknown'}, not yuv420p"))
    if p.is_vfr:
        found.append((_VIDEO, "variable frame rate"))
    if p.width % 2 or p.height % 2:
        found.append((_VIDEO, f"odd dimensions {p.width}x{p.height}"))
    if p.rotation:
        found.append((_VIDEO, f"rotation metadata ({p.rotation} degrees)"))
    if p.audio_codec is not None and p.audio_codec != "aac":
        found.append((_AUDIO, f"audio codec is {p.audio_codec}, not aac"))
    is_mp4 = "mp4" in p.format_name and Path(p.path).suffix.lower() in MP4_SUFFIXES
    if not is_mp4:
        found.append(
            (
                _CONTAINER,
                f"container is {p.format_name or 'unknown'}"
                f" ({Path(p.path).suffix or 'no suffix'}), not mp4",
            )
        )
    elif not p.faststart:
        found.append((_CONTAINER, "not faststart (moov atom after mdat)"))
    return found


def needs_normalization(probe_result: ProbeResult) -> list[str]:
    """Reasons why the probed file must be normalized; an empty list means it is fine as it is."""
    return [reason for _, reason in _problems(probe_result)]


def _choose_action(kinds: set[str]) -> Action:
    """The cheapest action that fixes every problem kind present."""
    if _VIDEO in kinds:
        return "transcode"
    if _AUDIO in kinds:
        return "transcode_audio"
    if _CONTAINER in kinds:
        return "remux"
    return "none"


def _output_rate(p: ProbeResult) -> str:
    """The source's average frame rate as a fraction ffmpeg accepts.

    A VFR source's measured average can be an unwieldy fraction (e.g. 1800000/60061); limiting
    the denominator to 1001 keeps NTSC rates exact and everything else within a hair.
    """
    try:
        rate = Fraction(p.fps_fraction).limit_denominator(1001)
    except (ValueError, ZeroDivisionError):
        rate = Fraction(p.fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


def _ffmpeg_args(
    src: Path, dst: Path, p: ProbeResult, action: Action, crf: int, preset: str
) -> list[str]:
    """ffmpeg arguments (after the global ones) for ``action``.

    Only the first real video stream (``V`` skips cover art) and the first audio stream are kept:
    subtitle/data streams often cannot go into MP4 and nothing downstream uses them.
    """
    args = ["-i", str(src), "-map", "0:V:0", "-map", "0:a:0?", "-sn", "-dn"]
    if action == "remux":
        args += ["-c", "copy"]
    elif action == "transcode_audio":
        args += ["-c:v", "copy", "-c:a", "aac", "-b:a", "160k"]
    else:
        # Autorotation (ffmpeg's default) bakes rotation into the pixels; the scale makes the
        # dimensions even, which yuv420p H.264 requires. Constant frame rate at the source's
        # average rate so that frame index <-> time is a plain multiplication downstream. The
        # video is moved to start at 0: a source whose first frame sits a fraction of a frame
        # late (common after a remux into MKV) would otherwise get a duplicated first frame
        # from the CFR conversion; the price is an audio shift smaller than that offset.
        args += [
            "-vf",
            "setpts=PTS-STARTPTS,scale=trunc(iw/2)*2:trunc(ih/2)*2",
            *h264_args(preset, crf),
            "-fps_mode",
            "cfr",
            "-r",
            _output_rate(p),
        ]
        args += (
            ["-c:a", "copy"]
            if p.audio_codec == "aac"
            else ["-af", "asetpts=PTS-STARTPTS", "-c:a", "aac", "-b:a", "160k"]
        )
    args += ["-movflags", "+faststart", "-f", "mp4", str(dst)]
    return args


def _parse_out_time(line: str) -> float | None:
    """Seconds from an ``out_time_us=`` / ``out_time_ms=`` line of ``-progress`` output.

    (ffmpeg's ``out_time_ms`` is, despite its name, also in microseconds.)
    """
    key, _, value = line.partition("=")
    if key in ("out_time_us", "out_time_ms"):
        try:
            return max(0.0, int(value) / 1_000_000)
        except ValueError:
            return None
    return None


def run_ffmpeg_with_progress(
    args: Sequence[str], *, what: str, duration: float, progress: ProgressFn | None, message: str
) -> None:
    """Run ffmpeg, reporting ``out_time / duration`` through ``progress`` as it goes.

    stderr goes to a temporary file rather than a pipe so a chatty ffmpeg can never block on a
    full pipe while we read its progress from stdout.
    """
    cmd = ffmpeg_cmd("-progress", "pipe:1", "-nostats", *args)
    require_tool(cmd[0])
    last = 0.0
    note_process()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, errors="replace"
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                seconds = _parse_out_time(line.strip())
                if seconds is None or progress is None or duration <= 0:
                    continue
                fraction = min(1.0, seconds / duration)
                if fraction > last:
                    last = fraction
                    progress(fraction, message)
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            err.seek(0)
            raise ToolFailedError(f"{what}: ffmpeg exited {code}: {stderr_tail(err.read())}")
    if progress is not None:
        progress(1.0, message)


def normalize(
    path: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    *,
    probe_result: ProbeResult | None = None,
    crf: int = 18,
    preset: str = "veryfast",
    progress: ProgressFn | None = None,
    force: bool = False,
) -> NormalizeResult:
    """Normalize ``path`` into ``out_file`` (an MP4) with the cheapest sufficient action.

    ``probe_result`` avoids probing again when the caller already did. ``force`` transcodes even
    a file that already qualifies (to re-encode a suspicious file). The output is written
    atomically and probed again; if it still does not qualify, ToolFailedError is raised and
    nothing is left at ``out_file``.
    """
    started = time.monotonic()
    src = existing_file(path)
    dst = Path(out_file)
    if dst.suffix.lower() not in MP4_SUFFIXES:
        raise InvalidInputError(f"normalized output must be an .mp4 file, got {dst.name}")
    if dst.resolve() == src.resolve():
        raise InvalidInputError("normalize cannot write over its own input")
    p = probe_result or probe(src, verify=True)
    problems = _problems(p)
    reasons = [reason for _, reason in problems]
    action = _choose_action({kind for kind, _ in problems})
    if force:
        action = "transcode"
        reasons = reasons or ["forced"]
    if action == "none":
        return NormalizeResult(
            path=str(src),
            reasons=[],
            action="none",
            seconds=round(time.monotonic() - started, 3),
            probe=dataclasses.asdict(p),
        )

    with atomic_path(dst) as tmp:
        args = _ffmpeg_args(src, tmp, p, action, crf, preset)
        run_ffmpeg_with_progress(
            args,
            what=f"normalize ({action}) {src.name}",
            duration=p.duration,
            progress=progress,
            message=action,
        )
        out = probe(tmp, verify=True)
        left = needs_normalization(out)
        if left:
            raise ToolFailedError(
                f"normalize ({action}) of {src.name} did not produce a "
                f"conforming file: {'; '.join(left)}",
                reasons=left,
            )
    out.path = str(dst)
    return NormalizeResult(
        path=str(dst),
        reasons=reasons,
        action=action,
        seconds=round(time.monotonic() - started, 3),
        probe=dataclasses.asdict(out),
    )
