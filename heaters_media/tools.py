"""Running ffmpeg/ffprobe and writing outputs atomically.

All external tool calls go through :func:`run` so that failures become typed errors with the
tool's own last words, and all file outputs go through :func:`atomic_path` /
:func:`staging_dir` so that a failure never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from heaters_media.errors import InvalidInputError, ToolFailedError


def ffmpeg_bin() -> str:
    """The ffmpeg executable: ``$HEATERS_FFMPEG`` if set, else ``ffmpeg`` (read at each call)."""
    return os.environ.get("HEATERS_FFMPEG", "ffmpeg")


def ffprobe_bin() -> str:
    """The ffprobe executable: ``$HEATERS_FFPROBE`` if set, else ``ffprobe`` (read at each call)."""
    return os.environ.get("HEATERS_FFPROBE", "ffprobe")


_STARTED = itertools.count()
_started_last = 0


def note_process() -> None:
    """Count one external process started (for the pipeline's accounting)."""
    global _started_last
    _started_last = next(_STARTED) + 1


def processes_started() -> int:
    """External processes started by this Python process so far (ffmpeg, ffprobe)."""
    return _started_last


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory so far, in MiB: this process and its largest waited-for child."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"python": round(own, 1), "largest_child": round(child, 1)}


def require_tool(name: str) -> str:
    """Return the executable path of ``name`` or raise a clear error telling how to get it."""
    path = shutil.which(name)
    if path is None:
        raise ToolFailedError(f"{name} not found on PATH; install ffmpeg (apt-get install ffmpeg)")
    return path


def stderr_tail(stderr: str | bytes, lines: int = 6) -> str:
    """The last meaningful lines of a tool's stderr, for error messages."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    kept = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])


def run(
    cmd: Sequence[str], *, what: str, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool, returning its completed process; a non-zero exit raises ToolFailedError."""
    require_tool(cmd[0])
    note_process()
    try:
        proc = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolFailedError(f"{what}: {cmd[0]} timed out after {timeout} s") from exc
    if proc.returncode != 0:
        raise ToolFailedError(
            f"{what}: {cmd[0]} exited {proc.returncode}: {stderr_tail(proc.stderr)}"
        )
    return proc


def ffmpeg_cmd(*args: str, threads: int | None = None) -> list[str]:
    """An ffmpeg command line with our standard quiet, non-interactive flags."""
    base = [ffmpeg_bin(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    if threads:
        base += ["-threads", str(threads)]
    return base + list(args)


def existing_file(path: str | os.PathLike[str]) -> Path:
    """Validate that ``path`` names a readable regular file."""
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"file not found: {p}")
    if not p.is_file():
        raise InvalidInputError(f"not a regular file: {p}")
    return p


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.partial{final.suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staging_dir(out_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a private staging folder inside ``out_dir``; on failure it is removed with its files.

    Callers move finished files out of it (see :func:`publish`) only once everything succeeded,
    so a failed multi-file task leaves nothing behind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish(files: Sequence[Path], out_dir: Path) -> list[Path]:
    """Move staged files into ``out_dir`` (same filesystem: atomic renames)."""
    moved = []
    for f in files:
        dest = out_dir / f.name
        os.replace(f, dest)
        moved.append(dest)
    return moved


def h264_args(preset: str, crf: int) -> list[str]:
    """Encoder arguments for browser-playable video: H.264, yuv420p (the one encoding we make)."""
    return ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]


def video_input_args(src: str | os.PathLike[str]) -> list[str]:
    """Read ``src`` and keep only its first video stream (audio, subtitles, data dropped)."""
    return ["-i", str(src), "-map", "0:v:0", "-an", "-sn", "-dn"]


def stream_map_args(has_audio: bool) -> list[str]:
    """Keep the first video stream (and first audio stream), drop everything else."""
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
