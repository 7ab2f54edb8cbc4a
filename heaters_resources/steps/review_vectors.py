"""Similar clips during review (HEATERS_REVIEW_SIMILAR): vectors from the artifacts' decode.

The review page lists clips like the one on screen before anything is approved, from the
weights-free descriptor's vector of each clip pending review. The artifacts op decodes every
clip's keyframe frames anyway; :class:`heaters_media.frames_consumer.EmbedConsumer` embeds those
frames in that decode (no JPEG written and read back), and this module stores each finished
clip's vector, combined the way the embedding step combines keyframes (``keyframe_multi_avg``
for the multi strategy, ``keyframe_midpoint`` for the midpoint one), so the row is the one an
embedding run would store (cosine >= 0.999: only the JPEG round trip differs). No state
change; best effort throughout: a problem is reported, never fails a clip.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from heaters_media.artifacts import ClipArtifacts
from heaters_media.embed_frames import FrameEmbedder, combine
from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.errors import HeatersStateError
from heaters_resources.search.index import ensure_hnsw_index
from heaters_resources.steps.clips import ClipBatchOutcome, clips_by_identifier
from heaters_resources.steps.common import describe_error

log = logging.getLogger(__name__)

KEY = "review_vectors"


def embed_strategy(keyframe_strategy: str) -> str:
    """The stored strategy a clip's keyframes make: all three averaged, or the midpoint."""
    return "keyframe_multi_avg" if keyframe_strategy == "multi" else "keyframe_midpoint"


def embedder(model: str, out: ClipBatchOutcome) -> FrameEmbedder | None:
    """The model for the pass, or None with the reason in ``out.details``."""
    try:
        return FrameEmbedder(model)
    except Exception as exc:
        out.details[KEY] = {"model": model, "stored": 0, "error": describe_error(exc)}
        return None


def store(
    db: Database,
    model: FrameEmbedder,
    keyframe_strategy: str,
    out: ClipBatchOutcome,
    made: dict[str, ClipArtifacts],
) -> None:
    """Store the vector of each clip in ``out.done`` (now pending review); the count, and the
    clips left without one with the reason, go to ``out.details["review_vectors"]``. Never
    raises: the clips' artifacts are recorded already, and a vector is a convenience."""
    try:
        out.details[KEY] = _stored(db, model, embed_strategy(keyframe_strategy), out.done, made)
    except Exception as exc:
        log.warning("similar clips during review: %s", exc)
        out.details[KEY] = {"model": model.name, "stored": 0, "error": describe_error(exc)}


def _stored(
    db: Database,
    model: FrameEmbedder,
    strategy: str,
    done: list[str],
    made: dict[str, ClipArtifacts],
) -> dict[str, Any]:
    """Store the vectors of the clips ``done``; what was stored and what is missing."""
    vectors: dict[int, list[float]] = {}
    missing: dict[str, str] = {}
    ids = {c.identifier: c.id for c in clips_by_identifier(db, done)} if done else {}
    for ident in done:
        frames = made[ident].embedding
        if frames is None or frames.error is not None or not frames.vectors:
            missing[ident] = frames.error if frames and frames.error else "no frames embedded"
            continue
        vectors[ids[ident]] = combine(frames.array(), strategy)[0].tolist()
    keep = partial(
        states.store_embeddings,
        db,
        model_name=model.name,
        generation_strategy=strategy,
        overwrite=True,
    )
    names = {cid: ident for ident, cid in ids.items()}
    stored = 0
    try:
        if vectors:
            ensure_hnsw_index(db, model.name, model.dimension)
            stored = keep(vectors)
    except HeatersStateError:  # a clip locked by a reviewer's action: the others one by one
        for cid, vec in vectors.items():
            try:
                stored += keep({cid: vec})
            except Exception as exc:
                missing[names[cid]] = describe_error(exc)
    return {"model": model.name, "strategy": strategy, "stored": stored, "missing": missing}
