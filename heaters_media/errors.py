"""Typed errors of the media layer.

Every failure a caller can act on is one of these, so the platform can store a reason
(`*_failed` state) and the CLI can print a JSON error object instead of a traceback.
"""

from __future__ import annotations

from typing import Any


class MediaError(Exception):
    """Base class: a human-readable message plus a stable machine-readable ``kind``."""

    kind = "media_error"
    exit_code = 1

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "error",
            "error": {
                "type": self.kind,
                "message": self.message,
                **({"details": self.details} if self.details else {}),
            },
        }


class InvalidInputError(MediaError):
    """The caller asked for the impossible: missing file, bad URL scheme, frame out of range."""

    kind = "invalid_input"
    exit_code = 2


class UnsupportedMediaError(MediaError):
    """A readable file that is not something we can process (no video stream, audio only, image)."""

    kind = "unsupported_media"
    exit_code = 3


class CorruptMediaError(MediaError):
    """An empty, truncated or undecodable media file."""

    kind = "corrupt_media"
    exit_code = 4


class DownloadFailedError(MediaError):
    """A URL could not be fetched (network error, 404, extractor failure)."""

    kind = "download_failed"
    exit_code = 5


class ToolFailedError(MediaError):
    """ffmpeg/ffprobe (or another external tool) failed on input that looked valid."""

    kind = "tool_failed"
    exit_code = 6
