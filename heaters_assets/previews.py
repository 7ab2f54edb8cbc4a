"""What a video partition's materialization shows of its own clips: per-clip figures, an inline
thumbnail and links to the review page.

Why inline: Dagster's UI renders Markdown metadata, images included, and a ``data:`` URI keeps
the preview visible whatever the store is (a private bucket, or a local folder the browser may
not open). The old ``preview`` was a ``file://`` path, which browsers refuse from a web page.
Thumbnails are a few kilobytes (THUMB_WIDTH wide), one per partition, so the event log stays small.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from sqlalchemy import select

from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact
from heaters_resources.settings import Settings
from heaters_resources.store.objects import ObjectStore

#: Width of the inline thumbnail in pixels (a sprite sheet gets twice that: it holds many tiles).
THUMB_WIDTH = 160


@dataclass(frozen=True)
class ClipFigures:
    """One clip's figures for a materialization's table."""

    id: int
    identifier: str
    video_id: int
    start_frame: int
    frames: int
    duration: float
    #: The clip on the review page (HEATERS_REVIEW_URL, read once per call of clip_figures).
    review: str
    #: kind -> (storage key, "WxH" of the image) of the clip's newest keyframe (the 50 % one when
    #: there is one) and sprite sheet.
    images: dict[str, tuple[str, str]] = field(default_factory=dict)


def clip_figures(db: Database, identifiers: Sequence[str]) -> dict[str, ClipFigures]:
    """Figures of the clips named, with their keyframe and sprite keys and image sizes."""
    if not identifiers:
        return {}
    with db.session() as s:
        clips = s.execute(
            select(
                Clip.id,
                Clip.identifier,
                Clip.source_video_id,
                Clip.start_frame,
                Clip.end_frame,
                Clip.start_time,
                Clip.end_time,
            ).where(Clip.identifier.in_(list(identifiers)))
        ).all()
        arts = s.execute(
            select(
                ClipArtifact.clip_id, ClipArtifact.kind, ClipArtifact.storage_key, ClipArtifact.meta
            )
            .where(
                ClipArtifact.clip_id.in_([c.id for c in clips]),
                ClipArtifact.kind.in_(("keyframe", "sprite_sheet")),
            )
            # The midpoint first (tag "50"), then the newest: the first row of a kind wins.
            .order_by(ClipArtifact.clip_id, ClipArtifact.tag != "50", ClipArtifact.id.desc())
        ).all()
    base = review_base()
    images: dict[int, dict[str, tuple[str, str]]] = {}
    for cid, kind, key, meta in arts:
        images.setdefault(cid, {}).setdefault(kind, (key, _size(kind, meta or {})))
    return {
        c.identifier: ClipFigures(
            c.id,
            c.identifier,
            c.source_video_id,
            int(c.start_frame),
            int(c.end_frame - c.start_frame),
            round(float(c.end_time - c.start_time), 3),
            f"{base}/?clip={c.id}",
            images.get(c.id, {}),
        )
        for c in clips
    }


def _size(kind: str, meta: Mapping[str, Any]) -> str:
    """The image's size as stored with the artifact ("" when unknown)."""
    w, h = meta.get("width"), meta.get("height")
    size = f"{w}x{h}" if w and h else ""
    tiles = meta.get("frame_count") if kind == "sprite_sheet" else None
    return f"{size}, {tiles} tiles" if size and tiles else size


def review_base() -> str:
    """Where the review page is reached (HEATERS_REVIEW_URL), without a trailing slash."""
    return Settings.from_env().review_url.rstrip("/")


def thumbnail(image: bytes, width: int = THUMB_WIDTH) -> str | None:
    """A JPEG ``data:`` URI of the image scaled to ``width`` (None when it does not decode)."""
    pixels = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    if pixels is None or pixels.size == 0:
        return None
    h, w = pixels.shape[:2]
    if w > width:
        pixels = cv2.resize(
            pixels, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA
        )
    ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii")


def preview_markdown(
    store: ObjectStore, clip: ClipFigures, kind: str, video_id: int, clips_done: int
) -> str:
    """Markdown for a partition: the first clip's keyframe or sprite inline, and links to the
    clip and to the video's clips on the review page."""
    link = clip.review
    lines = []
    found = clip.images.get(kind)
    if found:
        try:
            uri = thumbnail(
                store.read_bytes(found[0]), THUMB_WIDTH * (2 if kind == "sprite_sheet" else 1)
            )
        except Exception:  # a preview never fails a materialization
            uri = None
        if uri:
            lines.append(f"[![{kind} of {clip.identifier}]({uri})]({link})")
    listing = f"{review_base()}/queue?video={video_id}"
    lines.append(
        f"First clip: [{clip.identifier}]({link}) · {clip.frames} frames · "
        f"{clip.duration:.2f} s  \n"
        f"All {clips_done} clips of video {video_id}: [{listing}]({listing})"
    )
    return "\n\n".join(lines)
