"""Decide what a submitted source is, an http(s) URL or a local file, and refuse anything else.

A source comes from a person or a watched folder: it may be empty, a malformed URL
(``http://[::1``), a URL of another scheme, a folder, a device, an unreadable or missing file,
or carry control characters. Each is answered here with an InvalidInputError that says what is
wrong, before anything is fetched, so no malformed source reaches yt-dlp or the file system as
a traceback (and a failed ingest stores that message, not ``ValueError``).

Only http(s) URLs are accepted: yt-dlp can also read ``file://`` and other schemes, and a
submitted URL must not become a way to read the server's own files.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from heaters_media.errors import InvalidInputError

_ALLOWED_SCHEMES = ("http", "https")
_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
#: Longer sources are refused (browsers stop near 2,000 URL characters, paths at 4,096).
MAX_SOURCE_CHARS = 8192


def _check_url(text: str) -> None:
    """Refuse a URL that cannot be parsed or names no usable host or port."""
    try:
        parts = urlsplit(text)
        port = parts.port  # parsing the port raises on "host:99999" or "host:abc"
    except ValueError as exc:
        raise InvalidInputError(f"malformed URL {text!r}: {exc}", source=text) from None
    host = parts.hostname or ""
    if not host:
        raise InvalidInputError(f"URL has no host: {text!r}", source=text)
    if any(c.isspace() for c in parts.netloc) or port == 0:
        raise InvalidInputError(f"malformed URL {text!r}: bad host or port", source=text)


def _check_file(text: str) -> Path:
    """The regular, readable file ``text`` names; anything else is refused with the reason."""
    try:
        path = Path(text).expanduser()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InvalidInputError(
            f"{text!r} is neither an http(s) URL nor an existing file", source=text
        ) from None
    except (OSError, RuntimeError) as exc:  # name too long, loop of links, no home folder
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInputError(f"cannot use {text!r} as a file: {reason}", source=text) from None
    if stat.S_ISDIR(mode):
        raise InvalidInputError(f"{text} is a folder: give a video file", source=text)
    if not stat.S_ISREG(mode):
        raise InvalidInputError(f"not a regular file: {text}", source=text)
    if not os.access(path, os.R_OK):
        raise InvalidInputError(f"{text} is not readable", source=text)
    return path


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
    if len(text) > MAX_SOURCE_CHARS:
        raise InvalidInputError(
            f"source is {len(text)} characters long (at most {MAX_SOURCE_CHARS})"
        )
    if _CONTROL_RE.search(text):
        raise InvalidInputError(f"source {text!r} contains control characters", source=text)
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
        _check_url(text)
        return "url", text
    return "file", str(_check_file(text))
