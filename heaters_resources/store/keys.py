"""Object-store keys, built in one place from ids only (ARCHITECTURE.md, "Object store layout").

Keys never contain user-supplied text (titles, original file names): only integer ids, the clip
identifier (itself made of ids and frame numbers) and short validated tokens such as a keyframe
strategy or sprite parameters. That keeps keys stable, safe on every backend, and lets the orphan
cleanup recognise every object the system can write.
"""

from __future__ import annotations

import re

SOURCE_VIDEOS_PREFIX = "source_videos/"
CLIPS_PREFIX = "clips/"
MANAGED_PREFIXES = (SOURCE_VIDEOS_PREFIX, CLIPS_PREFIX)

_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_EXT = re.compile(r"^[a-z0-9]{1,8}$")
_IDENT = re.compile(r"^(\d+)_(\d+)_(\d+)$")


def _token(value: str, what: str) -> str:
    if not _TOKEN.match(value) or ".." in value:
        raise ValueError(f"invalid {what} for an object key: {value!r}")
    return value


def _id(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def clip_identifier(video_id: int, start_frame: int, end_frame: int) -> str:
    """`<video_id>_<start_frame>_<end_frame>`; end_frame is exclusive."""
    _id(video_id, "video id")
    if _id(start_frame, "start frame") >= _id(end_frame, "end frame"):
        raise ValueError(f"empty clip range [{start_frame}, {end_frame})")
    return f"{video_id}_{start_frame}_{end_frame}"


def parse_clip_identifier(identifier: str) -> tuple[int, int, int]:
    match = _IDENT.match(identifier)
    if not match:
        raise ValueError(f"not a clip identifier: {identifier!r}")
    video_id, start, end = (int(g) for g in match.groups())
    return video_id, start, end


def source_original_key(video_id: int, ext: str) -> str:
    ext = ext.lower().lstrip(".")
    if not _EXT.match(ext):
        raise ValueError(f"invalid extension: {ext!r}")
    return f"{SOURCE_VIDEOS_PREFIX}{_id(video_id, 'video id')}/original.{ext}"


def source_normalized_key(video_id: int) -> str:
    return f"{SOURCE_VIDEOS_PREFIX}{_id(video_id, 'video id')}/normalized.mp4"


def _checked_identifier(video_id: int, identifier: str) -> str:
    if parse_clip_identifier(identifier)[0] != video_id:
        raise ValueError(f"clip {identifier!r} does not belong to video {video_id}")
    return identifier


def clip_key(video_id: int, identifier: str) -> str:
    return f"{CLIPS_PREFIX}{video_id}/{_checked_identifier(video_id, identifier)}.mp4"


def clip_prefix(video_id: int, identifier: str) -> str:
    """Folder holding the clip's derived artifacts (keyframes, sprite)."""
    return f"{CLIPS_PREFIX}{video_id}/{_checked_identifier(video_id, identifier)}/"


def keyframe_key(video_id: int, identifier: str, strategy: str, pct: int) -> str:
    if not 0 <= pct <= 100:
        raise ValueError(f"keyframe percentage out of range: {pct}")
    return f"{clip_prefix(video_id, identifier)}keyframes/{_token(strategy, 'strategy')}_{pct}.jpg"


def sprite_key(video_id: int, identifier: str, params: str) -> str:
    return f"{clip_prefix(video_id, identifier)}sprite/{_token(params, 'sprite params')}.jpg"


def sprite_metadata_key(video_id: int, identifier: str, params: str) -> str:
    return f"{clip_prefix(video_id, identifier)}sprite/{_token(params, 'sprite params')}.json"


def proxy_key(video_id: int, identifier: str, height: int) -> str:
    """The review proxy of a clip not cut yet (HEATERS_CLIPS=proxy), ``height`` lines."""
    if isinstance(height, bool) or not isinstance(height, int) or not 0 < height <= 4320:
        raise ValueError(f"invalid proxy height: {height!r}")
    return f"{clip_prefix(video_id, identifier)}proxy/{height}p.mp4"
