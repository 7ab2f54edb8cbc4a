"""Bring a video into a working folder: download a URL with yt-dlp or copy a local file, check it,
and normalize it when needed.

The output folder gets ``original.<ext>`` (kept as received, for provenance and reprocessing) and,
only when the original does not already qualify, ``normalized.mp4``. Everything is produced in a
private staging folder and published at the end, so a failed download, a corrupt file or a failed
transcode leaves nothing behind for a later step to mistake for a finished ingest.

Only http(s) URLs are accepted: yt-dlp can also read ``file://`` and other schemes, and a
submitted URL must not become a way to read the server's own files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from heaters_media.errors import DownloadFailedError, InvalidInputError
from heaters_media.normalize import Action, normalize
from heaters_media.probe import probe
from heaters_media.progress import ProgressFn
from heaters_media.results import Result
from heaters_media.tools import publish, staging_dir

log = logging.getLogger(__name__)

ORIGINAL_STEM = "original"
NORMALIZED_NAME = "normalized.mp4"
_ALLOWED_SCHEMES = ("http", "https")
_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")

# Share of the overall progress bar given to fetching (download or copy); the rest is
# probing and normalizing.
_FETCH_SHARE = 0.6


@dataclass
class IngestResult(Result):
    """The ingested video: where its files are, what was done to them, and what we know of it.

    ``normalized_path`` is the file to use downstream; it equals ``original_path`` when the
    original already qualified (``normalized`` is then False and ``normalize_action`` "none").
    ``probe`` describes that file.
    """

    source: str
    source_type: Literal["url", "file"]
    original_path: str
    normalized_path: str
    normalized: bool
    normalize_action: Action
    normalize_reasons: list[str]
    probe: dict[str, Any] = field(default_factory=dict)
    title: str | None = None
    uploader: str | None = None
    upload_date: str | None = None
    duration: float | None = None
    webpage_url: str | None = None
    extractor: str | None = None
    seconds: float = 0.0


class _Monotonic:
    """Forwards (fraction, message) to a callback mapped into [lo, hi], never going backwards.

    yt-dlp restarts at 0 % for each file of a video+audio download; a progress bar should not.
    """

    def __init__(self, progress: ProgressFn | None) -> None:
        self.progress = progress
        self.last = 0.0

    def __call__(self, fraction: float, message: str = "") -> None:
        if self.progress is None:
            return
        fraction = max(self.last, min(1.0, fraction))
        self.last = fraction
        self.progress(fraction, message)

    def span(self, lo: float, hi: float) -> ProgressFn:
        """A callback reporting 0..1 of one step as lo..hi of the whole."""

        def report(f: float, m: str = "") -> None:
            self(lo + (hi - lo) * max(0.0, min(1.0, f)), m)

        return report


def classify_source(
    source: str | os.PathLike[str], *, allow_file_urls: bool = False
) -> tuple[Literal["url", "file"], str]:
    """Decide whether ``source`` is a URL to download or a local file, rejecting anything else.

    Returns ``("url", url)`` or ``("file", path)``; raises InvalidInputError with the reason.
    """
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    text = str(source).strip()
    if not text:
        raise InvalidInputError("empty source: give an http(s) URL or a local file path")
    match = _SCHEME_RE.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme == "file" and allow_file_urls:
            return "url", text
        if scheme not in _ALLOWED_SCHEMES:
            raise InvalidInputError(
                f"unsupported URL scheme {scheme!r} in {text!r}: only http and https URLs "
                "are accepted (use a local path for files)",
                source=text,
            )
        if not urlparse(text).netloc:
            raise InvalidInputError(f"URL has no host: {text!r}", source=text)
        return "url", text
    path = Path(text).expanduser()
    if not path.exists():
        raise InvalidInputError(
            f"{text!r} is neither an http(s) URL nor an existing file", source=text
        )
    if not path.is_file():
        raise InvalidInputError(f"not a regular file: {text}", source=text)
    return "file", str(path)


def _safe_ext(name: str) -> str:
    """A lower-case extension usable in ``original.<ext>``; never taken verbatim if odd."""
    ext = Path(name).suffix.lower().lstrip(".")
    return ext if re.fullmatch(r"[a-z0-9]{1,8}", ext) else "bin"


def _copy_local(src: Path, stage: Path, progress: ProgressFn) -> Path:
    """Hard-link ``src`` into the staging folder (instant, no extra disk), else copy it."""
    dest = stage / f"{ORIGINAL_STEM}.{_safe_ext(src.name)}"
    progress(0.0, "copying")
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    progress(1.0, "copied")
    return dest


class _YtdlpLogger:
    """Routes yt-dlp's messages to logging (so nothing is printed on the CLI's stdout) and
    remembers errors for the exception message."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        log.info("yt-dlp: %s", msg)


def _clean(message: str) -> str:
    return _ANSI_RE.sub("", message).removeprefix("ERROR: ").strip()


