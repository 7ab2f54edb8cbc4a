"""Download a URL with yt-dlp, within limits on size, total time and stalls.

A submitted URL is untrusted: it may serve an endless body, a ``Content-Length`` of terabytes,
or one byte every few seconds. Each is bounded by yt-dlp's own machinery: ``max_filesize``
refuses a declared size over the limit before anything is written, ``socket_timeout`` ends a
silent connection (after ``_RETRIES`` reconnections), and a progress hook counts the bytes that
actually arrive and raises to abort the download when the size, the deadline or the stall limit
is passed. The hook runs after every read, so reads start at one byte (``buffersize``; yt-dlp
doubles it while data flows fast): a trickling server cannot hold a read open for long. Live
streams (no end) are refused, and no external downloader (ffmpeg) is used: those report no
progress to count. A web page (what the generic extractor reads whole, before any hook) is
bounded first by :mod:`heaters_media.page_guard`.

Every limit ends in DownloadFailedError, with ``details["limit"]`` naming it. The files are
written inside the caller's staging folder, which the caller removes on any error.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from heaters_media.errors import DownloadFailedError, InvalidInputError
from heaters_media.page_guard import check_page
from heaters_media.progress import ProgressFn

log = logging.getLogger(__name__)

ORIGINAL_STEM = "original"
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
#: Reconnections after a network error or a silent connection (yt-dlp's ``retries``).
_RETRIES = 3

Limit = Literal["max_bytes", "timeout", "stall"]


@dataclass(frozen=True)
class DownloadLimits:
    """Bounds on one download (settings ``HEATERS_MAX_DOWNLOAD_BYTES``,
    ``HEATERS_DOWNLOAD_TIMEOUT_SECONDS``, ``HEATERS_DOWNLOAD_STALL_SECONDS``).

    ``max_bytes`` counts every file of the download (video and audio of a merged format).
    ``timeout_seconds`` is the deadline of the whole download. A download is stalled when it
    receives fewer than ``stall_min_bytes`` in ``stall_seconds``, or nothing at all for that
    long (then it is retried a few times first); the default floor, 64 KiB a minute, is far
    below any real video stream and far above a server dripping bytes to hold a worker.
    """

    max_bytes: int = 20 * 1024**3
    timeout_seconds: float = 7200.0
    stall_seconds: float = 60.0
    stall_min_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.stall_min_bytes < 0:
            raise InvalidInputError("max_bytes must be >= 1 and stall_min_bytes >= 0")
        for name in ("timeout_seconds", "stall_seconds"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise InvalidInputError(f"{name} must be a positive number, got {value}")


def _limit_error(url: str, limit: Limit, reason: str) -> DownloadFailedError:
    return DownloadFailedError(f"download failed for {url}: {reason}", url=url, limit=limit)


class _Guard:
    """The progress hook: reports progress and aborts the download past any limit."""

    def __init__(self, url: str, limits: DownloadLimits, progress: ProgressFn) -> None:
        from yt_dlp.utils import DownloadCancelled

        class LimitReached(DownloadCancelled):
            """Raised inside yt-dlp; it lets DownloadCancelled through without retrying."""

        self.cancelled = LimitReached
        self.url, self.limits, self.progress = url, limits, progress
        self.started = time.monotonic()
        self.error: DownloadFailedError | None = None
        # Bytes of each file (its size on disk: a restarted file counts once), and the last
        # count each reported, to add up the bytes flowing in (restarts included).
        self.per_file: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.flowed = 0
        # The stall window opens at the first data, so slow extraction is not a stall.
        self.window_start: float | None = None
        self.window_bytes = 0

    @property
    def received(self) -> int:
        return sum(self.per_file.values())

    def abort(self, limit: Limit, reason: str) -> None:
        self.error = _limit_error(self.url, limit, reason)
        raise self.cancelled(reason)

    def refuse_live(self, info: dict[str, Any], *, incomplete: bool = False) -> None:
        """yt-dlp's ``match_filter``: a live stream has no end (and yt-dlp would record it with
        ffmpeg, which reports no progress to bound), so it is refused before any download."""
        if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
            reason = "a live stream has no end: only finished videos can be ingested"
            self.error = DownloadFailedError(
                f"download failed for {self.url}: {reason}", url=self.url
            )
            raise self.cancelled(reason)

    def check_deadline(self) -> None:
        if time.monotonic() - self.started > self.limits.timeout_seconds:
            self.abort(
                "timeout",
                f"not finished within the {self.limits.timeout_seconds:g} s download deadline",
            )

    def __call__(self, d: dict[str, Any]) -> None:
        status = d.get("status")
        if status == "finished":
            self.progress(1.0, "downloaded")
        if status != "downloading":
            return
        done = int(d.get("downloaded_bytes") or 0)
        key = str(d.get("filename") or d.get("tmpfilename") or "")
        before = self.last.get(key, 0)
        self.flowed += done - before if done >= before else done
        self.last[key] = done
        self.per_file[key] = max(done, self.per_file.get(key, 0))
        limits = self.limits
        # A declared size counts; an estimate (fragments) can be far off, so it does not.
        declared = int(d.get("total_bytes") or 0)
        if self.received > limits.max_bytes or declared > limits.max_bytes:
            size = max(self.received, declared)
            self.abort(
                "max_bytes",
                f"larger than the {limits.max_bytes} byte limit (at least {size} bytes)",
            )
        self.check_deadline()
        self.check_stall()
        total = declared or d.get("total_bytes_estimate")
        if total:
            self.progress(done / total, "downloading")

    def check_stall(self) -> None:
        now, limits = time.monotonic(), self.limits
        if self.window_start is None:
            self.window_start = now
        elif now - self.window_start >= limits.stall_seconds:
            got = self.flowed - self.window_bytes
            if got < limits.stall_min_bytes:
                self.abort(
                    "stall",
                    f"stalled: {got} bytes in {now - self.window_start:.1f} s "
                    f"(at least {limits.stall_min_bytes} per {limits.stall_seconds:g} s needed)",
                )
            self.window_start, self.window_bytes = now, self.flowed


class _YtdlpLogger:
    """Routes yt-dlp's messages to logging (so nothing is printed on the CLI's stdout),
    remembers errors for the exception message and the notice of a refused size."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.too_large: str | None = None

    def debug(self, msg: str) -> None:
        # yt-dlp refusing a declared size over ``max_filesize``: a notice, not an error.
        found = re.search(r"larger than max-filesize \((\d+) bytes > (\d+) bytes\)", msg)
        if found:
            self.too_large = (
                f"larger than the {found[2]} byte limit (the server announces {found[1]} bytes)"
            )
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        log.info("yt-dlp: %s", msg)


