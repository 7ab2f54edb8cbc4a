"""Similarity over stored clip embeddings: similar clips, text -> clip search, near-duplicates.

Why here (heaters_resources) and not in the CLI: the review page calls the same functions.
Every query works inside one (model, strategy) space and casts ``embedding`` to
``vector(<dim>)`` so Postgres can use that model's partial HNSW cosine index
(:mod:`heaters_resources.search.index`); near-duplicates, a question about every clip at
once, reads the space in one pass instead (:mod:`heaters_resources.search.duplicates`).
Superseded clips (merged/split away) are never returned.
Distances are cosine distances (0 = same direction, 2 = opposite); similarity = 1 - distance.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from heaters_media.errors import InvalidInputError
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipEmbedding
from heaters_resources.errors import NotFoundError
from heaters_resources.search.index import SimilarClip, nearest_clips
from heaters_resources.search.space import (
    DESCRIPTOR_MODEL,
    EmbeddingDimensionError,
    default_model,
    default_strategy,
)

MAX_BIGINT = 2**63 - 1


@dataclass(frozen=True)
class DuplicatePair:
    a: SimilarClip
    b: SimilarClip

    @property
    def distance(self) -> float:
        return self.a.distance

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a.clip_id,
            "a_identifier": self.a.identifier,
            "b": self.b.clip_id,
            "b_identifier": self.b.identifier,
            "same_video": self.a.source_video_id == self.b.source_video_id,
            "distance": self.distance,
        }


def resolve_clip(db: Database, clip: int | str) -> Clip:
    """A clip by id or identifier (``<video>_<start>_<end>``).

    An id is ASCII digits within Postgres ``bigint`` (``str.isdigit`` also accepts ``²``, and
    a larger number would fail in the driver): anything else is looked up as an identifier,
    where it simply matches nothing."""
    text = str(clip)
    with db.session() as session:
        if isinstance(clip, int) or (text.isascii() and text.isdigit()):
            found = session.get(Clip, int(clip)) if 0 < int(clip) <= MAX_BIGINT else None
        else:
            found = session.scalar(select(Clip).where(Clip.identifier == text))
    if found is None:
        raise NotFoundError(f"clip not found: {clip}")
    return found


def space_dimension(db: Database, model_name: str, strategy: str | None = None) -> int | None:
    """The dimension of a model's stored vectors (None when it has none); several: an error."""
    stmt = select(ClipEmbedding.dimension).where(ClipEmbedding.model_name == model_name)
    if strategy:
        stmt = stmt.where(ClipEmbedding.generation_strategy == strategy)
    with db.session() as session:
        dims = list(session.scalars(stmt.distinct()))
    if len(dims) > 1:
        raise EmbeddingDimensionError(
            f"model {model_name!r} has vectors of several dimensions {sorted(dims)}",
            model=model_name,
        )
    return int(dims[0]) if dims else None


def clip_vector(db: Database, clip_id: int, model_name: str, strategy: str) -> list[float]:
    with db.session() as session:
        vec = session.scalar(
            select(ClipEmbedding.embedding).where(
                ClipEmbedding.clip_id == clip_id,
                ClipEmbedding.model_name == model_name,
                ClipEmbedding.generation_strategy == strategy,
            )
        )
        state = session.scalar(select(Clip.state).where(Clip.id == clip_id)) if vec is None else ""
    if vec is None:
        raise NotFoundError(
            f"clip {clip_id} has no {model_name}/{strategy} embedding; "
            + _hint(state or "", model_name, strategy)
        )
    return [float(x) for x in vec]


def _hint(state: str, model_name: str, strategy: str) -> str:
    """What gives a clip in ``state`` a vector (embed-missing only embeds approved clips)."""
    if state in ("approved", "embedded", "embedding_failed"):
        return f"heaters embed-missing --model {model_name} --strategy {strategy} embeds it"
    if state == "pending_review" and model_name == DESCRIPTOR_MODEL:
        return (
            "clips get the descriptor when they become ready for review (HEATERS_REVIEW_SIMILAR); "
            "re-run its video's keyframes with overwrite, or approve it"
        )
    return f"it is {state or 'gone'}: only approved clips are embedded with {model_name}"


def similar_clips(
    db: Database,
    clip: int | str,
    k: int = 10,
    model_name: str | None = None,
    strategy: str | None = None,
    exclude_same_video: bool = False,
    clip_states: Sequence[str] | None = None,
) -> list[SimilarClip]:
    """The ``k`` clips nearest to ``clip`` (id or identifier), never the clip itself; with
    ``exclude_same_video`` none of its own source video either (e.g. to find re-uploads)."""
    model_name, strategy = model_name or default_model(), strategy or default_strategy()
    target = resolve_clip(db, clip)
    vector = clip_vector(db, target.id, model_name, strategy)
    return nearest_clips(
        db,
        vector,
        model_name=model_name,
        generation_strategy=strategy,
        limit=k,
        states=clip_states,
        exclude_clip_ids=[target.id],
        exclude_video=target.source_video_id if exclude_same_video else None,
    )


def search_text(
    db: Database,
    query: str,
    k: int = 10,
    model_name: str | None = None,
    strategy: str | None = None,
    *,
    model_path: str | os.PathLike[str] | None = None,
    offline: bool = False,
    device: str = "auto",
    clip_states: Sequence[str] | None = None,
) -> list[SimilarClip]:
    """Clips whose image vectors are nearest to a CLIP text vector of ``query``.

    Only CLIP models have a text side: any other model raises InvalidInputError saying so.
    ``model_name`` must be the name the vectors were stored under (``model_path`` for a local
    folder of its weights).
    """
    model_name, strategy = model_name or default_model(), strategy or default_strategy()
    if not query.strip():
        raise InvalidInputError("empty search text")
    from heaters_media.embed import embed_text  # loads the model code only when searching

    result = embed_text(
        [query], model=model_name, model_path=model_path, offline=offline, device=device
    )
    stored = space_dimension(db, model_name, strategy)
    if stored is not None and stored != result.dimension:
        raise EmbeddingDimensionError(
            f"text vectors of {model_name!r} are {result.dimension}-d, stored image vectors "
            f"{stored}-d",
            model=model_name,
        )
    return nearest_clips(
        db,
        result.vectors[0],
        model_name=model_name,
        generation_strategy=strategy,
        limit=k,
        states=clip_states,
    )


def near_duplicates(
    db: Database,
    threshold: float = 0.05,
    model_name: str | None = None,
    strategy: str | None = None,
    *,
    per_clip: int = 10,
    limit: int = 10_000,
    engine: str = "auto",
    index: str = "auto",
    since_clip_id: int | None = None,
    clip_ids: Sequence[int] | None = None,
) -> list[DuplicatePair]:
    """Pairs of live clips whose cosine distance is below ``threshold``, closest first.

    One set-based pass (:func:`heaters_resources.search.duplicates.find_near_duplicates`, which
    also reports the engine, timings and recall): every clip's ``per_clip`` nearest
    neighbours from a k-nearest-neighbour graph built in batch, instead of one HNSW lookup per
    clip. ``since_clip_id`` / ``clip_ids``: only pairs involving those (new) clips.
    """
    from heaters_resources.search.duplicates import find_near_duplicates  # imports this module

    return find_near_duplicates(
        db,
        threshold,
        model_name,
        strategy,
        per_clip=per_clip,
        limit=limit,
        engine=engine,
        index=index,
        since_clip_id=since_clip_id,
        clip_ids=clip_ids,
    ).pairs
