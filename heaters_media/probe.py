"""Probe a media file with ffprobe: geometry, timing, codecs, and a truncation check.

The truncation check counts demuxed packets (no decoding) and compares them with the container's
own frame count, so a file cut short is reported as corrupt before anything expensive runs.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from heaters_media.errors import CorruptMediaError, UnsupportedMediaError
from heaters_media.results import Result
from heaters_media.tools import FFPROBE, existing_file, require_tool, stderr_tail

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

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


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
            return round(float(side["rotation"])) % 360
    tag = (stream.get("tags") or {}).get("rotate")
    return int(tag) % 360 if tag and tag.lstrip("-").isdigit() else 0


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


def _ffprobe_json(args: list[str], path: Path) -> dict[str, Any]:
    require_tool(FFPROBE)
    proc = subprocess.run(
        [FFPROBE, "-v", "error", "-of", "json", *args, str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    if proc.returncode != 0:
        raise CorruptMediaError(
            f"cannot read media file {path.name}: {stderr_tail(proc.stderr)}", path=str(path)
        )
    try:
        return json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise CorruptMediaError(f"ffprobe gave unreadable output for {path.name}") from exc


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
    info = _ffprobe_json(args, p)
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

    r_rate = _fraction(v.get("r_frame_rate"))
    avg_rate = _fraction(v.get("avg_frame_rate"))
    rate = avg_rate or r_rate
    if rate is None:
        raise CorruptMediaError(f"{p.name}: video stream has no frame rate", path=str(p))
    is_vfr = bool(
        r_rate and avg_rate and abs(float(r_rate) - float(avg_rate)) > 0.01 * float(avg_rate)
    )

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

    bit_rate = fmt.get("bit_rate")
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
        width=int(v.get("width") or 0),
        height=int(v.get("height") or 0),
        rotation=_rotation(v),
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
    )


@dataclass(frozen=True)
class PacketIndex:
    """Video packets in presentation order: how many, and which are key frames (with times)."""

    count: int
    keyframes: list[int]
    keyframe_times: list[float]  # seconds from the start of the file, same order as keyframes


def packet_index(path: str | os.PathLike[str]) -> PacketIndex:
    """Read the video packets (demux only, no decoding): counts and key-frame positions."""
    p = existing_file(path)
    info = _ffprobe_json(["-select_streams", "v:0", "-show_entries", "packet=pts,pts_time,flags",
                          "-show_entries", "format=start_time"], p)
    packets = sorted(
        (int(pk["pts"]), float(pk.get("pts_time") or 0.0), "K" in pk.get("flags", ""))
        for pk in info.get("packets") or []
        if str(pk.get("pts", "")).lstrip("-").isdigit()
    )
    start = float((info.get("format") or {}).get("start_time") or 0.0)
    keys = [(i, t - start) for i, (_, t, key) in enumerate(packets) if key]
    return PacketIndex(len(packets), [i for i, _ in keys], [t for _, t in keys])


def keyframe_indices(path: str | os.PathLike[str]) -> list[int]:
    """Indices (presentation order) of the video key frames, read from packets without decoding."""
    return packet_index(path).keyframes
