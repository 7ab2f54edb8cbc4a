"""Generate test videos with ffmpeg's lavfi sources, so cut positions are known exactly.

Each segment is a distinct synthetic source trimmed to an exact number of frames; segments are
concatenated into one constant-frame-rate H.264 file, so scene *k* starts at the sum of the
frame counts before it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

# Visually distinct moving sources (each animates, so there is motion inside every scene).
SOURCES = [
    "testsrc2=s={w}x{h}:r={fps}",
    "mandelbrot=s={w}x{h}:r={fps}",
    "smptehdbars=s={w}x{h}:r={fps},hue=H=t*20",
    "life=s={w}x{h}:r={fps}:mold=10:ratio=0.3:death_color=#802020:life_color=#20c040",
    "cellauto=s={w}x{h}:r={fps}:rule=110,negate",
    "rgbtestsrc=s={w}x{h}:r={fps},hue=H=t*40",
    "gradients=s={w}x{h}:r={fps}:speed=0.05",
    "color=c=0x3050a0:s={w}x{h}:r={fps},noise=alls=30:allf=t",
]


def make_video(
    path: str | Path,
    frames: Sequence[int],
    *,
    fps: int = 25,
    size: tuple[int, int] = (320, 180),
    audio: bool = True,
    gop: int | None = None,
    preset: str = "veryfast",
    extra: Sequence[str] = (),
) -> Path:
    """Write a video whose scene *k* has ``frames[k]`` frames; return its path.

    ``gop`` fixes the key-frame interval (and disables scene-cut key frames) so that tests can
    place cuts on or off key frames deliberately.
    """
    path = Path(path)
    w, h = size
    inputs: list[str] = []
    chains = []
    for k, n in enumerate(frames):
        src = SOURCES[k % len(SOURCES)].format(w=w, h=h, fps=fps)
        inputs += ["-f", "lavfi", "-i", src]
        chains.append(f"[{k}:v]trim=end_frame={n},setpts=PTS-STARTPTS,format=yuv420p,"
                      f"scale={w}:{h},setsar=1[v{k}]")
    graph = ";".join(chains) + ";" + "".join(f"[v{k}]" for k in range(len(frames)))
    graph += f"concat=n={len(frames)}:v=1:a=0[v]"
    total = sum(frames)
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *inputs]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={total / fps}"]
    cmd += ["-filter_complex", graph, "-map", "[v]"]
    if audio:
        cmd += ["-map", f"{len(frames)}:a", "-c:a", "aac", "-b:a", "64k"]
    cmd += ["-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p", "-r", str(fps)]
    if gop:
        cmd += ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
    cmd += ["-frames:v", str(total), "-movflags", "+faststart", *extra, str(path)]
    subprocess.run(cmd, check=True)
    return path


def cut_frames_of(frames: Sequence[int]) -> list[int]:
    """First frame of every scene after the first."""
    cuts, acc = [], 0
    for n in frames[:-1]:
        acc += n
        cuts.append(acc)
    return cuts


def count_frames(path: str | Path) -> int:
    """Decoded video frame count, measured by ffprobe -count_frames (the ground truth)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    return int(out.split(",")[0])


def stream_info(path: str | Path) -> dict[str, str]:
    """codec_name, pix_fmt, profile of the first video stream."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,pix_fmt,profile", "-of", "default=nw=1", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.strip().splitlines())


def frame_signature(path: str | Path, index: int, size: tuple[int, int] = (32, 18)) -> bytes:
    """A tiny grayscale thumbnail of frame ``index`` (decoded from the start), for identity checks."""
    w, h = size
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-vf",
         f"select=eq(n\\,{index}),scale={w}:{h}:flags=area,format=gray", "-fps_mode", "passthrough",
         "-frames:v", "1", "-f", "rawvideo", "-"],
        capture_output=True, check=True,
    ).stdout
