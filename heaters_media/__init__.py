"""heaters_media: pure media functions (ffmpeg, yt-dlp, numpy) with structured results.

No database, no Dagster, no object store: explicit inputs in, JSON-serializable results out.
Every task is also a CLI command: ``python -m heaters_media <task> ...``.
"""

from heaters_media.errors import (
    CorruptMediaError,
    DownloadFailedError,
    InvalidInputError,
    MediaError,
    ToolFailedError,
    UnsupportedMediaError,
)

__all__ = [
    "CorruptMediaError",
    "DownloadFailedError",
    "InvalidInputError",
    "MediaError",
    "ToolFailedError",
    "UnsupportedMediaError",
]