def _clean(message: str) -> str:
    text = _ANSI_RE.sub("", message).removeprefix("ERROR: ").strip()
    return re.sub(r"\.\.(?=\s|$)", ".", text.removeprefix("[download] "))


def safe_ext(name: str) -> str:
    """A lower-case extension usable in ``original.<ext>``; never taken verbatim if odd."""
    ext = Path(name).suffix.lower().lstrip(".")
    return ext if re.fullmatch(r"[a-z0-9]{1,8}", ext) else "bin"


def _options(
    dl_dir: Path,
    *,
    max_height: int,
    allow_file_urls: bool,
    limits: DownloadLimits,
    guard: _Guard,
    logger: _YtdlpLogger,
) -> dict[str, Any]:
    h = int(max_height)
    return {
        "format": f"bv*[height<={h}]+ba/b[height<={h}]/bv*+ba/b",
        "merge_output_format": "mp4",
        "quiet": True,
        "noprogress": True,
        "no_warnings": True,
        "progress_hooks": [guard],
        # A fixed name, never one built from the (untrusted) title.
        "outtmpl": {"default": str(dl_dir / f"{ORIGINAL_STEM}.%(ext)s")},
        "paths": {"home": str(dl_dir), "temp": str(dl_dir)},
        "restrictfilenames": True,
        "noplaylist": True,
        "playlist_items": "1",
        "cachedir": False,
        "logger": logger,
        "enable_file_urls": allow_file_urls,
        "max_filesize": limits.max_bytes,
        "socket_timeout": limits.stall_seconds,
        "retries": _RETRIES,
        "fragment_retries": _RETRIES,
        "buffersize": 1,
        # yt-dlp's own downloaders report progress to the guard; ffmpeg as a downloader would
        # not (live streams, which would need it, are refused by the filter).
        "external_downloader": {"default": "native"},
        "hls_prefer_native": True,
        "match_filter": guard.refuse_live,
    }


