"""Invariant checks behind the Dagster asset checks: clips tile their video, artifacts exist
in the store, sprite metadata matches the image. Each returns a list of readable problems
(empty when the invariant holds), so the asset check only reports."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import and_, func, select

from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact, ClipEmbedding, SourceVideo
from heaters_resources.errors import NotFoundError
from heaters_resources.store.objects import ObjectStore

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ invariant checks


def tiling_problems(db: Database, video_id: int) -> list[str]:
    """Gaps, overlaps and out-of-range clips among a video's live clips (empty list: tiled).

    Gaps are expected, and not reported, when the video was spliced with ``short_policy``
    "drop" (short shots left out) or ``trim_transitions`` (fade / dissolve frames left out)."""
    with db.session() as session:
        video = session.get(SourceVideo, video_id)
        spans = session.execute(
            select(Clip.start_frame, Clip.end_frame)
            .where(Clip.source_video_id == video_id, Clip.superseded_at.is_(None))
            .order_by(Clip.start_frame)
        ).all()
    if video is None:
        return [f"video {video_id} not found"]
    params = video.scene_params or {}
    gaps_expected = params.get("short_policy") == "drop" or bool(params.get("trim_transitions"))
    problems, pos = [], 0
    for start, end in spans:
        if start > pos and not gaps_expected:
            problems.append(f"gap [{pos}, {start})")
        elif start < pos:
            problems.append(f"overlap at [{start}, {pos})")
        pos = max(pos, end)
    if video.frame_count is not None and pos > video.frame_count:
        problems.append(f"clips end at {pos}, after the video's {video.frame_count} frames")
    elif video.frame_count is not None and pos != video.frame_count and not gaps_expected:
        problems.append(f"clips end at {pos}, video has {video.frame_count} frames")
    return problems


def _image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an image, None when it is not one.

    A JPEG is measured from its frame header, as a browser lays it out: decoding every sprite
    sheet only to read its size cost about 40 ms a sheet, 2 s of a 46-clip artifacts run. One
    without its end-of-image marker (cut short) is not an image here, where a decoder would
    fill its missing rows with grey and report the full size. Anything else is decoded.
    """
    from heaters_media.embed_preprocess import jpeg_ends, jpeg_size

    size = jpeg_size(data)
    if size is not None:
        return (size[1], size[0]) if jpeg_ends(data) else None

    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return None if image is None else (int(image.shape[1]), int(image.shape[0]))


def artifact_problems(
    db: Database, store: ObjectStore, identifiers: Sequence[str], kind: str
) -> list[str]:
    """Missing artifacts or objects for the clips; for sprites, metadata vs. real image size."""
    problems: list[str] = []
    if not identifiers:
        return problems
    with db.session() as session:
        rows = session.execute(
            select(Clip.identifier, ClipArtifact.storage_key, ClipArtifact.meta)
            .join(ClipArtifact, ClipArtifact.clip_id == Clip.id)
            .where(Clip.identifier.in_(list(identifiers)), ClipArtifact.kind == kind)
        ).all()
    have = {r.identifier for r in rows}
    problems += [f"{i}: no {kind}" for i in identifiers if i not in have]
    for ident, key, meta in rows:
        if not store.exists(key):
            problems.append(f"{ident}: {key} missing from the store")
        elif kind == "sprite_sheet":
            size = _image_size(store.read_bytes(key))
            want = (
                meta.get("cols", 0) * meta.get("tile_width", 0),
                meta.get("rows", 0) * meta.get("tile_height", 0),
            )
            if size != want:
                problems.append(f"{ident}: sprite is {size}, metadata says {want}")
    if kind == "sprite_sheet":
        problems += proxy_problems(db, store, identifiers)
    return problems


def proxy_problems(db: Database, store: ObjectStore, identifiers: Sequence[str]) -> list[str]:
    """A clip not cut yet (HEATERS_CLIPS=proxy) is reviewed from its proxy: one must be in the
    store with as many frames as the clip has."""
    with db.session() as session:
        rows = session.execute(
            select(
                Clip.identifier,
                Clip.start_frame,
                Clip.end_frame,
                ClipArtifact.storage_key,
                ClipArtifact.meta,
            )
            .outerjoin(
                ClipArtifact, and_(ClipArtifact.clip_id == Clip.id, ClipArtifact.kind == "proxy")
            )
            .where(Clip.identifier.in_(list(identifiers)), Clip.storage_key.is_(None))
        ).all()
    problems = []
    for ident, start, end, key, meta in rows:
        if key is None:
            problems.append(f"{ident}: not cut and no review proxy")
        elif not store.exists(key):
            problems.append(f"{ident}: {key} missing from the store")
        elif int(meta.get("frames", -1)) != end - start:
            problems.append(f"{ident}: proxy has {meta.get('frames')} frames, clip {end - start}")
    return problems


def sprite_key_of(db: Database, identifier: str) -> str:
    with db.session() as session:
        key = session.scalar(
            select(ClipArtifact.storage_key)
            .join(Clip, Clip.id == ClipArtifact.clip_id)
            .where(Clip.identifier == identifier, ClipArtifact.kind == "sprite_sheet")
        )
    if key is None:
        raise NotFoundError(f"clip {identifier} has no sprite sheet")
    return key


def embedding_problems(
    db: Database,
    identifiers: Sequence[str],
    model_name: str,
    strategy: str,
    dimension: int,
    tolerance: float = 1e-3,
) -> list[str]:
    """Invariant check: each clip has one vector of ``dimension`` with norm 1 +- tolerance."""
    if not identifiers:
        return []
    with db.session() as session:
        rows = session.execute(
            select(
                Clip.identifier, ClipEmbedding.dimension, func.vector_norm(ClipEmbedding.embedding)
            )
            .join(
                ClipEmbedding,
                and_(
                    ClipEmbedding.clip_id == Clip.id,
                    ClipEmbedding.model_name == model_name,
                    ClipEmbedding.generation_strategy == strategy,
                ),
            )
            .where(Clip.identifier.in_(list(identifiers)))
        ).all()
    problems = [
        f"{i}: no {model_name}/{strategy} vector"
        for i in sorted(set(identifiers) - {r[0] for r in rows})
    ]
    for ident, dim, norm in rows:
        if dim != dimension:
            problems.append(f"{ident}: dimension {dim}, model gives {dimension}")
        if abs(float(norm) - 1.0) > tolerance:
            problems.append(f"{ident}: norm {float(norm):.6f}")
    return problems
