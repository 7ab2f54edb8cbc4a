"""Bound the web page yt-dlp reads before any of its hooks run.

Why: for a URL no site-specific extractor claims, yt-dlp's generic extractor reads the whole
response into memory to look for embedded videos, before any progress hook (where the download
limits live) is called. An endless ``text/html`` body, or one trickled a byte at a time, then
holds a worker and its memory with no limit. So before yt-dlp sees an http(s) URL we fetch it
once ourselves, streaming: a media response (video, audio, a stream playlist, octet-stream) is
closed at once and left to yt-dlp's guarded downloader; a page is read up to ``PAGE_LIMIT``
within the stall and deadline limits. Past any of them the URL fails as ``download_failed``
naming the limit. Anything else that goes wrong here (a refused request, a 403 to our user
agent, a TLS error) is not ours to judge: yt-dlp then tries, and reports, itself.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from heaters_media.errors import DownloadFailedError

#: The largest page read (real video pages are a few MB at most).
PAGE_LIMIT = 16 * 1024**2
#: Content types yt-dlp downloads as media (its downloader applies the limits).
MEDIA_TYPES = ("video/", "audio/", "application/octet-stream", "application/vnd.apple.mpegurl",
               "application/x-mpegurl", "application/dash+xml", "binary/octet-stream")  # fmt: skip
_READ = 64 * 1024


def check_page(
    url: str,
    *,
    max_bytes: int,
    stall_seconds: float,
    timeout_seconds: float,
    stall_min_bytes: int = 64 * 1024,
) -> None:
    """Raise DownloadFailedError (``details["limit"]``) when ``url`` serves a page larger than
    ``min(PAGE_LIMIT, max_bytes)``, sends less than ``stall_min_bytes`` in ``stall_seconds``
    (or nothing), or outlasts the deadline: the limits of the download itself."""
    limit = min(PAGE_LIMIT, max_bytes)
    request = urllib.request.Request(url, headers={"User-Agent": "Mozilla/5.0 (heaters)"})
    deadline = time.monotonic() + timeout_seconds
    try:
        response = urllib.request.urlopen(request, timeout=stall_seconds)
    except (urllib.error.URLError, OSError, ValueError):
        return  # yt-dlp's own request will say what is wrong
    with response:
        kind = (response.headers.get("Content-Type") or "").lower()
        if kind.startswith(MEDIA_TYPES):
            return
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _failure(url, "max_bytes", f"the page declares {declared} bytes (over {limit})")
        read = window = 0
        window_start = time.monotonic()
        while True:
            now = time.monotonic()
            if now > deadline:
                raise _failure(url, "timeout", f"the page took over {timeout_seconds:g} s")
            if now - window_start >= stall_seconds:
                if window < stall_min_bytes:
                    raise _failure(
                        url, "stall", f"the page sent {window} bytes in {stall_seconds:g} s"
                    )
                window, window_start = 0, now
            try:
                chunk = (
                    response.read1(_READ) if hasattr(response, "read1") else response.read(_READ)
                )
            except TimeoutError:
                raise _failure(
                    url, "stall", f"the page sent nothing for {stall_seconds:g} s"
                ) from None
            except OSError:
                return  # a connection cut: yt-dlp's request reports it
            if not chunk:
                return
            read += len(chunk)
            window += len(chunk)
            if read > limit:
                raise _failure(
                    url, "max_bytes", f"the page is over {limit} bytes (an endless page?)"
                )


def _failure(url: str, limit: str, reason: str) -> DownloadFailedError:
    return DownloadFailedError(f"download failed for {url}: {reason}", url=url, limit=limit)