def _download(
    url: str,
    stage: Path,
    *,
    max_height: int,
    allow_file_urls: bool,
    ydl_opts: dict[str, Any] | None,
    progress: ProgressFn,
) -> tuple[Path, dict[str, Any]]:
    """Download ``url`` with yt-dlp into ``stage``; return the file and yt-dlp's info dict."""
    import yt_dlp
    from yt_dlp.utils import YoutubeDLError

    def hook(d: dict[str, Any]) -> None:
        if d.get("status") == "downloading":
            total = d.get("total_bytes") or d.get("total_bytes_estimate")
            done = d.get("downloaded_bytes") or 0
            if total:
                progress(done / total, "downloading")
        elif d.get("status") == "finished":
            progress(1.0, "downloaded")

    h = int(max_height)
    logger = _YtdlpLogger()
    dl_dir = stage / "download"
    dl_dir.mkdir()
    opts: dict[str, Any] = {
        "format": f"bv*[height<={h}]+ba/b[height<={h}]/bv*+ba/b",
        "merge_output_format": "mp4",
        "quiet": True,
        "noprogress": True,
        "no_warnings": True,
        "progress_hooks": [hook],
        # A fixed name, never one built from the (untrusted) title.
        "outtmpl": {"default": str(dl_dir / f"{ORIGINAL_STEM}.%(ext)s")},
        "paths": {"home": str(dl_dir), "temp": str(dl_dir)},
        "restrictfilenames": True,
        "noplaylist": True,
        "playlist_items": "1",
        "cachedir": False,
        "logger": logger,
        "enable_file_urls": allow_file_urls,
    }
    opts.update(ydl_opts or {})
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(url, download=True)
            info = ydl.sanitize_info(info) if info else None
    except YoutubeDLError as exc:
        reason = _clean(str(exc) or (logger.errors[-1] if logger.errors else type(exc).__name__))
        raise DownloadFailedError(f"download failed for {url}: {reason}", url=url) from exc
    if not info:
        raise DownloadFailedError(f"download failed for {url}: yt-dlp returned nothing", url=url)
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
    dest = stage / f"{ORIGINAL_STEM}.{_safe_ext(files[0].name)}"
    os.replace(files[0], dest)
    shutil.rmtree(dl_dir, ignore_errors=True)
    return dest, info


def _info_str(info: dict[str, Any], key: str) -> str | None:
    value = info.get(key)
    return str(value) if value not in (None, "") else None


def _publish(staged: list[Path], out: Path) -> list[Path]:
    """Move the staged files into ``out``, first dropping the files of an earlier ingest into
    the same folder that this one does not replace, so it always describes exactly one ingest."""
    keep = {f.name for f in staged}
    for old in [*out.glob(f"{ORIGINAL_STEM}.*"), out / NORMALIZED_NAME]:
        if old.name not in keep and old.is_file():
            old.unlink()
    return publish(staged, out)


def ingest(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    max_height: int = 1080,
    force_normalize: bool = False,
    progress: ProgressFn | None = None,
    allow_file_urls: bool = False,
    ydl_opts: dict[str, Any] | None = None,
) -> IngestResult:
    """Download (http/https URL, via yt-dlp) or copy (local path) ``source`` into ``out_dir``.

    The original is probed with packet verification (truncated files are rejected), normalized
    when it does not qualify (or always with ``force_normalize``), and the final file probed.
    ``max_height`` caps the downloaded quality. ``allow_file_urls`` lets trusted callers pass
    ``file://`` URLs through yt-dlp; ``ydl_opts`` overrides yt-dlp options (tests, cookies).

    Raises InvalidInputError (bad URL/path), DownloadFailedError, CorruptMediaError,
    UnsupportedMediaError or ToolFailedError; on any failure ``out_dir`` gets no new files.
    """
    started = time.monotonic()
    if max_height <= 0:
        raise InvalidInputError(f"max_height must be positive, got {max_height}")
    source_type, where = classify_source(source, allow_file_urls=allow_file_urls)
    report = _Monotonic(progress)
    out = Path(out_dir)
    info: dict[str, Any] = {}
    with staging_dir(out) as stage:
        fetch = report.span(0.0, _FETCH_SHARE)
        if source_type == "url":
            original, info = _download(
                where,
                stage,
                max_height=max_height,
                allow_file_urls=allow_file_urls,
                ydl_opts=ydl_opts,
                progress=fetch,
            )
        else:
            original = _copy_local(Path(where), stage, fetch)
        report(_FETCH_SHARE, "probing")
        first = probe(original, verify=True)
        result = normalize(
            original,
            stage / NORMALIZED_NAME,
            probe_result=first,
            progress=report.span(_FETCH_SHARE + 0.02, 0.98),
            force=force_normalize,
        )
        staged = [original]
        if result.action != "none":
            staged.append(stage / NORMALIZED_NAME)
        published = _publish(staged, out)
    original_path = published[0]
    final_path = published[-1]
    final_probe = dataclasses.asdict(first) if result.action == "none" else dict(result.probe)
    final_probe["path"] = str(final_path)
    report(1.0, "done")
    duration = info.get("duration")
    return IngestResult(
        source=str(source),
        source_type=source_type,
        original_path=str(original_path),
        normalized_path=str(final_path),
        normalized=result.action != "none",
        normalize_action=result.action,
        normalize_reasons=result.reasons,
        probe=final_probe,
        title=_info_str(info, "title") or (Path(where).stem if source_type == "file" else None),
        uploader=_info_str(info, "uploader"),
        upload_date=_info_str(info, "upload_date"),
        duration=float(duration) if isinstance(duration, int | float) else final_probe["duration"],
        webpage_url=_info_str(info, "webpage_url"),
        extractor=_info_str(info, "extractor"),
        seconds=round(time.monotonic() - started, 3),
    )
