"""Probe a media file with ffprobe: geometry, timing, codecs, and a truncation check.

The truncation check counts demuxed packets (no decoding) and compares them with the container's
own frame count, so a file cut short is reported as corrupt before anything expensive runs.

This module is the package's one way to run ffprobe (:func:`ffprobe_json`) and to read a file's
video packets (:func:`read_packets`); the other modules go through it.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from heaters_media.errors import (
    CorruptMediaError,
    MediaError,
    ToolFailedError,
    UnsupportedMediaError,
)
from heaters_media.mp4index import sample_index_problem
from heaters_media.results import Result
from heaters_media.tools import (
    existing_file,
    ffprobe_bin,
    note_process,
    require_tool,
    stderr_tail,
)

# ffmpeg "demuxes" still images and even text files as one-frame videos; none is footage.
STILL_IMAGE_FORMATS = frozenset({"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe"})
# Demuxer and codec names of text drawn as frames (a .txt/.nfo file probes as ``tty``/``ansi``).
TEXT_NAMES = frozenset({"tty", "ansi", "bintext", "xbin", "idf", "text"})


@dataclass
class ProbeResult(Result):
    path: str
    size: int
    format_name: str
    duration: float
    fps: float
    fps_fraction: str
    is_vfr: bool
    frame_count: int
    width: int
    height: int
    rotation: int
    video_codec: str
    pix_fmt: str
    profile: str | None
    audio_codec: str | None
    audio_channels: int | None
    audio_sample_rate: int | None
    bit_rate: int | None
    faststart: bool
    start_time: float
    tags: dict[str, str] = field(default_factory=dict)
    declared_frames: int | None = None  # the container's own frame count, where it has one
    #: ``width`` x ``height`` are the frames as ffmpeg decodes them, rotation applied (a phone
    #: video stored 1920x1080 with a 90 degree display matrix is 1080x1920): every JPEG, sprite
    #: tile and re-encode made from the file has that shape. The stored (coded) size is here.
    coded_width: int = 0
    coded_height: int = 0
    #: Shape of one pixel of those frames (anamorphic video: not 1:1), rotation applied.
    sample_aspect_ratio: str = "1:1"

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    @property
    def sar(self) -> Fraction:
        return _fraction(self.sample_aspect_ratio.replace(":", "/")) or Fraction(1)

    @property
    def display_size(self) -> tuple[int, int]:
        """The frame size as a player shows it: rotation applied and pixels made square
        (the width scaled by the sample aspect ratio, as ffmpeg's ``scale=iw*sar:ih``)."""
        return max(1, round(self.width * self.sar)), self.height


def _fraction(text: str | None) -> Fraction | None:
    if not text or text in ("0/0", "N/A"):
        return None
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _rotation(stream: dict[str, Any]) -> int:
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            try:
                return round(float(side["rotation"])) % 360
            except (TypeError, ValueError, OverflowError):  # nan/inf from a hostile file
                return 0
    tag = (stream.get("tags") or {}).get("rotate")
    return int(tag) % 360 if tag and tag.lstrip("-").isdigit() else 0


def _geometry(v: dict[str, Any], rotation: int) -> tuple[int, int, str]:
    """(width, height, sample aspect ratio) of the frames as decoded with rotation applied:
    a quarter turn swaps the sides and inverts the pixel shape (as ffmpeg's ``transpose``)."""
    width, height = int(v.get("width") or 0), int(v.get("height") or 0)
    sar = _fraction(str(v.get("sample_aspect_ratio") or "").replace(":", "/")) or Fraction(1)
    if rotation % 180 == 90:
        width, height, sar = height, width, 1 / sar
    return width, height, f"{sar.numerator}:{sar.denominator}"


def is_faststart(path: str | os.PathLike[str]) -> bool:
    """True when an MP4/MOV file's ``moov`` atom precedes its ``mdat`` (plays while downloading)."""
    try:
        with open(path, "rb") as fh:
            offset = 0
            size = os.fstat(fh.fileno()).st_size
            while offset + 8 <= size:
                fh.seek(offset)
                header = fh.read(16)
                atom_size, atom_type = struct.unpack(">I4s", header[:8])
                if atom_type == b"moov":
                    return True
                if atom_type == b"mdat":
                    return False
                if atom_size == 1:
                    atom_size = struct.unpack(">Q", header[8:16])[0]
                elif atom_size == 0:
                    return False
                if atom_size < 8:
                    return False
                offset += atom_size
    except (OSError, struct.error):
        return False
    return False


def ffprobe_json(path: Path, args: Sequence[str], *, what: str | None = None) -> dict[str, Any]:
    """Run ``ffprobe -v error -of json ARGS PATH`` and return its parsed output.

    Without ``what`` a failure means the file itself cannot be read: CorruptMediaError. With
    ``what`` (the step, for the message) it is a ToolFailedError instead, for files this package
    wrote itself or already probed, where a failure is the tool's and not the input's.
    """
    ffprobe = ffprobe_bin()
    require_tool(ffprobe)
    note_process()
    proc = subprocess.run(
        [ffprobe, "-v", "error", "-of", "json", *args, str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    if proc.returncode != 0:
        if what is not None:
            raise ToolFailedError(
                f"{what}: ffprobe exited {proc.returncode}: {stderr_tail(proc.stderr)}"
            )
        raise CorruptMediaError(
            f"cannot read media file {path.name}: {stderr_tail(proc.stderr)}", path=str(path)
        )
    try:
        data: dict[str, Any] = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:
        if what is not None:
            raise ToolFailedError(f"{what}: unreadable ffprobe output") from exc
        raise CorruptMediaError(f"ffprobe gave unreadable output for {path.name}") from exc
    return data


def _select_streams(
    info: dict[str, Any], p: Path
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any], str]:
    """(video stream, audio stream or None, format, format name) of a file that is footage."""
    streams = info.get("streams") or []
    fmt = info.get("format") or {}
    if not streams:
        raise UnsupportedMediaError(f"no media streams in {p.name}", path=str(p))
    videos = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not videos:
        what = "audio only" if audios else "no video stream"
        raise UnsupportedMediaError(f"{p.name} has no video stream ({what})", path=str(p))
    v = videos[0]
    a = audios[0] if audios else None
    fmt_name = str(fmt.get("format_name", ""))
    if fmt_name in STILL_IMAGE_FORMATS or fmt_name.endswith("_pipe"):
        raise UnsupportedMediaError(f"{p.name} is a still image, not a video", path=str(p))
    if fmt_name in TEXT_NAMES or v.get("codec_name") in TEXT_NAMES:
        raise UnsupportedMediaError(f"{p.name} is a text file, not a video", path=str(p))
    return v, a, fmt, fmt_name


def _frame_rate(v: dict[str, Any], p: Path) -> tuple[Fraction, bool]:
    """(frame rate, whether the stream is variable frame rate) of video stream ``v``."""
    r_rate = _fraction(v.get("r_frame_rate"))
    avg_rate = _fraction(v.get("avg_frame_rate"))
    rate = avg_rate or r_rate
    if rate is None:
        raise CorruptMediaError(f"{p.name}: video stream has no frame rate", path=str(p))
    is_vfr = bool(
        r_rate and avg_rate and abs(float(r_rate) - float(avg_rate)) > 0.01 * float(avg_rate)
    )
    return rate, is_vfr


def _frames_and_duration(
    v: dict[str, Any], fmt: dict[str, Any], rate: Fraction, p: Path, *, verify: bool
) -> tuple[int, float, int | None]:
    """(frame count, duration, declared frame count); with ``verify`` a short file is corrupt."""
    duration = float(v.get("duration") or fmt.get("duration") or 0.0)
    declared = int(v["nb_frames"]) if str(v.get("nb_frames", "")).isdigit() else None
    counted = int(v["nb_read_packets"]) if str(v.get("nb_read_packets", "")).isdigit() else None
    if verify and counted is not None and declared is not None and counted < declared:
        raise CorruptMediaError(
            f"{p.name} is truncated: container declares {declared} video frames, "
            f"only {counted} are present",
            path=str(p),
            declared=declared,
            present=counted,
        )
    frame_count = declared or counted or round(duration * float(rate))
    if frame_count <= 0 or duration <= 0:
        if frame_count > 0 and duration <= 0:
            duration = frame_count / float(rate)
        else:
            raise CorruptMediaError(f"{p.name}: no video frames", path=str(p))
    return frame_count, duration, declared


def _check_index(v: dict[str, Any], fmt_name: str, p: Path) -> None:
    """What the packet count cannot see: a video stream ffprobe could not identify (no codec,
    0x0: the file was cut inside its headers), and an MP4/MOV index that points past the end
    of the file or contradicts itself (:mod:`heaters_media.mp4index`)."""
    if not v.get("codec_name") or not int(v.get("width") or 0) or not int(v.get("height") or 0):
        raise CorruptMediaError(
            f"{p.name}: the video stream cannot be identified (codec "
            f"{v.get('codec_name') or 'unknown'}, {v.get('width') or 0}x{v.get('height') or 0})",
            path=str(p),
        )
    if "mp4" in fmt_name or "mov" in fmt_name:
        problem = sample_index_problem(p)
        if problem:
            raise CorruptMediaError(f"{p.name}: {problem}", path=str(p))


def probe(path: str | os.PathLike[str], *, verify: bool = True) -> ProbeResult:
    """Probe ``path``; with ``verify`` also count packets to catch truncated files.

    Raises CorruptMediaError for empty/unreadable/truncated files and UnsupportedMediaError for
    files without a (real) video stream, such as audio-only files or still images.
    """
    p = existing_file(path)
    size = p.stat().st_size
    if size == 0:
        raise CorruptMediaError(f"empty file: {p.name}", path=str(p))
    args = ["-show_format", "-show_streams"]
    if verify:
        args += ["-count_packets"]
    v, a, fmt, fmt_name = _select_streams(ffprobe_json(p, args), p)
    rate, is_vfr = _frame_rate(v, p)
    frame_count, duration, declared = _frames_and_duration(v, fmt, rate, p, verify=verify)
    if verify:  # after the packet count, whose error says how many frames are missing
        _check_index(v, fmt_name, p)
    bit_rate = fmt.get("bit_rate")
    rotation = _rotation(v)
    width, height, sar = _geometry(v, rotation)
    tags = {str(k).lower(): str(val) for k, val in (fmt.get("tags") or {}).items()}
    return ProbeResult(
        path=str(p),
        size=size,
        format_name=fmt_name,
        duration=round(duration, 6),
        fps=round(float(rate), 6),
        fps_fraction=f"{rate.numerator}/{rate.denominator}",
        is_vfr=is_vfr,
        frame_count=frame_count,
        width=width,
        height=height,
        rotation=rotation,
        video_codec=str(v.get("codec_name", "")),
        pix_fmt=str(v.get("pix_fmt", "")),
        profile=v.get("profile"),
        audio_codec=a.get("codec_name") if a else None,
        audio_channels=int(a["channels"]) if a and a.get("channels") else None,
        audio_sample_rate=int(a["sample_rate"]) if a and a.get("sample_rate") else None,
        bit_rate=int(bit_rate) if bit_rate and str(bit_rate).isdigit() else None,
        faststart=is_faststart(p) if "mp4" in fmt_name or "mov" in fmt_name else False,
        start_time=float(v.get("start_time") or fmt.get("start_time") or 0.0),
        tags={k: tags[k] for k in ("title", "artist", "comment", "encoder") if k in tags},
        declared_frames=declared,
        coded_width=int(v.get("width") or 0),
        coded_height=int(v.get("height") or 0),
        sample_aspect_ratio=sar,
    )


def probe_video(path: str | os.PathLike[str]) -> ProbeResult:
    """Probe (with the truncation check) a file that must be a real video, with typed errors:
    ``probe`` itself rejects audio-only, still images and text files."""
    return probe(existing_file(path), verify=True)


# --------------------------------------------------------------------------------------------
# Packets


@dataclass(frozen=True)
class Packets:
    """The video packets of a file (demuxed, not decoded), sorted into presentation order.

    ``discard`` counts the packets flagged ``D`` (dropped at decode, e.g. hidden by an edit
    list); :func:`read_packets` lists them too only when asked to keep them.
    """

    pts: list[int]
    pts_time: list[float]  # ffprobe's own seconds for each pts (not shifted by format_start)
    keys: list[bool]
    discard: int
    time_base: Fraction
    format_start: Fraction
    #: Each packet's duration in time-base units (0 where the container gives none).
    durations: list[int] = field(default_factory=list)

    def time(self, index: int) -> Fraction:
        """Seconds of frame ``index`` relative to the file start that ``-ss`` is measured from."""
        return self.pts[index] * self.time_base - self.format_start

    def elapsed(self, index: int, frame_dur: Fraction) -> Fraction:
        """Seconds from the first frame's display to frame ``index``'s, from the real timestamps
        (a variable-frame-rate video's frames are not ``index / fps`` apart). ``index`` may be
        the frame count: the end of the last frame, by its own duration where the container
        records one, else ``frame_dur``."""
        if not self.pts:
            return index * frame_dur
        if index < len(self.pts):
            return (self.pts[index] - self.pts[0]) * self.time_base
        last = self.durations[-1] if len(self.durations) == len(self.pts) else 0
        end = (self.pts[-1] - self.pts[0]) * self.time_base
        return end + (last * self.time_base if last > 0 else frame_dur)


def read_packets(path: Path, *, keep_discarded: bool = False, what: str | None = None) -> Packets:
    """Read the first video stream's packets of ``path`` (demux only, no decoding).

    Packets without a numeric pts are skipped; discarded ones are counted and, unless
    ``keep_discarded``, left out. ``what`` selects ToolFailedError over CorruptMediaError on
    failure (see :func:`ffprobe_json`).
    """
    info = ffprobe_json(
        path,
        [
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts,pts_time,duration,flags:stream=time_base:format=start_time",
        ],
        what=what,
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
    rows: list[tuple[int, float, bool, int]] = []
    discard = 0
    for pk in info.get("packets") or []:
        flags = str(pk.get("flags", ""))
        if "D" in flags:
            discard += 1
            if not keep_discarded:
                continue
        pts = _integer(pk.get("pts"))
        if pts is not None:
            duration = _integer(pk.get("duration")) or 0
            rows.append((pts, float(pk.get("pts_time") or 0.0), "K" in flags, duration))
    rows.sort()
    return Packets(
        pts=[r[0] for r in rows],
        pts_time=[r[1] for r in rows],
        keys=[r[2] for r in rows],
        discard=discard,
        time_base=tb,
        format_start=fmt_start,
        durations=[r[3] for r in rows],
    )


def _integer(value: Any) -> int | None:
    """An integer field of ffprobe's JSON (a number, or a string of digits), else None."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


def clip_is_exact(path: Path, frames: int, max_start: Fraction = Fraction(1, 1000)) -> bool:
    """True when ``path`` holds exactly ``frames`` displayable video frames starting on a key
    frame at time 0 (within ``max_start`` s): an edit list hiding frames, a short copy or a late
    start all fail."""
    try:
        pk = read_packets(path, what=f"reading packets of {path.name}")
    except MediaError:
        return False
    if pk.discard or len(pk.pts) != frames or not pk.keys or not pk.keys[0]:
        return False
    return abs(pk.pts[0] * pk.time_base) <= max_start


@dataclass(frozen=True)
class PacketIndex:
    """Video packets in presentation order: how many, and which are key frames (with times)."""

    count: int
    keyframes: list[int]
    keyframe_times: list[float]  # seconds from the start of the file, same order as keyframes


def packet_index(path: str | os.PathLike[str]) -> PacketIndex:
    """Read the video packets (demux only, no decoding): counts and key-frame positions.

    Every packet with a timestamp counts, discarded ones included.
    """
    packets = read_packets(existing_file(path), keep_discarded=True)
    start = float(packets.format_start)
    times_keys = zip(packets.pts_time, packets.keys, strict=True)
    keys = [(i, t - start) for i, (t, key) in enumerate(times_keys) if key]
    return PacketIndex(len(packets.pts), [i for i, _ in keys], [t for _, t in keys])


def keyframe_indices(path: str | os.PathLike[str]) -> list[int]:
    """Indices (presentation order) of the video key frames, read from packets without decoding."""
    return packet_index(path).keyframes