def download(
    url: str,
    stage: Path,
    *,
    max_height: int,
    allow_file_urls: bool,
    limits: DownloadLimits,
    ydl_opts: dict[str, Any] | None,
    progress: ProgressFn,
) -> tuple[Path, dict[str, Any]]:
    """Download ``url`` with yt-dlp into ``stage``; return the file and yt-dlp's info dict.

    Raises DownloadFailedError (with ``limit`` in its details when a limit ended it).
    """
    import yt_dlp
    from yt_dlp.utils import YoutubeDLError

    if url.lower().startswith(("http://", "https://")):
        check_page(  # yt-dlp's generic extractor reads a page whole, before any hook runs
            url,
            max_bytes=limits.max_bytes,
            stall_seconds=limits.stall_seconds,
            timeout_seconds=limits.timeout_seconds,
            stall_min_bytes=limits.stall_min_bytes,
        )
    guard = _Guard(url, limits, progress)
    logger = _YtdlpLogger()
    dl_dir = stage / "download"
    dl_dir.mkdir()
    opts = _options(
        dl_dir,
        max_height=max_height,
        allow_file_urls=allow_file_urls,
        limits=limits,
        guard=guard,
        logger=logger,
    )
    opts.update(ydl_opts or {})
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(url, download=True)
            info = ydl.sanitize_info(info) if info else None
    except YoutubeDLError as exc:
        if guard.error is not None:
            raise guard.error from None
        reason = _clean(str(exc) or (logger.errors[-1] if logger.errors else type(exc).__name__))
        if "timed out" in reason.lower():  # silent for socket_timeout, on every retry
            raise _limit_error(
                url, "stall", f"no data for {limits.stall_seconds:g} s: {reason}"
            ) from exc
        raise DownloadFailedError(f"download failed for {url}: {reason}", url=url) from exc
    if logger.too_large:
        raise _limit_error(url, "max_bytes", logger.too_large)
    if not info:
        raise DownloadFailedError(f"download failed for {url}: yt-dlp returned nothing", url=url)
    return _downloaded_file(url, info, dl_dir, stage, limits), info


def _downloaded_file(
    url: str, info: dict[str, Any], dl_dir: Path, stage: Path, limits: DownloadLimits
) -> Path:
    """Move the file yt-dlp wrote to ``stage/original.<ext>``, checking its size once more
    (a downloader that reports no progress, like an external one, is bounded here)."""
    if info.get("entries"):
        info = next((e for e in info["entries"] if e), info)
    files = [
        Path(d["filepath"])
        for d in info.get("requested_downloads") or []
        if d.get("filepath") and Path(d["filepath"]).is_file()
    ]
    if not files:
        files = sorted(
            f
            for f in dl_dir.glob(f"{ORIGINAL_STEM}.*")
            if f.is_file() and not f.name.endswith((".part", ".ytdl"))
        )
    if not files:
        raise DownloadFailedError(f"download failed for {url}: no file was written", url=url)
    size = files[0].stat().st_size
    if size > limits.max_bytes:
        raise _limit_error(url, "max_bytes", f"larger than the {limits.max_bytes} byte limit")
    dest = stage / f"{ORIGINAL_STEM}.{safe_ext(files[0].name)}"
    os.replace(files[0], dest)
    shutil.rmtree(dl_dir, ignore_errors=True)
    return dest
