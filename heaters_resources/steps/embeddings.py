"""The embedding step: clips' keyframes in, one unit vector per (clip, model, strategy) stored.

Why one batched step rather than one call per clip: a model is loaded once per process and
images of many clips go through it together (``batch_size`` images per forward pass), which is
what makes CPU embedding usable and a GPU worth having.

Discipline (as every step, :mod:`heaters_resources.steps`): clips move
``approved -> embedding`` first, inputs are fetched, vectors computed, and
``embedding -> embedded`` stores every vector in one transaction. With ``before_review`` (the
"similar clips during review" configuration) clips in ``pending_review`` get their vector stored
without a state change. Failures:

- a model problem (unknown name, weights not found offline, torch missing, a dimension that does
  not match the column's index for that model) fails every started clip (``embedding_failed``
  with the reason) and is re-raised: nothing is stored;
- an input problem (an image that does not decode, keyframes missing) fails only that clip.

A clip not cut yet (HEATERS_CLIPS=proxy) is cut first: approval is when its file is made.

Defaults: HEATERS_EMBEDDING_MODEL (``heaters/pixels-v1``: works without weights) and
HEATERS_EMBEDDING_STRATEGY (``keyframe_multi_avg``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, exists, select

from heaters_media.embed import embed_images
from heaters_media.embed_models import resolve_model
from heaters_media.progress import ProgressFn
from heaters_resources import faults, states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact, ClipEmbedding
from heaters_resources.errors import HeatersStateError
from heaters_resources.search.index import ensure_hnsw_index
from heaters_resources.search.space import (
    check_dimension,
    check_strategy,
    default_model,
    default_strategy,
)
from heaters_resources.steps.clips import ClipBatchOutcome, clips_by_identifier
from heaters_resources.steps.common import describe_error, fetch, scratch_dir, start_clips
from heaters_resources.steps.cutting import cut_clip_files
from heaters_resources.store.objects import ObjectStore

log = logging.getLogger(__name__)

#: Which keyframes each strategy reads: (keyframe strategies, tag or None for all of them).
#: The midpoint is the 50 % keyframe of either keyframe strategy; multi_avg averages 25/50/75.
KEYFRAMES_FOR: dict[str, tuple[tuple[str, ...], str | None]] = {
    "keyframe_midpoint": (("midpoint", "multi"), "50"),
    "keyframe_multi_avg": (("multi",), None),
}
#: Clips that should carry the default embedding (the backfill's scope).
EMBEDDABLE_STATES = ("approved", "embedded")


# ------------------------------------------------------------------------------- the step


@dataclass
class _Item:
    clip: Clip
    keys: list[str]
    store_only: bool  # before_review: no state change


def _keyframe_keys(db: Database, clip_ids: Sequence[int], strategy: str) -> dict[int, list[str]]:
    """Storage keys of the keyframes ``strategy`` reads, per clip, in time order."""
    kf_strategies, tag = KEYFRAMES_FOR[strategy]
    with db.session() as session:
        rows = session.execute(
            select(
                ClipArtifact.clip_id,
                ClipArtifact.strategy,
                ClipArtifact.tag,
                ClipArtifact.storage_key,
            ).where(
                ClipArtifact.clip_id.in_(list(clip_ids)),
                ClipArtifact.kind == "keyframe",
                ClipArtifact.strategy.in_(kf_strategies),
            )
        ).all()
    found: dict[int, dict[str, list[tuple[int, str]]]] = {}
    for cid, kf_strategy, kf_tag, key in rows:
        if tag is None or kf_tag == tag:
            pct = int(kf_tag) if kf_tag.isdigit() else 0
            found.setdefault(cid, {}).setdefault(kf_strategy, []).append((pct, key))
    out: dict[int, list[str]] = {}
    for cid, by_strategy in found.items():
        first = next(s for s in kf_strategies if s in by_strategy)  # preferred strategy
        out[cid] = [k for _, k in sorted(by_strategy[first])][: 1 if tag else None]
    return out


def _have(db: Database, clip_ids: Sequence[int], model: str, strategy: str) -> set[int]:
    with db.session() as session:
        return set(
            session.scalars(
                select(ClipEmbedding.clip_id).where(
                    ClipEmbedding.clip_id.in_(list(clip_ids)),
                    ClipEmbedding.model_name == model,
                    ClipEmbedding.generation_strategy == strategy,
                )
            )
        )


def _select(
    db: Database,
    clips: Sequence[Clip],
    model: str,
    strategy: str,
    overwrite: bool,
    before_review: bool,
    out: ClipBatchOutcome,
) -> tuple[list[Clip], list[Clip]]:
    """Split clips into (to start: state change, store only: before review); skip the rest."""
    have = _have(db, [c.id for c in clips], model, strategy)
    start, store_only = [], []
    for clip in clips:
        done = clip.id in have and not overwrite
        retry = clip.state in ("approved", "embedding_failed")
        if retry or (clip.state == "embedded" and not done):
            start.append(clip)
        elif clip.state == "pending_review" and before_review and not done:
            store_only.append(clip)
        else:
            out.skipped[clip.identifier] = (
                f"already has {model}/{strategy}" if done else f"state {clip.state}"
            )
    return start, store_only


def _start(db: Database, clips: list[Clip], out: ClipBatchOutcome) -> list[Clip]:
    """approved/embedding_failed/embedded -> embedding; one transaction, per clip on conflict."""
    return start_clips(
        clips,
        partial(states.start_embedding_many, db, overwrite=True),
        partial(states.start_embedding, db, overwrite=True),
        out.skipped,
    )


def _fail(db: Database, item: _Item, reason: str, out: ClipBatchOutcome) -> None:
    out.failed[item.clip.identifier] = reason
    if item.store_only:
        return
    try:
        states.mark_failed(db, "clip", item.clip.id, "embedding", reason)
    except HeatersStateError as exc:
        log.warning("could not mark clip %s failed: %s", item.clip.id, exc)


def _embed_all(
    items: list[_Item],
    local: dict[str, Path],
    *,
    model: str,
    model_path: str | None,
    offline: bool,
    device: str,
    batch_size: int,
    fail: Callable[[_Item, str], None],
    stats: dict[str, float],
) -> dict[int, np.ndarray]:
    """Per-image unit vectors of every clip's keyframes, in one call: one feed for the whole
    run, so decoding overlaps the model from the first batch to the last. An image that does
    not decode fails its clip only (the other images' vectors do not depend on it). Returns
    clip id -> (n_images, dim) array."""
    pairs = [(item, str(local[key])) for item in items for key in item.keys]
    if not pairs:
        return {}
    result = embed_images(
        [path for _, path in pairs],
        model=model,
        strategy="keyframe_multi",
        device=device,
        batch_size=batch_size,
        offline=offline,
        model_path=model_path,
        on_error="skip",
    )
    stats["dimension"] = result.dimension
    stats["seconds"] += result.seconds
    stats["load_seconds"] += result.load_seconds
    stats["images"] += len(result.images)
    by_path = dict(zip(result.images, result.array(), strict=True))
    vectors: dict[int, np.ndarray] = {}
    for item in items:
        paths = [str(local[key]) for key in item.keys]
        bad = next((p for p in paths if p in result.failed), None)
        if bad is not None:
            fail(item, result.failed[bad])
        else:
            vectors[item.clip.id] = np.stack([by_path[p] for p in paths])
    return vectors


def _aggregate(per_image: np.ndarray, strategy: str) -> np.ndarray:
    """keyframe_midpoint: the one vector; multi_avg: mean of unit vectors, re-normalized."""
    vec = per_image.mean(axis=0) if strategy == "keyframe_multi_avg" else per_image[0]
    return (vec / max(float(np.linalg.norm(vec)), 1e-12)).astype(np.float32)


def _cut_uncut(
    db: Database,
    store: ObjectStore,
    items: list[_Item],
    fail: Callable[[_Item, str], None],
    out: ClipBatchOutcome,
    workdir: Path | None,
) -> None:
    """Approval is when a clip not cut yet (HEATERS_CLIPS=proxy) gets its full-quality file:
    its embedding run cuts it first (`steps.cutting`). A failed cut fails the clip's embedding
    with the reason, so the usual retry of `embedding_failed` clips cuts it again."""
    uncut = [it for it in items if not it.store_only and not it.clip.storage_key]
    if not uncut:
        return
    cut = cut_clip_files(db, store, [it.clip for it in uncut], workdir=workdir)
    for it in uncut:
        if it.clip.id in cut.failed:
            fail(it, cut.failed[it.clip.id])
    out.details.update(clips_cut=len(cut.cut), cut_seconds=round(cut.seconds, 3))


def embed_clips(
    db: Database,
    store: ObjectStore,
    identifiers: Sequence[str],
    *,
    model: str | None = None,
    strategy: str | None = None,
    model_path: str | None = None,
    offline: bool | None = None,
    overwrite: bool = False,
    before_review: bool = False,
    batch_size: int = 32,
    device: str = "auto",
    workdir: Path | None = None,
    progress: ProgressFn | None = None,
) -> ClipBatchOutcome:
    """Embed the clips' keyframes with ``model``/``strategy`` and store one vector per clip.

    ``details`` of the outcome: model, strategy, dimension, count, images, images_per_second
    (images embedded / ``embed_seconds``: the whole embedding through the feed, decode and
    preprocessing included; not fetching keyframes, not loading the model), load_seconds.
    Raises the model error after failing every started clip.
    """
    t0 = time.perf_counter()
    model = model or default_model()
    strategy = strategy or default_strategy()
    offline = bool(offline)
    out = ClipBatchOutcome("embedding", details={"model": model, "strategy": strategy})
    clips = clips_by_identifier(db, identifiers)
    start, store_only = _select(db, clips, model, strategy, overwrite, before_review, out)
    started = _start(db, start, out)
    items = [_Item(c, [], False) for c in started] + [_Item(c, [], True) for c in store_only]
    if not items:
        out.seconds = time.perf_counter() - t0
        return out

    def fail(item: _Item, reason: str) -> None:
        _fail(db, item, reason, out)

    stats = {"dimension": 0.0, "seconds": 0.0, "load_seconds": 0.0, "images": 0.0}
    try:
        check_strategy(strategy)
        spec = resolve_model(model, model_path)
        if progress:
            progress(0.05, f"{len(items)} clips, model {spec.name} ({spec.family})")
        _cut_uncut(db, store, items, fail, out, workdir)
        keyframes = _keyframe_keys(db, [it.clip.id for it in items], strategy)
        with scratch_dir(workdir) as tmp:
            ready = []
            for it in items:
                if it.clip.identifier in out.failed:
                    continue
                it.keys = keyframes.get(it.clip.id, [])
                if not it.keys:
                    kf = "/".join(KEYFRAMES_FOR[strategy][0])
                    fail(
                        it,
                        f"missing_keyframes: clip {it.clip.identifier} has no {kf} "
                        "keyframes; run the keyframes step first",
                    )
                    continue
                try:
                    local = {k: fetch(store, k, tmp) for k in it.keys}
                except Exception as exc:  # a missing object fails only this clip
                    fail(it, describe_error(exc))
                    continue
                ready.append((it, local))
            paths = {k: p for _, local in ready for k, p in local.items()}
            per_image = _embed_all(
                [it for it, _ in ready],
                paths,
                model=model,
                model_path=model_path,
                offline=offline,
                device=device,
                batch_size=batch_size,
                fail=fail,
                stats=stats,
            )
        dimension = int(stats["dimension"])
        vectors = {cid: _aggregate(v, strategy) for cid, v in per_image.items()}
        if vectors:
            check_dimension(db, model, dimension)
            ensure_hnsw_index(db, model, dimension)
    except Exception as exc:
        reason = describe_error(exc)
        for it in items:
            if it.clip.identifier not in out.failed:
                fail(it, reason)
        raise
    by_id = {it.clip.id: it for it in items}
    moved = {cid: v.tolist() for cid, v in vectors.items() if not by_id[cid].store_only}
    faults.point("embedding:before-commit")
    if moved:
        states.complete_embedding_many(db, moved, model_name=model, generation_strategy=strategy)
    kept = {cid: v.tolist() for cid, v in vectors.items() if by_id[cid].store_only}
    keep = partial(
        states.store_embeddings, db, model_name=model, generation_strategy=strategy, overwrite=True
    )
    try:
        keep(kept)
    except HeatersStateError:  # a clip locked by a reviewer's action: the others one by one
        for cid, vec in kept.items():
            try:
                keep({cid: vec})
            except HeatersStateError as exc:
                fail(by_id[cid], describe_error(exc))
    done = (by_id[cid].clip.identifier for cid in vectors)
    out.done = [ident for ident in done if ident not in out.failed]
    out.seconds = time.perf_counter() - t0
    embed_seconds = stats["seconds"]
    out.details.update(
        dimension=dimension,
        count=len(vectors),
        images=int(stats["images"]),
        images_per_second=round(stats["images"] / embed_seconds, 2) if embed_seconds else 0.0,
        embed_seconds=round(embed_seconds, 4),
        load_seconds=round(stats["load_seconds"], 4),
        clips=[c.identifier for c in clips],
    )
    if progress:
        progress(1.0, f"{len(vectors)} embedded, {len(out.failed)} failed")
    return out


# ----------------------------------------------------------------------- missing / backfill


def _no_vector(model: str, strategy: str) -> ColumnElement[bool]:
    """Clips without a (model, strategy) vector, as NOT EXISTS: an anti-join, linear in the
    library. `id NOT IN (subquery)` is hashed only while the embedded ids fit in work_mem
    (about 100,000 at the default 4 MB); past that PostgreSQL re-scans the subquery for every
    clip, a plan estimated at hours for a million clips."""
    return ~exists().where(
        ClipEmbedding.clip_id == Clip.id,
        ClipEmbedding.model_name == model,
        ClipEmbedding.generation_strategy == strategy,
    )


def clips_missing_embedding(
    db: Database,
    model: str | None = None,
    strategy: str | None = None,
    clip_states: Sequence[str] = EMBEDDABLE_STATES,
    limit: int | None = None,
) -> list[tuple[int, str]]:
    """(id, identifier) of live clips in ``clip_states`` without a (model, strategy) vector,
    oldest first: what the "embed only missing" backfill works on."""
    model, strategy = model or default_model(), strategy or default_strategy()
    stmt = (
        select(Clip.id, Clip.identifier)
        .where(
            Clip.state.in_(list(clip_states)),
            Clip.superseded_at.is_(None),
            _no_vector(model, strategy),
        )
        .order_by(Clip.id)
    )
    if limit:
        stmt = stmt.limit(limit)
    with db.session() as session:
        return [(int(i), str(k)) for i, k in session.execute(stmt)]


def videos_missing_embedding(
    db: Database,
    model: str | None = None,
    strategy: str | None = None,
    clip_states: Sequence[str] = EMBEDDABLE_STATES,
) -> list[int]:
    """Ids of the videos that have a live clip in ``clip_states`` without a (model, strategy)
    vector: the partitions an "embed only missing" backfill runs over."""
    model, strategy = model or default_model(), strategy or default_strategy()
    stmt = (
        select(Clip.source_video_id)
        .where(
            Clip.state.in_(list(clip_states)),
            Clip.superseded_at.is_(None),
            _no_vector(model, strategy),
        )
        .distinct()
        .order_by(Clip.source_video_id)
    )
    with db.session() as session:
        return [int(v) for v in session.scalars(stmt)]


def embed_missing(
    db: Database,
    store: ObjectStore,
    *,
    model: str | None = None,
    strategy: str | None = None,
    batch: int = 500,
    **options: Any,
) -> ClipBatchOutcome:
    """Without Dagster: embed every clip missing (model, strategy), ``batch`` clips per call."""
    model, strategy = model or default_model(), strategy or default_strategy()
    total = ClipBatchOutcome("embedding", details={"model": model, "strategy": strategy})
    missing = [ident for _, ident in clips_missing_embedding(db, model, strategy)]
    for i in range(0, len(missing), batch):
        out = embed_clips(
            db, store, missing[i : i + batch], model=model, strategy=strategy, **options
        )
        total.done += out.done
        total.skipped.update(out.skipped)
        total.failed.update(out.failed)
        total.seconds += out.seconds
        total.details.update({k: v for k, v in out.details.items() if k != "clips"})
    total.details["count"] = len(total.done)
    return total
