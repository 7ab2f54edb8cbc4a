"""Stream small RGB frames out of one ffmpeg decode, in chunks, without holding the video.

Scene detection only needs a thumbnail of every frame. ffmpeg decodes (multi-threaded) and
downscales with area averaging in C; we read fixed-size chunks of raw frames from its pipe
into numpy, so memory stays bounded and Python work is vectorized per chunk, not per frame.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heaters_media.errors import CorruptMediaError, ToolFailedError
from heaters_media.tools import (
    ffmpeg_bin,
    note_process,
    require_tool,
    stderr_tail,
    video_input_args,
)


@dataclass(frozen=True)
class FrameGeometry:
    width: int
    height: int

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * 3


def analysis_geometry(src_width: int, src_height: int, target_width: int) -> FrameGeometry:
    """Downscaled size with the source aspect kept and even dimensions (never upscaled)."""
    w = min(target_width, src_width) if src_width else target_width
    w = max(16, w - (w % 2))
    h = round(src_height * w / src_width) if src_width else (w * 9) // 16
    return FrameGeometry(w, max(16, h - (h % 2)))


def stream_frames(
    path: str | os.PathLike[str],
    geometry: FrameGeometry,
    *,
    chunk_frames: int = 128,
    fast_decode: bool = True,
    threads: int = 0,
    seek: float | None = None,
    max_frames: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield uint8 arrays of shape (n, height, width, 3), n <= chunk_frames, in display order.

    ``fast_decode`` skips the H.264/HEVC in-loop deblocking filter: it changes pixels by a
    few levels (irrelevant at thumbnail size) and saves roughly a fifth of the decode time.
    Every decoded frame is kept (``-fps_mode passthrough``), so index i is frame i.
    ``seek`` (seconds, a key frame's time) starts decoding at that key frame without decoding
    anything before it; ``max_frames`` stops after that many frames. Together they decode one
    segment of the video (see ``plan_segments``).
    """
    ffmpeg = ffmpeg_bin()
    require_tool(ffmpeg)
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", str(threads)]
    if fast_decode:
        cmd += ["-skip_loop_filter", "all"]
    if seek is not None:
        # A backward seek to the key frame at or before `seek`, and no frame dropped after it.
        cmd += ["-noaccurate_seek", "-ss", f"{seek:.6f}"]
    cmd += video_input_args(path)
    if max_frames is not None:
        cmd += ["-frames:v", str(max_frames)]
    cmd += [
        "-vf",
        f"scale={geometry.width}:{geometry.height}:flags=area,format=rgb24",
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "pipe:1",
    ]
    note_process()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=geometry.frame_bytes * chunk_frames,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr = proc.stderr
    err_chunks: list[bytes] = []
    # Drain stderr concurrently so a chatty ffmpeg can never block on a full pipe.
    drain = threading.Thread(target=lambda: err_chunks.append(stderr.read()), daemon=True)
    drain.start()
    fb = geometry.frame_bytes
    want = fb * chunk_frames
    try:
        while True:
            buf = proc.stdout.read(want)
            if not buf:
                break
            n = len(buf) // fb
            if n:
                yield np.frombuffer(buf, dtype=np.uint8, count=n * fb).reshape(
                    n, geometry.height, geometry.width, 3
                )
            if len(buf) < want:
                break
    finally:
        if proc.poll() is None:
            proc.stdout.close()
            proc.kill()
        proc.wait()
        drain.join(timeout=5)
    if proc.returncode not in (0, -9):
        message = stderr_tail(b"".join(err_chunks))
        if "Invalid data" in message or "moov atom" in message:
            raise CorruptMediaError(f"cannot decode {Path(path).name}: {message}")
        raise ToolFailedError(f"decoding {Path(path).name} failed: {message}")


@dataclass(frozen=True)
class Segment:
    """Frames [start, end) of a video, decodable alone because ``start`` is a key frame."""

    start: int
    end: int
    seek: float | None  # None: from the beginning of the file


def plan_segments(
    frame_count: int,
    keyframes: list[int],
    keyframe_times: list[float],
    parts: int,
    min_frames: int = 250,
) -> list[Segment]:
    """Split the video at the key frames nearest to equal shares, for ``parts`` decoders.

    One H.264 decode keeps two cores only ~75 % busy (frame threads wait on each other), so
    independent segments decoded side by side finish sooner. Segments shorter than
    ``min_frames`` are not worth a process; with no usable key frame there is one segment.
    """
    bounds = [0]
    for i in range(1, max(1, parts)):
        target = frame_count * i / parts
        candidates = [
            k for k in keyframes if k - bounds[-1] >= min_frames and frame_count - k >= min_frames
        ]
        if not candidates:
            break
        best = min(candidates, key=lambda k: abs(k - target))
        if best > bounds[-1]:
            bounds.append(best)
    bounds.append(frame_count)
    times = dict(zip(keyframes, keyframe_times, strict=True))
    # Half a millisecond past the key frame's time: never rounds below it, never reaches the
    # next frame, so the backward seek lands exactly on it.
    return [
        Segment(a, b, None if a == 0 else times[a] + 0.0005) for a, b in itertools.pairwise(bounds)
    ]
