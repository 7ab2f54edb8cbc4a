"""Bring a video into a working folder: download a URL with yt-dlp or copy a local file, check it,
and normalize it when needed.

The output folder gets ``original.<ext>`` (kept as received, for provenance and reprocessing) and,
only when the original does not already qualify, ``normalized.mp4``. Everything is produced in a
private staging folder and published at the end, so a failed download, a corrupt file or a failed
transcode leaves nothing behind for a later step to mistake for a finished ingest.

Sources are checked first (:mod:`heaters_media.sources`: only http(s) URLs and readable local
files); downloads are bounded in size, time and stalls (:mod:`heaters_media.download`); the
staging folder is named after its owner so that the leftovers of a killed ingest are swept by
the next one (:mod:`heaters_media.staging`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from heaters_media.download import ORIGINAL_STEM, DownloadLimits, download, safe_ext
from heaters_media.errors import InvalidInputError
from heaters_media.normalize import Action, normalize
from heaters_media.probe import probe
from heaters_media.progress import ProgressFn
from heaters_media.results import Result
from heaters_media.sources import classify_source
from heaters_media.staging import owned_staging_dir, sweep_stale
from heaters_media.tools import publish

log = logging.getLogger(__name__)

NORMALIZED_NAME = "normalized.mp4"

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


def _copy_local(src: Path, stage: Path, progress: ProgressFn) -> Path:
    """Hard-link ``src`` into the staging folder (instant, no extra disk), else copy it."""
    dest = stage / f"{ORIGINAL_STEM}.{safe_ext(src.name)}"
    progress(0.0, "copying")
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    progress(1.0, "copied")
    return dest


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
    limits: DownloadLimits | None = None,
) -> IngestResult:
    """Download (http/https URL, via yt-dlp) or copy (local path) ``source`` into ``out_dir``.

    The original is probed with packet verification (truncated files are rejected), normalized
    when it does not qualify (or always with ``force_normalize``), and the final file probed.
    ``max_height`` caps the downloaded quality. ``allow_file_urls`` lets trusted callers pass
    ``file://`` URLs through yt-dlp; ``ydl_opts`` overrides yt-dlp options (tests, cookies).
    ``limits`` bound a download's size, duration and stalls (default: ``DownloadLimits()``).

    Staging folders left in ``out_dir`` by killed ingests (a partial download can be
    gigabytes) are removed first when their owner process is gone.

    Raises InvalidInputError (bad URL/path), DownloadFailedError, CorruptMediaError,
    UnsupportedMediaError or ToolFailedError; on any failure ``out_dir`` gets no new files.
    """
    started = time.monotonic()
    if max_height <= 0:
        raise InvalidInputError(f"max_height must be positive, got {max_height}")
    source_type, where = classify_source(source, allow_file_urls=allow_file_urls)
    report = _Monotonic(progress)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"output folder is a file: {out}")
    sweep_stale(out)
    info: dict[str, Any] = {}
    with owned_staging_dir(out) as stage:
        fetch = report.span(0.0, _FETCH_SHARE)
        if source_type == "url":
            original, info = download(
                where,
                stage,
                max_height=max_height,
                allow_file_urls=allow_file_urls,
                limits=limits or DownloadLimits(),
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
